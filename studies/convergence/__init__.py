"""The convergence study behind ``studies/convergence.py`` (see its docstring); split into parts
that each stay small: options, launch (CLI subprocesses, probes), probes (equal wall time), judge
(the fixed classifier and SWD references), sampling, diagnose (eps norms), evaluate, report, study."""
