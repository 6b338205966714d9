"""cytool's gdb extension: cy-* commands that speak .pyx lines and Cython names.

Load it with `source /path/to/cytool_gdb.py` (cytool debug does). It runs in gdb's
embedded Python, which need not be the Python being debugged: it uses only the
standard library and reads Cython's debug XML itself (see cytool_gdb_debuginfo).
`help cy-break` and friends describe each command; `cy-load DIR` reads a build's
debug information before the program runs.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import cytool_gdb_commands  # noqa: E402

cytool_gdb_commands.register()
