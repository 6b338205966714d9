# cython: language_level=3
# A Python-call-heavy workload for bench/bench_pyframes.py: Cython calls Python functions
# (bench/pyframes_calls.py) N times, each recursing DEPTH Python calls deep and building
# strings and lists; every 4th call allocates with malloc (a big string). The depth
# varies by call (DEPTH to DEPTH + 3), so there are several stacks.
# usage: cytool run bench/pyframes_workload.pyx -- N [DEPTH]
import importlib.util
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("pyframes_calls", os.path.join(_here, "pyframes_calls.py"))
calls = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(calls)


cdef long churn(long n, int depth):
    cdef long i, total = 0
    recurse = calls.recurse
    for i in range(n):
        total += len(recurse(depth + i % 4, i))
    return total


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    depth = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    print(churn(n, depth))


if __name__ == "__main__":
    main()
