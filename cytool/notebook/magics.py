"""The IPython magics `%load_ext cytool` adds.

    %%cytool [options]        build the cell (cytool.notebook.cells) and push its public
                              names into the notebook, like %%cython
    %%cytool --profile        ... with the cell's top-level code run under the tracer,
                              the report shown below the cell
    %cytool_profile STATEMENT run a statement (or, as %%cytool_profile, a cell of Python)
                              under the tracer and show the report

Build errors (Cython's, the compiler's) are shown with the cell's line numbers as one
UsageError (no traceback of cytool's); an exception raised by the cell's own code keeps
its traceback, without cytool's frames.
"""
from __future__ import annotations

import sys
from typing import Optional

from IPython.core import magic_arguments
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import HTML, display

from cytool.errors import CytoolError
from cytool.notebook import cells


def _build_options(args):  # type: ignore[no-untyped-def]  # -> cytool.build.BuildOptions
    import os

    from cytool.build.options import OPT_LEVELS, BuildOptions
    from cytool.commands.options import check_directives
    from cytool.project.settings import from_command_line

    if args.opt_level not in OPT_LEVELS:
        raise UsageError(f"-O{args.opt_level}: use one of {', '.join(OPT_LEVELS)}")
    directives = list(args.directives)
    if args.language_level:
        directives.append(f"language_level={args.language_level}")
    try:
        check_directives(type("Args", (), {"directives": directives})())
    except CytoolError as error:
        raise UsageError(error.message) from None
    # the notebook's folder comes first on the include path: `cimport mylib` finds
    # mylib.pxd beside the notebook, `cdef extern from "x.h"` its headers
    settings = from_command_line(
        include_dirs=list(args.include) + [os.getcwd()],
        library_dirs=args.library_dirs,
        libraries=args.lib,
        cplus=args.cplus,
        sources=args.src,
        compile_args=args.compile_args,
        link_args=args.link_args,
        directives=directives,
    )
    return BuildOptions(opt_level=args.opt_level, force=args.force, annotate=bool(args.annotate),
                        verbose=args.verbose, settings=settings, read_setup_py=False)


@magics_class
class CytoolMagics(Magics):
    @magic_arguments.magic_arguments()
    @magic_arguments.argument("-a", "--annotate", action="store_true", help="show Cython's annotated source below the cell")
    @magic_arguments.argument("-O", dest="opt_level", default="2", metavar="LEVEL",
                              help="C optimisation level (0, 1, 2, 3, s, g, fast; default 2)")
    @magic_arguments.argument("-+", "--cplus", action="store_true", help="compile as C++")
    @magic_arguments.argument("-3", dest="language_level", action="store_const", const="3", help="language_level=3")
    @magic_arguments.argument("-2", dest="language_level", action="store_const", const="2", help="language_level=2")
    @magic_arguments.argument("-f", "--force", action="store_true", help="build again even if the cache has the build")
    @magic_arguments.argument("-c", "--compile-args", action="append", default=[], metavar="ARG",
                              help="extra compiler argument (repeatable)")
    @magic_arguments.argument("--link-args", action="append", default=[], metavar="ARG",
                              help="extra linker argument (repeatable)")
    @magic_arguments.argument("-l", "--lib", action="append", default=[], metavar="LIB", help="link with LIB (repeatable)")
    @magic_arguments.argument("-L", dest="library_dirs", action="append", default=[], metavar="DIR",
                              help="library folder (repeatable)")
    @magic_arguments.argument("-I", "--include", action="append", default=[], metavar="DIR",
                              help="include folder, for Cython and C (repeatable)")
    @magic_arguments.argument("-S", "--src", action="append", default=[], metavar="FILE",
                              help="a C/C++ file compiled into the module (repeatable)")
    @magic_arguments.argument("-X", "--directive", dest="directives", action="append", default=[],
                              metavar="NAME=VALUE", help="a Cython directive (repeatable)")
    @magic_arguments.argument("-n", "--name", "--module-name", dest="module_name", metavar="NAME",
                              help="the module's name (default: one made from the cell's content)")
    @magic_arguments.argument("--profile", action="store_true",
                              help="run the cell's top-level code under the allocation tracer and show the report")
    @magic_arguments.argument("-v", "--verbose", action="store_true", help="show the build's commands")
    @line_cell_magic
    def cytool(self, line: str, cell: Optional[str] = None):  # type: ignore[no-untyped-def]
        """Compile a cell with Cython through cytool's cache (debug information kept,
        `#line` directives: tracebacks, reports and gdb name the cell's lines), run its
        top-level code and put its public names in the notebook, like %%cython.

            %%cytool -a
            def f(int n):
                return n * 2
        """
        __tracebackhide__ = True
        if cell is None:
            raise UsageError("%%cytool is a cell magic: put it on the first line of a cell of Cython code "
                             "(%cytool_profile STATEMENT profiles one line)")
        args = magic_arguments.parse_argstring(self.cytool, line)
        if args.module_name is not None and not args.module_name.isidentifier():
            raise UsageError(f"--module-name {args.module_name!r}: a cell's module name is one identifier (no dots)")
        options = _build_options(args)
        identity = cells.notebook_identity(self.shell.user_ns)
        try:
            path = cells.cell_source(line, cell, identity, args.module_name)
            result = cells.build_cell(path, options)
        except CytoolError as error:
            raise UsageError(error.render().replace("cytool: error: ", "cytool: ", 1)) from None
        module = self._load(result, args.profile)
        if module is None:
            return None
        self.shell.push(cells.public_names(module))
        if args.annotate and result.annotation is not None:
            from cytool.notebook.inline import annotation_html

            display(HTML(annotation_html(result.annotation.read_text(encoding="utf-8"))))
        return None

    def _load(self, result, profile: bool):  # type: ignore[no-untyped-def]
        __tracebackhide__ = True
        measurement = None
        if profile:
            measurement = self._start_measurement()
        try:
            module = cells.load_cell(result)
        except Exception as error:  # the cell's own code raised: its traceback, not ours
            if measurement is not None:
                measurement.stop()
                measurement.discard()
            raise error.with_traceback(cells.user_frames(error.__traceback__))
        if measurement is not None:
            self._show(measurement, f"cell {result.module_name}")
        return module

    @staticmethod
    def _start_measurement():  # type: ignore[no-untyped-def]
        from cytool.measure import Measurement

        try:
            return Measurement().start()
        except CytoolError as error:
            raise UsageError(error.render().replace("cytool: error: ", "cytool: ", 1)) from None

    @staticmethod
    def _show(measurement, title: str) -> None:  # type: ignore[no-untyped-def]
        measurement.stop()  # first: what follows (imports, the report) is not the user's
        from cytool.notebook.inline import profile_bundle

        try:
            profile = measurement.profile()
        except CytoolError as error:
            print(error.render(), file=sys.stderr)
            return
        finally:
            measurement.discard()
        display(profile_bundle(profile, title), raw=True)

    @line_cell_magic
    def cytool_profile(self, line: str, cell: Optional[str] = None):  # type: ignore[no-untyped-def]
        """Run a statement (`%cytool_profile STATEMENT`) or a cell of Python
        (`%%cytool_profile`) in the notebook's namespace under cytool's allocation tracer
        and show the report: the top .pyx lines, and the HTML report with the annotated
        .pyx source and the flame graph. An expression's value is returned."""
        __tracebackhide__ = True
        code = cell if cell is not None else line
        if not code.strip():
            raise UsageError("%cytool_profile STATEMENT: give the statement to profile, e.g. %cytool_profile f(10**6)")
        try:
            compiled = compile(code, "<cytool_profile>", "eval")
            is_expression = True
        except SyntaxError:
            try:
                compiled = compile(code, "<cytool_profile>", "exec")
            except SyntaxError as error:
                raise UsageError(f"%cytool_profile: not Python: {error.msg} (line {error.lineno})") from None
            is_expression = False
        measurement = self._start_measurement()
        try:
            value = eval(compiled, self.shell.user_global_ns, self.shell.user_ns)
        except Exception as error:
            measurement.stop()
            measurement.discard()
            raise error.with_traceback(cells.user_frames(error.__traceback__))
        title = code.strip().splitlines()[0] if code.strip() else "statement"
        self._show(measurement, title)
        return value if is_expression else None


def load(ipython) -> None:  # type: ignore[no-untyped-def]
    ipython.register_magics(CytoolMagics)


def unload(ipython) -> None:  # type: ignore[no-untyped-def]
    # IPython has no public way to remove magics; the names stay until the kernel restarts
    pass
