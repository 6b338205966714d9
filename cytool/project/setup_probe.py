"""Run a project's setup.py with `setup()` and `cythonize()` intercepted, and write the
extensions it declares as JSON. Executed as a script in a subprocess by
cytool.project.setup_py (`python setup_probe.py SETUP_DIR OUT.json`); it builds nothing
and imports nothing of cytool, only what setup.py itself imports.

Output: {"extensions": [{name, sources, include_dirs, library_dirs, runtime_library_dirs,
libraries, define_macros, undef_macros, language, extra_objects, extra_compile_args,
extra_link_args, cython: {directives, include_path, language}}], "setup_called": bool}.
"""
import glob
import json
import os
import runpy
import sys

PACKAGE_MARKERS = ("__init__.py", "__init__.pyx", "__init__.pxd")


def _module_name_for(path):
    """Dotted module name of a source by its package folders (as Cython does)."""
    folder, base = os.path.split(os.path.abspath(path))
    parts = [os.path.splitext(base)[0]]
    while any(os.path.isfile(os.path.join(folder, m)) for m in PACKAGE_MARKERS):
        folder, name = os.path.split(folder)
        parts.insert(0, name)
    return ".".join(parts)


def _strings(value):
    if value is None:
        return []
    if isinstance(value, (str, bytes, os.PathLike)):
        value = [value]
    return [os.fsdecode(v) if isinstance(v, (bytes, os.PathLike)) else str(v) for v in value]


def _macros(value):
    result = []
    for item in value or []:
        if isinstance(item, (tuple, list)):
            result.append([str(item[0]), None if len(item) < 2 or item[1] is None else str(item[1])])
        else:
            result.append([str(item), None])
    return result


def _describe(ext, cython_options):
    return {
        "name": str(getattr(ext, "name", "")),
        "sources": _strings(getattr(ext, "sources", [])),
        "include_dirs": _strings(getattr(ext, "include_dirs", [])),
        "library_dirs": _strings(getattr(ext, "library_dirs", [])),
        "runtime_library_dirs": _strings(getattr(ext, "runtime_library_dirs", [])),
        "libraries": _strings(getattr(ext, "libraries", [])),
        "define_macros": _macros(getattr(ext, "define_macros", [])),
        "undef_macros": _strings(getattr(ext, "undef_macros", [])),
        "language": getattr(ext, "language", None),
        "extra_objects": _strings(getattr(ext, "extra_objects", [])),
        "extra_compile_args": _strings(getattr(ext, "extra_compile_args", [])),
        "extra_link_args": _strings(getattr(ext, "extra_link_args", [])),
        "cython": cython_options,
    }


class _Pattern:
    """A module given to cythonize() as a glob string: stands for one extension per file."""

    def __init__(self, path):
        self.name = _module_name_for(path)
        self.sources = [path]


def _directives_text(values):
    out = {}
    for key, value in dict(values or {}).items():
        out[str(key)] = str(value) if not isinstance(value, bool) else ("True" if value else "False")
    return out


def _directive_defaults():
    try:
        from Cython.Compiler import Options
    except ImportError:
        return {}
    return _directives_text(Options.get_directive_defaults())


def main():
    setup_dir, out_path = sys.argv[1], sys.argv[2]
    os.chdir(setup_dir)
    sys.path.insert(0, setup_dir)
    found = {"extensions": [], "setup_called": False}
    cythonized = {}  # id(extension) -> the cythonize() options it went through

    def fake_cythonize(module_list, exclude=None, nthreads=0, aliases=None, quiet=False, force=None,
                       language=None, exclude_failures=False, show_all_warnings=False, **options):
        if not isinstance(module_list, (list, tuple)):
            module_list = [module_list]
        cython_options = {
            "directives": _directives_text(options.get("compiler_directives")),
            "include_path": _strings(options.get("include_path")),
            "language": language,
        }
        excluded = set()
        for pattern in _strings(exclude):
            excluded.update(os.path.normpath(p) for p in glob.glob(pattern, recursive=True))
        result = []
        for item in module_list:
            if isinstance(item, (str, os.PathLike)):
                for path in sorted(glob.glob(os.fspath(item), recursive=True)):
                    if os.path.normpath(path) not in excluded:
                        pattern = _Pattern(path)
                        cythonized[id(pattern)] = cython_options
                        result.append(pattern)
            else:
                cythonized[id(item)] = cython_options
                result.append(item)
        return result

    def fake_setup(*args, **attrs):
        found["setup_called"] = True
        for ext in attrs.get("ext_modules") or []:
            found["extensions"].append(_describe(ext, cythonized.get(id(ext))))
        return None

    try:
        import setuptools

        setuptools.setup = fake_setup
    except ImportError:
        pass
    try:
        import distutils.core

        distutils.core.setup = fake_setup
    except ImportError:
        pass
    try:
        import Cython.Build
        import Cython.Build.Dependencies

        Cython.Build.cythonize = fake_cythonize
        Cython.Build.Dependencies.cythonize = fake_cythonize
    except ImportError:
        pass

    defaults_before = _directive_defaults()
    sys.argv = ["setup.py", "build_ext", "--inplace"]
    try:
        runpy.run_path("setup.py", run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (None, 0) and not found["setup_called"]:
            raise
    # Some projects (cytoolz) change Cython's global directive defaults instead of passing
    # compiler_directives: those apply to every extension it builds.
    defaults_after = _directive_defaults()
    changed = {k: v for k, v in defaults_after.items() if defaults_before.get(k) != v}
    if changed:
        for ext in found["extensions"]:
            cython = ext["cython"] or {"directives": {}, "include_path": [], "language": None}
            cython["directives"] = {**changed, **cython["directives"]}
            ext["cython"] = cython
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump(found, handle)


if __name__ == "__main__":
    main()
