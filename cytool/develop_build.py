"""Run a project's own `setup.py build_ext --inplace` with debug information forced on,
without editing any of its files. Executed as a script in a subprocess by
cytool.develop (`python develop_build.py SETUP_DIR OUT.json DEBUG_DIR OPT JOBS CYTOOL_ROOT`);
it imports nothing of cytool.

What it changes, in this process only:
- Cython's default compilation options: `emit_linenums` (`--line-directives`: the C
  carries `#line N "pkg/mod.pyx"`) and `gdb_debug` with `output_dir` = DEBUG_DIR (the
  debug XML goes there, not into the project); CYTHON_FORCE_REGEN=1 so that C files
  generated earlier without them are generated again;
- every Extension: a C source generated from a `.pyx` beside it (msgpack ships
  `_cmsgpack.c`) is replaced by that `.pyx`, so Cython runs; `-g -fno-omit-frame-pointer`
  (and `-O<OPT>`) are appended to its compiler arguments, so they win over the project's,
  and appended again when it is built if the project's build_ext set them anew;
- Cython's include path gets CYTOOL_ROOT last, so that `from cytool.debug cimport
  breakpoint` is found as in cytool's own builds;
- build_ext records each extension it builds (name, output file, sources) into OUT.json;
- a Cython or compiler error ends the build with status 1 and the tools' own messages,
  without this script's traceback (cytool.develop quotes the first error).
"""
import json
import os
import runpy
import sys

C_SUFFIXES = (".c", ".cpp", ".cc", ".cxx")


def main():
    setup_dir, out_path, debug_dir, opt_level, jobs, cytool_root = sys.argv[1:7]
    os.chdir(setup_dir)
    sys.path.insert(0, setup_dir)
    os.environ["CYTHON_FORCE_REGEN"] = "1"
    built = []
    cythonized = set()

    from Cython.Compiler import Options

    Options.default_options["emit_linenums"] = True
    Options.default_options["gdb_debug"] = True
    Options.default_options["output_dir"] = debug_dir

    import Cython.Build
    import Cython.Build.Dependencies

    real_cythonize = Cython.Build.Dependencies.cythonize

    def cythonize(*args, **kwargs):
        # explicit options win over the defaults (Cython's build_ext passes emit_linenums=False)
        kwargs.update(emit_linenums=True, gdb_debug=True, output_dir=debug_dir, force=True)
        kwargs["include_path"] = list(kwargs.get("include_path") or []) + [cytool_root]
        result = real_cythonize(*args, **kwargs)
        for ext in result:
            cythonized.add(id(ext))
        return result

    Cython.Build.cythonize = cythonize
    Cython.Build.Dependencies.cythonize = cythonize

    flags = ["-g", "-fno-omit-frame-pointer"] + ([f"-O{opt_level}"] if opt_level != "project" else [])

    def prepare(ext):
        if getattr(ext, "_cytool_prepared", False):
            return
        ext._cytool_prepared = True
        if id(ext) not in cythonized:
            sources = []
            for source in ext.sources:
                stem, suffix = os.path.splitext(source)
                if suffix in C_SUFFIXES and os.path.isfile(stem + ".pyx"):
                    source = stem + ".pyx"
                sources.append(source)
            ext.sources = sources
        # what the module is built from, before Cython's build_ext replaces .pyx by .c (and
        # after cythonize() in setup.py did): a C file generated from a .pyx names the .pyx
        ext._cytool_sources = [
            os.path.splitext(s)[0] + ".pyx"
            if os.path.splitext(s)[1] in C_SUFFIXES and os.path.isfile(os.path.splitext(s)[0] + ".pyx") else s
            for s in ext.sources
        ]
        ext.extra_compile_args = list(ext.extra_compile_args or []) + flags

    import setuptools

    real_setup = setuptools.setup

    def setup(*args, **attrs):
        for ext in attrs.get("ext_modules") or []:
            prepare(ext)
        return real_setup(*args, **attrs)

    setuptools.setup = setup

    from setuptools.command import build_ext as setuptools_build_ext

    real_build_extension = setuptools_build_ext.build_ext.build_extension

    def build_extension(self, ext):
        prepare(ext)
        # last again at build time: a build_ext subclass may have set the arguments anew
        # since setup() (cymem and preshed assign them in build_extensions)
        if list(ext.extra_compile_args or [])[-len(flags):] != flags:
            ext.extra_compile_args = list(ext.extra_compile_args or []) + flags
        result = real_build_extension(self, ext)
        # setuptools builds into build/ and copies the module in place afterwards
        build_py = self.get_finalized_command("build_py")
        package = ".".join(ext.name.split(".")[:-1])
        module_file = os.path.join(build_py.get_package_dir(package), os.path.basename(self.get_ext_fullpath(ext.name)))
        built.append({
            "name": ext.name,
            "module_file": os.path.abspath(module_file),
            "sources": [os.path.abspath(s) for s in getattr(ext, "_cytool_sources", ext.sources)],
        })
        return result

    setuptools_build_ext.build_ext.build_extension = build_extension

    sys.argv = ["setup.py", "build_ext", "--inplace"] + (["-j", jobs] if jobs != "1" else [])
    from Cython.Compiler.Errors import CompileError as CythonError
    from setuptools.errors import CompileError, LinkError

    try:
        runpy.run_path("setup.py", run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise
    except (CythonError, CompileError, LinkError) as error:
        print(f"error: {error}", file=sys.stderr)  # the tool's own messages were printed above
        sys.exit(1)
    finally:
        with open(out_path, "w", encoding="utf-8") as handle:
            json.dump({"built": built}, handle)


if __name__ == "__main__":
    main()
