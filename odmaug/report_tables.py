"""The old name of :mod:`odmaug.benchmark.report.tables`, kept while callers move to the new one.

The module replaces itself by the new one, so an import by either name gets one module object
(a test that patches a function here patches the one the report calls).
"""

import sys

from odmaug.benchmark.report import tables as _tables

sys.modules[__name__] = _tables
