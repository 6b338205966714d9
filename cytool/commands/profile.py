"""`cytool profile FILE.pyx | script.py | -m MODULE | -c CODE [ARGS]`: run the program
under the allocation tracer (every Cython module, however it was built), summarise."""
from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path
from typing import List, Optional

from cytool.commands.options import add_build_arguments, add_entry_arguments, build_options, entry
from cytool.errors import CytoolError

CAPTURE_MAGIC = b"CYTRACE\0"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="run a .pyx, a script or a module with every allocation traced; summarise per .pyx line",
        description="Run FILE.pyx (built, cached), a Python script, -m MODULE or -c CODE with the C "
        "allocation tracer on, write the capture and print the top .pyx lines by bytes allocated.",
    )
    add_entry_arguments(parser, "profile")
    add_build_arguments(parser)
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="CAPTURE",
        help="the capture file (default: <module>.<pid>.cytrace in the current directory)",
    )
    parser.add_argument(
        "--follow-fork",
        action="store_true",
        help="forked children write their own capture, CAPTURE.<pid> (default: children are not traced)",
    )
    parser.add_argument(
        "--trace-python-allocators",
        action="store_true",
        help="also record the PyMem RAW/MEM/OBJ domains (pymalloc) instead of only malloc/mmap underneath",
    )
    parser.add_argument(
        "--native-unwind",
        action="store_true",
        help="unwind every stack with libunwind (slower; the default walks frame pointers in cytool-built code)",
    )
    parser.add_argument(
        "--time-resolution",
        type=int,
        default=None,
        metavar="NS",
        help="event time resolution in ns (default 1000000: 1 ms ticks of a clock thread; events of different "
        "threads within one tick are interleaved evenly, each address keeping a possible history). "
        "Below 100000 every event reads the TSC: exact order across threads, larger captures, more overhead",
    )
    parser.add_argument(
        "--compression",
        type=int,
        default=0,
        choices=range(0, 13),
        metavar="LEVEL",
        help="zstd level of the capture: 0 fast (default: zstd's -1), 1..12 smaller (more CPU in the writer thread, "
        "1 MiB of event buffer per thread instead of 256 KiB)",
    )
    parser.add_argument(
        "--max-frames",
        type=int,
        default=None,
        metavar="N",
        help="the most frames a stack keeps, native and Python together (default 1024; 16..65536); a deeper stack "
        "keeps its innermost and outermost frames and reports say how many were cut from its middle",
    )
    parser.add_argument(
        "--threads",
        metavar="NAMES",
        help="the summary covers only these threads: comma-separated thread names (Python's, or the native "
        "name) or ids; the capture holds them all",
    )
    parser.add_argument("--no-summary", action="store_true", help="do not print the summary at the end")
    parser.add_argument(
        "--live",
        action="store_true",
        help="show the live memory view while the program runs (cytool live; q leaves it and the program goes on); "
        "the program's stdout and stderr go to CAPTURE.out meanwhile, its stdin is /dev/null",
    )
    parser.set_defaults(handler=handle)


def is_replaceable_capture(path: Path) -> bool:
    """Whether `path` is a regular file that a capture may replace: one starting with the
    capture magic, or an empty one (a tracer that has just created its capture, before
    writing the header: another `cytool profile -o` of the same path at the same moment,
    which the tracer's lock then sends elsewhere). Opened non-blocking and checked before
    reading: a FIFO or device is never read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return False
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            return False
        return status.st_size == 0 or os.read(fd, len(CAPTURE_MAGIC)) == CAPTURE_MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def default_capture_path(module_name: str, directory: Path, pid: int) -> Path:
    """`<module>.<pid>.cytrace`, or with a `-N` suffix if that name is taken."""
    candidate = directory / f"{module_name}.{pid}.cytrace"
    n = 1
    while candidate.exists():
        candidate = directory / f"{module_name}.{pid}-{n}.cytrace"
        n += 1
    return candidate


def choose_capture_path(requested: Optional[Path], module_name: str) -> Path:
    if requested is None:
        return default_capture_path(module_name, Path.cwd(), os.getpid())
    if requested.is_dir():
        return default_capture_path(module_name, requested, os.getpid())
    if requested.exists() and not requested.is_file():
        raise CytoolError(
            f"{requested}: not a regular file (a FIFO, a device?); a capture is written to a file",
            hint="choose another -o path",
            exit_code=2,
        )
    if requested.exists() and not is_replaceable_capture(requested):
        raise CytoolError(
            f"{requested}: exists and is not a cytool capture; refusing to overwrite it",
            hint="choose another -o path (an existing capture file is replaced)",
            exit_code=2,
        )
    if not requested.parent.is_dir():
        raise CytoolError(f"{requested.parent}: no such directory", hint="create it or choose another -o path", exit_code=2)
    return requested


def child_captures(capture: Path) -> List[Path]:
    """Captures written by followed forks: CAPTURE.<pid>."""
    return sorted(p for p in capture.parent.glob(capture.name + ".*") if p.suffix[1:].isdigit())


def print_summary(capture: Path, threads: Optional[str] = None) -> None:
    print(f"capture: {capture}", flush=True)  # plain: a long path must stay on one line
    from cytool.reports.summary import print_profile_summary
    from cytool.reports.table import report_console

    console = report_console()
    try:
        print_profile_summary(capture, console, threads=threads)
    except CytoolError as error:  # the capture is written; the program's status stands
        print(error.render(), file=sys.stderr)


def start_tracker(tracker, requested: Optional[Path]):  # -> cytool.tracker.Tracker
    """Start tracing; when another process is writing the capture path given with -o
    (another `cytool profile -o` at the same time), write <stem>.<pid>.cytrace beside it
    instead and say so. Neither capture is lost."""
    from cytool.tracker import CaptureInUseError

    try:
        return tracker.start()
    except CaptureInUseError:
        if requested is None or requested.is_dir():
            raise
        busy = tracker.path
        tracker.path = default_capture_path(busy.stem if busy.suffix == ".cytrace" else busy.name, busy.parent, os.getpid())
        print(f"cytool: {busy} is being written by another process; this capture goes to {tracker.path}", file=sys.stderr)
        return tracker.start()


class LiveViewer:
    """`cytool live CAPTURE --pid <this process>` in a process of its own, on this terminal,
    while the program runs here with its output in CAPTURE.out."""

    def __init__(self, capture: Path):
        import subprocess

        self.capture = capture
        self.log = Path(str(capture) + ".out")
        self.saved: List[int] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cytool", "live", str(capture), "--pid", str(os.getpid())],
            env={k: v for k, v in os.environ.items() if k != "CYTOOL_PROFILE"},
        )

    def hand_over_terminal(self) -> None:
        """The terminal is the view's: the program's stdin is /dev/null, its stdout and
        stderr go to the log."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = [os.dup(0), os.dup(1), os.dup(2)]
        log = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)

    def _restore(self) -> None:
        if self.saved:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, saved in enumerate(self.saved):
                os.dup2(saved, fd)
                os.close(saved)
            self.saved = []

    def finish(self) -> None:
        """Wait for the user to leave the view (the program is done), give the terminal back."""
        try:
            self.process.wait()
        except KeyboardInterrupt:
            self.process.terminate()
            self.process.wait()
        self._restore()
        size = self.log.stat().st_size if self.log.exists() else 0
        print(f"cytool: the program's output ({size:,} bytes) is in {self.log}", file=sys.stderr)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()
        self._restore()


def start_viewer(capture: Path) -> LiveViewer:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CytoolError("--live needs a terminal (stdin and stdout)", hint="run without --live and use `cytool report`", exit_code=2)
    return LiveViewer(capture)


def handle(args: argparse.Namespace) -> int:
    from cytool.launch import Launcher

    # Our own tracer session must not collide with one started from the environment.
    os.environ.pop("CYTOOL_PROFILE", None)
    from cytool.tracker import Tracker

    if args.time_resolution is not None and args.time_resolution < 1:
        raise CytoolError("--time-resolution takes a number of nanoseconds, at least 1", exit_code=2)
    if args.max_frames is not None and not 16 <= args.max_frames <= 65536:
        raise CytoolError(f"--max-frames takes 16 to 65536 frames, not {args.max_frames}", exit_code=2)
    program = entry(args)
    launcher = Launcher(program, build_options(args))
    results = launcher.prepare()
    capture = choose_capture_path(args.output, results[0].module_name if results else program.label)
    if not args.no_summary:  # imported now: the program's folder must not shadow what the summary needs
        import cytool.reports.summary  # noqa: F401
        import rich.console  # noqa: F401
    tracker = Tracker(
        capture,
        follow_fork=args.follow_fork,
        trace_python_allocators=args.trace_python_allocators,
        native_unwind=args.native_unwind,
        time_resolution_ns=None if args.time_resolution is None else max(1, args.time_resolution),
        compression_level=args.compression,
        max_frames=args.max_frames,
        say_exec=True,  # an exec replaces this process: its summary will not come
    )
    status = 0
    pid = os.getpid()
    viewer = start_viewer(capture) if args.live else None  # before tracing: none of it is traced
    try:
        start_tracker(tracker, args.output)
    except BaseException:
        if viewer is not None:
            viewer.stop()
        raise
    if viewer is not None and tracker.path != capture:  # -o was busy: another capture path
        viewer.stop()
        viewer = start_viewer(tracker.path)
    capture = tracker.path
    if viewer is not None:
        viewer.hand_over_terminal()
    try:
        status = launcher.run()
    except SystemExit as exit_request:
        code = exit_request.code
        if code is None:
            status = 0
        elif isinstance(code, int):
            status = code
        else:
            print(code, file=sys.stderr)
            status = 1
    finally:
        tracker.stop()  # in a forked child: finishes its own capture, if it follows
        if viewer is not None and os.getpid() == pid:
            viewer.finish()  # the view says the capture is complete; the user leaves it
    sys.stdout.flush()
    if os.getpid() != pid:  # a forked child that returned here: the summary is the parent's
        return status
    if not args.no_summary:
        print_summary(capture, args.threads)
        for child in child_captures(capture):
            print(f"forked child capture: {child}")
    return status
