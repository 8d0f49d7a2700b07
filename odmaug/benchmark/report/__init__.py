"""The benchmark report (not a classifier run's report, :mod:`odmaug.classify.report`): terminal
tables, figures, ``report.md`` and a self-contained ``report.html``, all from the results dict.

Modules: :mod:`~odmaug.benchmark.report.tables` (rows and terminal tables),
:mod:`~odmaug.benchmark.report.figures` (PNG files), :mod:`~odmaug.benchmark.report.blocks` (the
body) and :mod:`~odmaug.benchmark.report.document` (Markdown and HTML).
"""

from odmaug.benchmark.report.document import write_benchmark_report
from odmaug.benchmark.report.tables import arm_table, generator_table

__all__ = ["arm_table", "generator_table", "write_benchmark_report"]
