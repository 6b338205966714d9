"""cytool's agent inside the debugged Python: Python-level breakpoints and steps.

This file is not imported by gdb: the gdb extension (cytool_gdb_python) executes it in
the debugged process, as module `_cytool_gdb_agent`, at a stop where the thread holds the
GIL. It must run on Python 3.9-3.13 with the standard library only and never raise into
the program: every entry point catches its own errors and returns a string.

It watches Python code only while a Python breakpoint or a Python-level step needs it:
with sys.monitoring on 3.12+ (a code object that cannot stop is switched off after its
first call: near-free), with sys.settrace before (every Python call pays; see
bench/bench_debug_agent.py). When a Python stop is due it calls
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
        self.frame = None  # the frame a step is about
        self.last_frame = None  # the frame of the last Python stop
        self._lines = {}  # code object -> set of its line numbers
        self._first_line = set()  # frames that stop at their first line (function breakpoints)
        self.backend = _Monitoring(self) if _Monitoring.available() else _Settrace(self)

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

    def _line_break_at(self, code, line):
        for number, (given, wanted) in self.line_breaks.items():
            if wanted == line and self._same_file(given, code.co_filename):
                return number
        return None

    def _has_line_breaks(self, code):
        for given, wanted in self.line_breaks.values():
            if self._same_file(given, code.co_filename) and wanted in self._code_lines(code):
                return True
        return False

    def _function_break(self, frame):
        code = frame.f_code
        qualname = getattr(code, "co_qualname", code.co_name)
        module = frame.f_globals.get("__name__", "") if frame.f_globals is not None else ""
        full = module + "." + qualname if module else qualname
        for number, name in self.function_breaks.items():
            if name in (full, qualname) or full.endswith("." + name):
                return number
        return None

    def _mine(self):
        return threading.get_ident() == self.thread

    # -- events (both backends) --------------------------------------------------------

    def wants(self, frame):
        """A Python frame starts: whether its lines must be watched."""
        code = frame.f_code
        if code.co_filename in _NOT_TRACED:
            return False
        if self.mode in ("enter", "step") and self._mine():
            if self.mode == "enter":
                self.mode, self.frame = "step", frame
            return True
        if self.function_breaks and self._function_break(frame) is not None:
            self._first_line.add(frame)
            return True
        return bool(self.line_breaks) and self._has_line_breaks(code)

    def on_line(self, frame, line):
        if frame in self._first_line:
            self._first_line.discard(frame)
            number = self._function_break(frame)
            if number is not None:
                return self._stop("breakpoint", number, frame, line)
        number = self._line_break_at(frame.f_code, line) if self.line_breaks else None
        if number is not None:
            return self._stop("breakpoint", number, frame, line)
        if self._mine() and (self.mode == "step" or (self.mode in ("next", "caller") and frame is self.frame)):
            return self._stop("step", 0, frame, line)
        return None

    def on_return(self, frame):
        self._first_line.discard(frame)
        if self.mode is None or self.mode == "enter" or not self._mine():
            return None
        if self.frame is not None and frame is not self.frame:
            return None
        return self._stop("return", 0, frame, frame.f_lineno)

    def _stop(self, reason, number, frame, line):
        self.last_frame = frame
        code = frame.f_code
        sys.audit(STOP_EVENT, reason, number, code.co_filename, line, getattr(code, "co_qualname", code.co_name))
        return None

    def needed(self):
        return bool(self.line_breaks or self.function_breaks or self.mode)

    # -- called by gdb (each returns a short string) -----------------------------------

    def set_line_break(self, number, filename, line):
        self.line_breaks[number] = (filename, line)
        self.backend.update(running=sys._getframe(1))
        return "ok"

    def set_function_break(self, number, name):
        self.function_breaks[number] = name
        self.backend.update()
        return "ok"

    def delete_break(self, number):
        self.line_breaks.pop(number, None)
        self.function_breaks.pop(number, None)
        self.backend.update()
        return "ok"

    def arm(self, mode):
        """For the calling thread (the one gdb stopped): mode "enter" stops at the first
        line of the next Python frame it enters; "step", "next", "finish" and "caller"
        (the next line of the last stop's caller) start from the last Python stop;
        None disarms."""
        self.mode = mode
        self.thread = threading.get_ident()
        watch = None
        if mode in ("step", "next", "finish"):
            self.frame = watch = self.last_frame
        elif mode == "caller":
            self.frame = watch = self.last_frame.f_back if self.last_frame is not None else None
            if self.frame is None:
                self.mode = None
        else:
            self.frame = None
        self.backend.update(watch=watch)
        return "ok"

    def locals_text(self):
        frame = self.last_frame
        if frame is None:
            return "no Python frame"
        return "\n".join("%s = %s" % (name, _safe_repr(value)) for name, value in frame.f_locals.items())

    def eval_in_frame(self, source, mode):
        frame = self.last_frame
        if frame is None:
            return "error:\0no Python frame"
        return self._run(source, mode, frame.f_globals, frame.f_locals)

    def eval_with(self, source, mode, globals_, locals_):
        return self._run(source, mode, globals_, locals_)

    def _run(self, source, mode, globals_, locals_):
        """"value:PRINTED\\0KIND\\0TEXT" (KIND int, float, bool, str or repr) or
        "error:PRINTED\\0TRACEBACK" with only the frames of the code that was run."""
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


class _Settrace:
    """Python 3.9-3.11: sys.settrace in this thread, threading.settrace for new threads."""

    def __init__(self, agent):
        self.agent = agent
        self.on = False

    def update(self, watch=None, running=None):
        agent = self.agent
        if agent.needed():
            threading.settrace(self._global)
            sys.settrace(self._global)
            self.on = True
            for frame in _frames(watch, running):  # frames already running get line events too
                frame.f_trace = self._local
        elif self.on:
            threading.settrace(None)
            sys.settrace(None)
            self.on = False

    def _global(self, frame, event, arg):
        try:
            if event == "call" and self.agent.wants(frame):
                return self._local
        except Exception:
            pass
        return None

    def _local(self, frame, event, arg):
        try:
            if event == "line":
                self.agent.on_line(frame, frame.f_lineno)
            elif event == "return":
                self.agent.on_return(frame)
        except Exception:
            pass
        return self._local


class _Monitoring:
    """Python 3.12+: sys.monitoring, for every thread. PY_START is on while anything is
    watched and switched off for each code object that cannot stop; LINE and the return
    events are on only for the code objects that can."""

    TOOL = 0  # sys.monitoring.DEBUGGER_ID

    @staticmethod
    def available():
        monitoring = getattr(sys, "monitoring", None)
        if monitoring is None:
            return False
        try:
            return monitoring.get_tool(_Monitoring.TOOL) in (None, "cytool")
        except Exception:
            return False

    def __init__(self, agent):
        self.agent = agent
        self.monitoring = sys.monitoring
        self.watched = set()  # code objects with local events
        self.on = False

    def _start(self):
        m = self.monitoring
        if m.get_tool(self.TOOL) is None:
            m.use_tool_id(self.TOOL, "cytool")
        events = m.events
        m.register_callback(self.TOOL, events.PY_START, self._py_start)
        m.register_callback(self.TOOL, events.LINE, self._line)
        m.register_callback(self.TOOL, events.PY_RETURN, self._return)
        m.register_callback(self.TOOL, events.PY_YIELD, self._return)
        self.on = True

    def _watch(self, code):
        events = self.monitoring.events
        self.monitoring.set_local_events(self.TOOL, code, events.LINE | events.PY_RETURN | events.PY_YIELD)
        self.watched.add(code)

    def update(self, watch=None, running=None):
        m = self.monitoring
        agent = self.agent
        if not agent.needed():
            if self.on:
                m.set_events(self.TOOL, 0)
                for code in self.watched:
                    m.set_local_events(self.TOOL, code, 0)
                self.watched.clear()
            return
        if not self.on:
            self._start()
        m.set_events(self.TOOL, m.events.PY_START)
        for frame in _frames(watch, running):
            if frame is watch or agent._has_line_breaks(frame.f_code):
                self._watch(frame.f_code)
        m.restart_events()  # code switched off earlier may matter now

    def _py_start(self, code, offset):
        try:
            frame = sys._getframe(1)
            if frame.f_code is not code:
                return None
            if self.agent.wants(frame):
                self._watch(code)
                return None
        except Exception:
            return None
        if self.agent.mode in ("enter", "step"):
            return None  # another thread's code may matter to this step later
        return self.monitoring.DISABLE

    def _line(self, code, line):
        agent = self.agent
        try:
            frame = sys._getframe(1)
            if frame.f_code is code:
                agent.on_line(frame, line)
        except Exception:
            return None
        if agent.mode is None and not agent.function_breaks and agent._line_break_at(code, line) is None:
            return self.monitoring.DISABLE  # this line cannot stop until the next step or breakpoint
        return None

    def _return(self, code, offset, value):
        try:
            frame = sys._getframe(1)
            if frame.f_code is code:
                self.agent.on_return(frame)
        except Exception:
            pass
        return None


def _frames(watch, running):
    """The frame a step watches, and every frame running below the caller (for a line
    breakpoint set while they run), cytool's own code left out."""
    found = [watch] if watch is not None else []
    frame = running
    while frame is not None:
        found.append(frame)
        frame = frame.f_back
    return [f for f in found if f.f_code.co_filename not in _NOT_TRACED]


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
