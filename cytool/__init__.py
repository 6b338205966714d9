"""cytool: build, run, profile and debug Cython modules on their .pyx lines."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `cytool.Tracker` without importing the tracer on every `cytool` start (PEP 562).
    if name == "Tracker":
        from cytool.tracker import Tracker

        return Tracker
    raise AttributeError(f"module 'cytool' has no attribute {name!r}")
