"""cytool: build, run, profile and debug Cython modules on their .pyx lines.

Public entry points (imported lazily, so `import cytool` stays cheap):

    cytool.Tracker(path)          trace this process's allocations into a capture
    cytool.install() / uninstall()  the import hook: `import mod` builds mod.pyx
    %load_ext cytool              the IPython/Jupyter magics (%%cytool, %cytool_profile)
    cytool.breakpoint(when=True)  stop here in cytool's debugger (PYTHONBREAKPOINT=cytool.breakpoint)
"""

__version__ = "0.1.0"

_LAZY = {
    "Tracker": ("cytool.tracker", "Tracker"),
    "install": ("cytool.importer", "install"),
    "uninstall": ("cytool.importer", "uninstall"),
    "breakpoint": ("cytool.inline_break", "breakpoint"),
}


def __getattr__(name: str):
    # PEP 562: the tracer and the import machinery load only when asked for.
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'cytool' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


def load_ipython_extension(ipython) -> None:  # type: ignore[no-untyped-def]
    """`%load_ext cytool`: registers %%cytool, %cytool_profile (cytool.notebook.magics)."""
    from cytool.notebook.magics import load

    load(ipython)


def unload_ipython_extension(ipython) -> None:  # type: ignore[no-untyped-def]
    from cytool.notebook.magics import unload

    unload(ipython)
