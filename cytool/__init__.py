"""cytool: build, run, profile and debug Cython modules on their .pyx lines."""

__version__ = "0.1.0"
