"""cytool's agent inside the debugged Python: Python-level breakpoints and steps.

This file is not imported by gdb: the gdb extension (cytool_gdb_python) executes it in
the debugged process, as module `_cytool_gdb_agent`, at a stop where the thread holds the
GIL. It must run on Python 3.9-3.13 with the standard library only and never raise into
the program: every entry point catches its own errors and returns a string.

It traces Python code with sys.settrace (threading.settrace for threads started later)
only while a Python breakpoint or a Python-level step needs it; a code object with no
breakpoint is not traced line by line. When a Python stop is due it calls
`sys.audit("cytool.gdb.stop", reason, number, filename, line, function)`: gdb has a
breakpoint on the interpreter's `sys_audit` and reads those arguments.
"""
import os
import sys
import threading

STOP_EVENT = "cytool.gdb.stop"
_AGENT_FILE = sys._getframe().f_code.co_filename  # gdb compiles this file under its own path
# code that is cytool's, never the program's: this file, what gdb runs, what cy-exec runs
_NOT_TRACED = (_AGENT_FILE, "<cytool-gdb>", "<cy-exec>")


class Agent:
    def __init__(self):
        self.line_breaks = {}  # number -> (file as given, line)
        self.function_breaks = {}  # number -> dotted name
        self.mode = None  # None, "enter", "step", "next", "finish", "caller"
        self.thread = None  # thread ident the step belongs to
        self.frame = None  # the frame a next/finish/caller step is about
        self.last_frame = None  # the frame of the last Python stop
        self._lines = {}  # code object -> set of its line numbers
        self._pending_function = set()  # frames that stop at their first line
        self._tracing = False

    # -- switching tracing on and off --------------------------------------------------

    def _needed(self):
        return bool(self.line_breaks or self.function_breaks or self.mode)

    def refresh(self, frame=None):
        """Trace when needed: this thread, threads started later and (3.12+) all threads."""
        if self._needed():
            threading.settrace(self._global)
            if hasattr(threading, "settrace_all_threads"):
                threading.settrace_all_threads(self._global)
            else:
                sys.settrace(self._global)
            self._tracing = True
            while frame is not None:  # frames already running get line events too
                if frame.f_code.co_filename not in _NOT_TRACED:
                    frame.f_trace = self._local
                frame = frame.f_back
        elif self._tracing:
            threading.settrace(None)
            if hasattr(threading, "settrace_all_threads"):
                threading.settrace_all_threads(None)
            else:
                sys.settrace(None)
            self._tracing = False
        return "ok"

    # -- matching ----------------------------------------------------------------------

    def _code_lines(self, code):
        lines = self._lines.get(code)
        if lines is None:
            if hasattr(code, "co_lines"):
                lines = {line for _, _, line in code.co_lines() if line is not None}
            else:
                import dis
                lines = {line for _, line in dis.findlinestarts(code)}
            self._lines[code] = lines
        return lines

    @staticmethod
    def _same_file(given, filename):
        if os.path.basename(given) != os.path.basename(filename):
            return False
        return "/" not in given or os.path.abspath(filename).endswith(os.path.normpath(given).lstrip("./"))

    def _line_break_here(self, frame, line):
        code = frame.f_code
        for number, (given, wanted) in self.line_breaks.items():
            if wanted == line and self._same_file(given, code.co_filename):
                return number
        return None

    def _has_line_breaks(self, code):
        lines = None
        for given, wanted in self.line_breaks.values():
            if self._same_file(given, code.co_filename):
                lines = lines if lines is not None else self._code_lines(code)
                if wanted in lines:
                    return True
        return False

    @staticmethod
    def _qualified(frame):
        code = frame.f_code
        qualname = getattr(code, "co_qualname", code.co_name)
        module = frame.f_globals.get("__name__", "") if frame.f_globals else ""
        return module, qualname

    def _function_break(self, frame):
        module, qualname = self._qualified(frame)
        full = module + "." + qualname if module else qualname
        for number, name in self.function_breaks.items():
            if name in (full, qualname) or full.endswith("." + name):
                return number
        return None

    # -- the trace functions -----------------------------------------------------------

    def _global(self, frame, event, arg):
        if event != "call" or frame.f_code.co_filename in _NOT_TRACED:
            return None
        try:
            mine = threading.get_ident() == self.thread
            if mine and self.mode in ("enter", "step"):
                if self.mode == "enter":
                    self.mode, self.frame = "step", frame
                return self._local
            if self.function_breaks and self._function_break(frame) is not None:
                self._pending_function.add(frame)
                return self._local
            if self.line_breaks and self._has_line_breaks(frame.f_code):
                return self._local
        except Exception:
            return None
        return None

    def _local(self, frame, event, arg):
        try:
            if event == "line":
                self._on_line(frame)
            elif event == "return":
                self._on_return(frame)
        except Exception:
            pass
        return self._local

    def _on_line(self, frame):
        mine = threading.get_ident() == self.thread
        if frame in self._pending_function:
            self._pending_function.discard(frame)
            number = self._function_break(frame)
            if number is not None:
                return self._stop("breakpoint", number, frame)
        number = self._line_break_here(frame, frame.f_lineno) if self.line_breaks else None
        if number is not None:
            return self._stop("breakpoint", number, frame)
        if not mine:
            return None
        if self.mode == "step" or (self.mode in ("next", "caller") and frame is self.frame):
            return self._stop("step", 0, frame)
        return None

    def _on_return(self, frame):
        self._pending_function.discard(frame)
        if threading.get_ident() != self.thread or self.mode is None:
            return None
        if self.mode in ("next", "finish", "caller") and frame is not self.frame:
            return None
        if self.mode == "step" and self.frame is not None and frame is not self.frame:
            return None
        return self._stop("return", 0, frame)

    def _stop(self, reason, number, frame):
        self.last_frame = frame
        code = frame.f_code
        sys.audit(STOP_EVENT, reason, number, code.co_filename, frame.f_lineno,
                  getattr(code, "co_qualname", code.co_name))
        return None

    # -- called by gdb (each returns a short string) -----------------------------------

    def set_line_break(self, number, filename, line):
        self.line_breaks[number] = (filename, line)
        return self.refresh(sys._getframe(1))

    def set_function_break(self, number, name):
        self.function_breaks[number] = name
        return self.refresh(sys._getframe(1))

    def delete_break(self, number):
        self.line_breaks.pop(number, None)
        self.function_breaks.pop(number, None)
        return self.refresh()

    def arm(self, mode):
        """For the calling thread (the one gdb stopped): mode "enter" stops at the first
        line of the next Python frame it enters; "step", "next", "finish" and "caller"
        (the next line of the last stop's caller) start from the last Python stop;
        None disarms."""
        self.mode = mode
        self.thread = threading.get_ident()
        if mode in ("next", "finish"):
            self.frame = self.last_frame
        elif mode == "step":
            self.frame = self.last_frame
        elif mode == "caller":
            self.frame = self.last_frame.f_back if self.last_frame is not None else None
            if self.frame is None:
                self.mode = None
        else:
            self.frame = None
        self.refresh(self.last_frame if mode in ("step", "next", "finish", "caller") else None)
        return "ok"

    def last_location(self):
        frame = self.last_frame
        if frame is None:
            return ""
        code = frame.f_code
        return "%s\0%d\0%s" % (code.co_filename, frame.f_lineno, getattr(code, "co_qualname", code.co_name))

    def locals_text(self):
        frame = self.last_frame
        if frame is None:
            return "no Python frame"
        return "\n".join("%s = %s" % (name, _safe_repr(value)) for name, value in frame.f_locals.items())

    def eval_in_frame(self, source, mode):
        frame = self.last_frame
        if frame is None:
            return "error: no Python frame"
        return self._run(source, mode, frame.f_globals, frame.f_locals)

    def eval_with(self, source, mode, globals_, locals_):
        return self._run(source, mode, globals_, locals_)

    def _run(self, source, mode, globals_, locals_):
        """"value:PRINTED\0KIND\0TEXT" (KIND int, float, bool, str or repr) or
        "error:PRINTED\0TRACEBACK" with only the frames of the code that was run."""
        import io
        import traceback
        saved = sys.stdout
        capture = io.StringIO()
        try:
            sys.stdout = capture
            try:
                if mode == "eval":
                    value = eval(compile(source, "<cy-exec>", "eval"), globals_, locals_)
                    return "value:" + capture.getvalue() + "\0" + _typed(value)
                exec(compile(source, "<cy-exec>", "exec"), globals_, locals_)
                return "value:" + capture.getvalue() + "\0"
            finally:
                sys.stdout = saved
        except BaseException as error:
            frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename != _AGENT_FILE]
            text = "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(error), error))
            return "error:" + capture.getvalue() + "\0" + text.rstrip()


def _typed(value):
    for kind in (bool, int, float):
        if type(value) is kind:
            return kind.__name__ + "\0" + repr(value)
    if type(value) is str:
        return "str\0" + value
    return "repr\0" + _safe_repr(value)


def _safe_repr(value):
    try:
        text = repr(value)
    except BaseException as error:
        return "<unreadable: repr failed: %s>" % type(error).__name__
    return text if len(text) <= 2000 else text[:2000] + "..."


agent = Agent()
