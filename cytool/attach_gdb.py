"""The gdb side of `cytool attach`: this file runs inside gdb (`gdb -batch -x`), standard
library only, and injects the tracer's bootstrap into a running Python process.

Arguments come in the environment variable CYTOOL_ATTACH_REQUEST (a JSON file: pid,
extension, code, result path). What it does, with the pause it costs the process:

1. `attach PID` (the process stops), symbols of the executable and libc only;
2. a breakpoint on the entry of malloc, calloc, realloc and free, then `continue`: the
   process runs until one of its threads enters one of them. That is a safe moment to
   call into it: the thread holds none of the allocator's locks yet. When nothing
   allocates (a process asleep), cytool sends the process a SIGURG after a while (its
   default action is to ignore it; gdb stops on it and never passes it on), and a
   thread blocked in a system call (the instruction before its pc is `syscall`) is used,
   else one stopped in the interpreter's own code (the executable or libpython: running
   Python, inside no libc function), else one computing in other code with no libc frame
   on its stack (a nogil loop), never one inside the dynamic loader;
3. in that thread: dlopen() the tracer's extension and call its cytool_attach_run(code),
   which starts a new thread that takes the GIL the ordinary way and runs `code`;
4. delete the breakpoints and detach.

Signals the program gets meanwhile (its own SIGUSR1, a monitor's SIGHUP ...) go to it
as usual and never stop gdb: a call gdb makes in the process that a signal interrupted
would be abandoned with gdb's dummy frame on the thread's stack, and the thread would
crash on return once gdb detached. Should a call be abandoned all the same, gdb lets it
finish before detaching. From the safe point on, cytool's SIGURG nudges are ignored
(the file RESULT.calling tells cytool to stop sending them).

The result file says how it went: {"ok": bool, "error": kind, "message": text,
"pause_ms": time the process was stopped, "stopped_in": where}.
"""
import json
import os
import time

import gdb  # type: ignore

REQUEST = json.load(open(os.environ["CYTOOL_ATTACH_REQUEST"]))
SAFE_ENTRIES = ("malloc", "calloc", "realloc", "free")
RTLD_NOW = 2
stops = []
phases = {}
paused_ns = 0
paused_since = 0


def write_result(result):
    result["pause_ms"] = round(paused_ns / 1e6, 1)
    result.update(phases)
    with open(REQUEST["result"], "w") as out:
        json.dump(result, out)


def on_stop(event):
    stops.append(event)


def c_string(text):
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def after_syscall(thread):
    """True when `thread` is blocked in a system call (its pc follows a `syscall`)."""
    thread.switch()
    pc = int(gdb.parse_and_eval("$pc"))
    try:
        return bytes(gdb.selected_inferior().read_memory(pc - 2, 2)) == b"\x0f\x05"
    except gdb.MemoryError:
        return False


def in_interpreter(thread):
    """True when `thread` was stopped in the interpreter's own code (the executable or
    libpython: running Python, holding none of libc's locks), outside the loader."""
    thread.switch()
    pc = int(gdb.parse_and_eval("$pc"))
    library = gdb.solib_name(pc)
    return (library is None or os.path.basename(library).startswith("libpython")) and not in_loader()


LIBC_OBJECTS = ("libc.so", "libc-", "libpthread", "libdl.so", "ld-linux", "ld.so", "ld-2.")
THREAD_START = ("start_thread", "clone", "clone3", "__clone", "__clone3", "__libc_start_call_main",
                "__libc_start_main", "__libc_start_main_impl", "_start")


def in_libc(pc):
    return os.path.basename(gdb.solib_name(pc) or "").startswith(LIBC_OBJECTS)


def outside_libc(thread):
    """True when `thread` computes in code of its own (a nogil loop of a Cython module, a
    BLAS kernel): stopped outside libc and the loader, with no libc frame on its stack but
    the ones that started it. It then holds none of libc's locks (malloc's, the loader's),
    which dlopen and pthread_create take."""
    thread.switch()
    try:
        frame = gdb.newest_frame()
        if in_libc(frame.pc()):
            return False
        for _ in range(256):
            frame = frame.older()
            if frame is None:
                return True
            if in_libc(frame.pc()) and (frame.name() or "") not in THREAD_START:
                return False
    except gdb.error:
        return False
    return False  # too deep to tell


def in_signal_handler():
    """True when the stopped thread runs a signal handler: the code it interrupted may hold
    malloc's locks, which the dlopen would then wait for."""
    return _stack_holds(gdb.SIGTRAMP_FRAME)


def _stack_holds(frame_type):
    """True when one of the selected thread's 256 newest frames is of gdb's `frame_type`."""
    try:
        frame = gdb.newest_frame()
        for _ in range(256):
            if frame is None:
                return False
            if frame.type() == frame_type:
                return True
            frame = frame.older()
    except gdb.error:
        return False
    return False


def in_loader():
    """True when the stopped thread is inside the dynamic loader (a dlopen that
    allocates): a dlopen of ours would then nest into the loader's work."""
    try:
        frame = gdb.newest_frame()
        for _ in range(64):
            if frame is None:
                return False
            name = os.path.basename(gdb.solib_name(frame.pc()) or "")
            if name.startswith("ld-linux") or name.startswith("ld.so") or name.startswith("ld-2."):
                return True
            frame = frame.older()
    except gdb.error:
        return False  # no further frames to read
    return False


def inject():
    global paused_ns, paused_since
    begin = time.monotonic_ns()
    gdb.execute("set pagination off")
    gdb.execute("set confirm off")
    gdb.execute("set auto-solib-add off")
    gdb.execute("set breakpoint pending off")
    gdb.execute("handle all nostop noprint pass", to_string=True)  # the program's own signals: to it
    gdb.execute("handle SIGURG stop print nopass", to_string=True)  # cytool's nudge when nothing allocates
    gdb.execute("set unwindonsignal on")  # a call a signal interrupts in its own thread is unwound
    gdb.execute("set debug-file-directory /nonexistent")  # minimal symbols are enough: no DWARF to read
    paused_since = time.monotonic_ns()  # the process stops when gdb attaches
    try:
        gdb.execute(f"attach {REQUEST['pid']}", to_string=True)
    except gdb.error as error:
        paused_since = 0
        return {"ok": False, "error": "attach", "message": str(error)}
    phases["attach_ms"] = round((time.monotonic_ns() - begin) / 1e6, 1)
    # only libc's symbols (malloc ... free, dlopen, dlsym): a library gdb is not asked
    # for costs nothing (libpython's DWARF would cost 250 ms and more), and breakpoints
    # by address (a breakpoint by name searches every symbol table: 140 ms)
    try:
        gdb.execute("sharedlibrary libc.so", to_string=True)
    except gdb.error:
        pass
    gdb.events.stop.connect(on_stop)
    breakpoints = []
    for name in SAFE_ENTRIES:
        try:
            address = int(gdb.parse_and_eval(f"(long)&{name}"))
            breakpoints.append(gdb.Breakpoint(f"*{address:#x}", internal=True))
        except (gdb.error, RuntimeError):
            pass
    if not breakpoints:
        return {"ok": False, "error": "symbols", "message": "no malloc or free found in the process"}
    phases["before_continue_ms"] = round((time.monotonic_ns() - paused_since) / 1e6, 1)
    open(REQUEST["result"] + ".running", "w").close()  # cytool may interrupt us from now on
    paused_ns += time.monotonic_ns() - paused_since
    continued = time.monotonic_ns()
    where = ""
    deadline = time.monotonic() + REQUEST.get("timeout", 30.0)
    while not where:
        if os.path.exists(REQUEST["abort"]) or time.monotonic() > deadline:
            # never leave gdb to be killed with its breakpoints in the process (a SIGTRAP
            # there would end it): give up here, cleanly
            for b in breakpoints:
                b.delete()
            if os.path.exists(REQUEST["abort"]):
                return {"ok": False, "error": "aborted", "message": "interrupted"}
            return {"ok": False, "error": "busy", "message": "no thread came to a safe point (an allocation or a "
                    f"blocking system call) within {REQUEST.get('timeout', 30.0):.0f} s"}
        try:
            gdb.execute("continue", to_string=True)
        except gdb.error as error:
            return {"ok": False, "error": "exited", "message": str(error)}
        if not gdb.selected_inferior().pid:
            return {"ok": False, "error": "exited", "message": "the process exited"}
        if stops and isinstance(stops[-1], gdb.BreakpointEvent):
            if in_loader() or in_signal_handler():
                phases["not_safe"] = phases.get("not_safe", 0) + 1  # wait for the next one
                continue
            where = "allocator entry"
        else:  # cytool's nudge (or another signal): a thread blocked in a system call
            # will do, else one running the interpreter's code
            threads = gdb.selected_inferior().threads()
            blocked = [t for t in threads if after_syscall(t)]
            running = [] if blocked else [t for t in threads if in_interpreter(t)]
            computing = [] if blocked or running else [t for t in threads if outside_libc(t)]
            if blocked or running or computing:
                (blocked or running or computing)[0].switch()
                where = "system call" if blocked else "interpreter" if running else "library code"
            else:
                phases["busy"] = phases.get("busy", 0) + 1  # every thread inside libc: wait on
    paused_since = time.monotonic_ns()
    phases["running_ms"] = round((paused_since - continued) / 1e6, 1)
    open(REQUEST["result"] + ".calling", "w").close()  # no more nudges from cytool
    gdb.execute("handle SIGURG nostop noprint nopass", to_string=True)
    for b in breakpoints:
        b.delete()
    caller = gdb.selected_thread()
    try:
        return call_bootstrap(where)
    except gdb.error as error:
        finish_abandoned_calls(caller)
        return {"ok": False, "error": "call", "message": str(error)}


def call_bootstrap(where):
    """dlopen() the extension and run its cytool_attach_run(code) in the selected thread."""
    handle = int(gdb.parse_and_eval(f"((void*(*)(const char*, int))dlopen)({c_string(REQUEST['extension'])}, {RTLD_NOW})"))
    if not handle:
        reason = gdb.parse_and_eval("((char*(*)(void))dlerror)()").string()
        return {"ok": False, "error": "dlopen", "message": reason}
    run = int(gdb.parse_and_eval(f'((void*(*)(void*, const char*))dlsym)((void*){handle}, "cytool_attach_run")'))
    if not run:
        return {"ok": False, "error": "dlopen", "message": "cytool_attach_run not found in the extension"}
    started = int(gdb.parse_and_eval(f"((int(*)(const char*)){run})({c_string(REQUEST['code'])})"))
    if started != 0:
        return {"ok": False, "error": "thread", "message": "could not start a thread in the process"}
    return {"ok": True, "stopped_in": where}


def has_dummy_frame(thread):
    """True when `thread`'s stack holds a call gdb made (a dummy frame it must pop)."""
    try:
        thread.switch()
    except gdb.error:
        return False
    return _stack_holds(gdb.DUMMY_FRAME)


def finish_abandoned_calls(caller, attempts=50):
    """A call gdb made that was abandoned (gdb stopped elsewhere during it) leaves gdb's
    dummy frame on the calling thread's stack: detaching then would crash the thread when
    the call returns. Let the process run until gdb has popped it (gdb stops silently
    when the call returns)."""
    for _ in range(attempts):
        if not gdb.selected_inferior().pid or not caller.is_valid() or not has_dummy_frame(caller):
            return
        try:
            gdb.execute("continue", to_string=True)
        except gdb.error:
            pass


def main():
    global paused_ns
    try:
        result = inject()
    except gdb.error as error:
        result = {"ok": False, "error": "gdb", "message": str(error)}
    try:
        if gdb.selected_inferior().pid:
            gdb.execute("detach", to_string=True)
    except gdb.error:
        pass
    if paused_since:
        paused_ns += time.monotonic_ns() - paused_since
    write_result(result)


main()
