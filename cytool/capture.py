"""Read a capture file (runtime/FORMAT.md) through libcyanalyze's C reader.

    capture = read_capture("out.cytrace")
    capture.header.pid, capture.truncated, capture.recovered_bytes
    for event in capture.events: event.kind ("malloc", "free", ...), event.address, ...
    capture.stacks[event.stack_id] -> [Frame(function, file, line, kind, object), ...]

Bad files raise CytoolError with one clear message. A truncated capture is not an
error: `truncated` is set and `truncation_message()` says what was recovered.
"""
from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, TypeVar, Union, overload

from cytool.errors import CytoolError

LIB_DIR = Path(__file__).resolve().parent / "_lib"

KIND_NAMES: Dict[int, str] = {
    1: "malloc",
    2: "calloc",
    3: "realloc",
    4: "reallocarray",
    5: "posix_memalign",
    6: "aligned_alloc",
    7: "memalign",
    8: "valloc",
    9: "pvalloc",
    10: "mmap",
    11: "pymem_raw",
    12: "pymem_mem",
    13: "pymem_obj",
    14: "mremap",
    32: "free",
    33: "realloc_free",
    34: "munmap",
    35: "pymem_raw_free",
    36: "pymem_mem_free",
    37: "pymem_obj_free",
}
ALLOCATION_KINDS = frozenset(name for code, name in KIND_NAMES.items() if code < 32)
FREE_KINDS = frozenset(name for code, name in KIND_NAMES.items() if code >= 32)

FLAG_NATIVE = 1
FLAG_PYMEM = 2
FLAG_PYTHON_FRAMES = 4
FLAG_FORKED_CHILD = 8
FLAG_ATTACHED = 16  # tracing started in a running process (cytool attach)

# ---- the C structures (runtime/include/cyanalyze.h) ---------------------------------

_u64 = ctypes.c_uint64
_u32 = ctypes.c_uint32
_cstr = ctypes.c_char_p


class _Event(ctypes.Structure):
    _fields_ = [
        ("time_ns", _u64),
        ("address", _u64),
        ("size", _u64),
        ("stack_id", _u32),
        ("thread_id", _u32),
        ("kind", ctypes.c_uint8),
        ("reserved", ctypes.c_uint8 * 7),
    ]


_EVENT_STRUCT = struct.Struct("<QQQIIB7x")
assert _EVENT_STRUCT.size == ctypes.sizeof(_Event)


class _Header(ctypes.Structure):
    _fields_ = [
        ("version", _u32),
        ("pid", _u64),
        ("start_time_ns", _u64),
        ("flags", _u64),
        ("parent_pid", _u64),
        ("python_version", _cstr),
        ("executable", _cstr),
        ("argc", _u64),
        ("argv", ctypes.POINTER(_cstr)),
        ("time_resolution_ns", _u64),
        ("clock", _u32),
        ("max_frames", _u64),
    ]


class _Object(ctypes.Structure):
    _fields_ = [
        ("id", _u64),
        ("load_bias", _u64),
        ("path", _cstr),
        ("build_id", ctypes.POINTER(ctypes.c_uint8)),
        ("build_id_len", _u64),
        ("nsegments", _u64),
        ("segments", ctypes.POINTER(_u64)),
        ("unload_time_ns", ctypes.c_int64),
        ("load_generation", _u64),
        ("unload_generation", _u64),
    ]


class _Thread(ctypes.Structure):
    _fields_ = [("id", _u64), ("tid", _u64), ("name", _cstr), ("nevents", _u64)]


class _PyFrame(ctypes.Structure):
    _fields_ = [("id", _u64), ("line", _u64), ("function", _cstr), ("file", _cstr)]


class _Stack(ctypes.Structure):
    _fields_ = [
        ("id", _u64),
        ("nframes", _u64),
        ("frames", ctypes.POINTER(_u64)),
        ("generation", _u64),
        ("cut", _u64),
        ("cut_at", _u64),
    ]


class _Loss(ctypes.Structure):
    _fields_ = [("from_ns", _u64), ("until_ns", _u64), ("events", _u64), ("frames", _u64), ("reason", _cstr)]


class _Takeover(ctypes.Structure):
    _fields_ = [
        ("time_ns", _u64),
        ("what", _u32),
        ("state", _u32),
        ("object", _u64),
        ("function", _cstr),
        ("target", _cstr),
    ]


class _Status(ctypes.Structure):
    _fields_ = [
        ("truncated", ctypes.c_int),
        ("complete", ctypes.c_int),
        ("has_stats", ctypes.c_int),
        ("file_bytes", _u64),
        ("recovered_bytes", _u64),
        ("frames", _u64),
        ("records", _u64),
        ("end_time_ns", _u64),
        ("stats_events", _u64),
        ("stats_dropped", _u64),
        ("stats_stacks", _u64),
        ("stats_frames", _u64),
        ("missing_stacks", _u64),
        ("missing_pyframes", _u64),
        ("problem", _cstr),
        ("damaged_frames", _u64),
        ("missing_batches", _u64),
        ("duplicate_batches", _u64),
        ("missing_events", _u64),
        ("stats_lost", _u64),
        ("last_progress_ns", _u64),
        ("live", ctypes.c_int),
        ("notes", _cstr),
        ("exec_seen", ctypes.c_int),
        ("exec_time_ns", _u64),
        ("exec_what", _cstr),
        ("exec_failure", _cstr),
    ]


class _Location(ctypes.Structure):
    _fields_ = [("function", _cstr), ("file", _cstr), ("line", _u32), ("kind", _u32), ("object", _cstr)]


class _AnalyzeOptions(ctypes.Structure):
    _fields_ = [
        ("temporary_window", _u32),
        ("nthreads", _u32),
        ("threads", ctypes.POINTER(_u64)),
        ("include_native_frames", ctypes.c_int),
        ("runner_prefixes", _cstr),
        ("tool_prefixes", _cstr),
        ("helper_calls", _cstr),
        ("helper_labels", _cstr),
        ("helper_library", _cstr),
    ]


_library: Optional[ctypes.CDLL] = None


def library() -> ctypes.CDLL:
    """libcyanalyze.so with its prototypes declared (loaded once)."""
    global _library
    if _library is not None:
        return _library
    path = Path(os.environ.get("CYTOOL_ANALYZE_LIB", LIB_DIR / "libcyanalyze.so"))
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as error:
        raise CytoolError(
            f"cannot load the capture reader {path}: {error}",
            hint="build the C runtime with `make -C runtime` (needs libzstd, liblz4 and libdw)",
        ) from None
    size_p = ctypes.POINTER(ctypes.c_size_t)
    prototypes = {
        "cya_open": (ctypes.c_void_p, [_cstr, ctypes.POINTER(ctypes.c_int), ctypes.c_char_p, ctypes.c_size_t]),
        "cya_close": (None, [ctypes.c_void_p]),
        "cya_get_header": (ctypes.POINTER(_Header), [ctypes.c_void_p]),
        "cya_get_status": (ctypes.POINTER(_Status), [ctypes.c_void_p]),
        "cya_get_events": (ctypes.c_void_p, [ctypes.c_void_p, size_p]),
        "cya_count_events": (ctypes.c_size_t, [ctypes.c_void_p]),
        "cya_order_conflicts": (_u64, [ctypes.c_void_p, ctypes.POINTER(_u64)]),
        "cya_get_objects": (ctypes.POINTER(_Object), [ctypes.c_void_p, size_p]),
        "cya_get_threads": (ctypes.POINTER(_Thread), [ctypes.c_void_p, size_p]),
        "cya_get_pyframes": (ctypes.POINTER(_PyFrame), [ctypes.c_void_p, size_p]),
        "cya_get_stacks": (ctypes.POINTER(_Stack), [ctypes.c_void_p, size_p]),
        "cya_get_losses": (ctypes.POINTER(_Loss), [ctypes.c_void_p, size_p]),
        "cya_get_takeovers": (ctypes.POINTER(_Takeover), [ctypes.c_void_p, size_p]),
        "cya_free": (None, [ctypes.c_void_p]),
    }
    optional = {
        "cya_symbolize": (ctypes.c_void_p, [ctypes.c_void_p]),
        "cya_symbolize_search": (ctypes.c_void_p, [ctypes.c_void_p, _cstr]),
        "cya_symbols_close": (None, [ctypes.c_void_p]),
        "cya_symbols_locations": (ctypes.POINTER(_Location), [ctypes.c_void_p, size_p]),
        "cya_symbols_stack": (ctypes.POINTER(_u32), [ctypes.c_void_p, _u64, size_p]),
        "cya_symbols_warnings": (_cstr, [ctypes.c_void_p]),
        "cya_analyze_json": (
            ctypes.c_void_p,
            [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(_AnalyzeOptions), ctypes.c_char_p, ctypes.c_size_t],
        ),
    }
    for table, required in ((prototypes, True), (optional, False)):
        for name, (restype, argtypes) in table.items():
            try:
                function = getattr(lib, name)
            except AttributeError:
                if required:
                    raise CytoolError(f"{path} is out of date: it lacks {name}", hint="run `make -C runtime`") from None
                continue
            function.restype = restype
            function.argtypes = argtypes
    _library = lib
    return lib


def _text(value: Optional[bytes]) -> str:
    return value.decode("utf-8", "replace") if value else ""


# ---- the Python view --------------------------------------------------------------


class Event(NamedTuple):
    kind: str  # "malloc", "free", ... (KIND_NAMES)
    address: int
    size: int  # 0 for frees, the released length for munmap
    thread_id: int  # the tracer's thread index (Capture.threads)
    time_ns: int  # since the capture started
    stack_id: int  # 0: no stack

    @property
    def is_allocation(self) -> bool:
        return self.kind in ALLOCATION_KINDS

    @property
    def is_free(self) -> bool:
        return self.kind in FREE_KINDS


class Frame(NamedTuple):
    """One symbolised frame. kind: "pyx" (native code on a .pyx line), "native",
    "python" (interpreter frame), "unknown", "cut" (where the middle of a deep stack
    was dropped: "… frames cut"), or "cython-c" (a Cython function at a line of its
    generated C: a module built without #line directives whose .c was not found)."""

    function: str
    file: str
    line: int
    kind: str
    object: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.file else (self.object or "?")
        return f"{self.function} ({where})"


FRAME_KINDS = ("pyx", "native", "python", "unknown", "cut", "cython-c")


class PyFrame(NamedTuple):
    id: int
    line: int
    function: str
    file: str


@dataclass(frozen=True)
class CaptureHeader:
    version: int
    pid: int
    start_time_ns: int
    flags: int
    parent_pid: int
    python_version: str
    executable: str
    argv: Tuple[str, ...]
    time_resolution_ns: int = 0  # events' time unit (format 2); 0: not recorded
    ticking_clock: bool = False  # format 2: times came from the clock thread's ticks
    max_frames: int = 0  # format 3: frames a stack keeps at most (deeper: cut in the middle); 0: not recorded

    @property
    def native_traced(self) -> bool:
        return bool(self.flags & FLAG_NATIVE)

    @property
    def pymem_traced(self) -> bool:
        return bool(self.flags & FLAG_PYMEM)

    @property
    def python_frames(self) -> bool:
        return bool(self.flags & FLAG_PYTHON_FRAMES)

    @property
    def forked_child(self) -> bool:
        return bool(self.flags & FLAG_FORKED_CHILD)

    @property
    def attached(self) -> bool:
        """Tracing started while the process was running (cytool attach), at start_time_ns."""
        return bool(self.flags & FLAG_ATTACHED)


@dataclass(frozen=True)
class ThreadInfo:
    id: int
    tid: int
    name: str
    nevents: int


@dataclass(frozen=True)
class LoadedObject:
    id: int
    load_bias: int
    path: str
    build_id: str  # hex
    segments: Tuple[Tuple[int, int], ...]
    unload_time_ns: Optional[int]
    load_generation: int = 0  # format 3 (FORMAT.md, "Load generations")
    unload_generation: Optional[int] = None


@dataclass(frozen=True)
class RawStack:
    """A stack as recorded: frame words innermost first (FORMAT.md), its load generation,
    and how many frames were dropped from its middle (cut) after the first `cut_at`."""

    words: Tuple[int, ...]
    generation: int = 0
    cut: int = 0
    cut_at: int = 0


@dataclass(frozen=True)
class WriteLoss:
    """The capture could not be written for a while (a LOSS record)."""

    from_ns: int
    until_ns: int
    events: int
    frames: int
    reason: str


@dataclass(frozen=True)
class Takeover:
    """Another tracer replaced one of the tracer's hooks (state "taken") or gave it back
    ("restored"): a GOT/PLT slot of `object` or a PyMem domain ("raw", "mem", "obj")."""

    time_ns: int
    what: str  # "got" or "pymem"
    object: str  # the object's path (what "got") or the domain name
    function: str
    target: str  # the object the slot now leads into ("" unknown)
    state: str  # "taken" or "restored"


@dataclass(frozen=True)
class CaptureStats:
    """The tracer's own counts (STATS record, written when tracing stops): events
    recorded, dropped (could not be recorded), lost (recorded but never written)."""

    events: int
    dropped: int
    stacks: int
    frames: int
    lost: int = 0


class EventList(Sequence[Event]):
    """The capture's events in time order. The C reader does not keep them: the first
    access makes the whole array (cya_get_events, about 40 bytes an event; CytoolError
    when that fails); len() needs no array. Reports do not use it (they stream)."""

    _CHUNK = 65536

    def __init__(self, capture: "Capture", count: int):
        self._capture = capture  # keeps the C memory alive
        self._address: Optional[int] = None  # the C array, made on first access
        self._count = count

    def __len__(self) -> int:
        return self._count

    def _decode(self, start: int, stop: int) -> List[Event]:
        if self._count and self._capture._handle is None:
            raise ValueError("the capture is closed")
        if self._address is None:
            count = ctypes.c_size_t()
            address = library().cya_get_events(self._capture._handle, ctypes.byref(count)) if self._count else 0
            if self._count and not address:
                raise CytoolError(
                    f"{self._capture.path}: cannot decode its {self._count:,} events again (out of memory, or the "
                    "file changed since it was opened)",
                    hint="a report streams the events instead: `cytool report`",
                )
            self._address = address or 0
        size = _EVENT_STRUCT.size
        raw = ctypes.string_at(self._address + start * size, (stop - start) * size)
        names = KIND_NAMES
        return [
            Event(names.get(kind, f"kind{kind}"), address, nbytes, thread, time, stack)
            for time, address, nbytes, stack, thread, kind in _EVENT_STRUCT.iter_unpack(raw)
        ]

    @overload
    def __getitem__(self, index: int) -> Event: ...

    @overload
    def __getitem__(self, index: slice) -> List[Event]: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[Event, List[Event]]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self._decode(start, max(start, stop))
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("event index out of range")
        return self._decode(index, index + 1)[0]

    def __iter__(self) -> Iterator[Event]:
        for start in range(0, self._count, self._CHUNK):
            yield from self._decode(start, min(self._count, start + self._CHUNK))


class NativeHandle:
    """An object that owns handles of libcyanalyze: `close()` frees them (and may be called
    again); a context manager; closed when garbage-collected."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: "_Owner") -> "_Owner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


_Owner = TypeVar("_Owner", bound=NativeHandle)


class Capture(NativeHandle):
    """A capture read into memory by the C reader. Close it (or use `with`) to free it."""

    def __init__(self, path: Path, handle: int):
        self.path = path
        self._handle: Optional[int] = handle
        self._symbols: Optional[int] = None
        self._stacks: Optional[Dict[int, List[Frame]]] = None
        lib = library()
        h = lib.cya_get_header(handle).contents
        self.header = CaptureHeader(
            version=h.version,
            pid=h.pid,
            start_time_ns=h.start_time_ns,
            flags=h.flags,
            parent_pid=h.parent_pid,
            python_version=_text(h.python_version),
            executable=_text(h.executable),
            argv=tuple(_text(h.argv[i]) for i in range(h.argc)),
            time_resolution_ns=h.time_resolution_ns,
            ticking_clock=h.clock == 1,
            max_frames=h.max_frames,
        )
        s = lib.cya_get_status(handle).contents
        self.truncated = bool(s.truncated)
        self.complete = bool(s.complete)
        self.file_bytes = s.file_bytes
        self.recovered_bytes = s.recovered_bytes
        self.frames_read = s.frames
        self.records = s.records
        self.end_time_ns = s.end_time_ns
        self.missing_stacks = s.missing_stacks
        self.missing_pyframes = s.missing_pyframes
        self.problem = _text(s.problem)
        self.stats: Optional[CaptureStats] = (
            CaptureStats(s.stats_events, s.stats_dropped, s.stats_stacks, s.stats_frames, s.stats_lost)
            if s.has_stats
            else None
        )
        self.damaged_frames = s.damaged_frames  # frames skipped (damaged or malformed)
        self.missing_batches = s.missing_batches  # batches absent (sequence gaps)
        self.duplicate_batches = s.duplicate_batches  # batches read twice (copies ignored)
        self.missing_events = s.missing_events  # recorded by the tracer, not in the file
        self.last_progress_ns = s.last_progress_ns  # the tracer's last sign of life (0: none)
        self.live = bool(s.live)  # still being written by a running process
        # finished for an exec of `exec_what` at exec_time_ns (None: no exec), which failed
        # (exec_failure: why; "" when it did not)
        self.exec_what: Optional[str] = _text(s.exec_what) if s.exec_seen else None
        self.exec_time_ns = s.exec_time_ns
        self.exec_failure = _text(s.exec_failure)
        # one line per damaged frame, gap, repeat ... (capped)
        self.notes: List[str] = [line for line in _text(s.notes).splitlines() if line]
        count = ctypes.c_size_t()
        self.events = EventList(self, lib.cya_count_events(handle))

        threads = lib.cya_get_threads(handle, ctypes.byref(count))
        self.threads: Dict[int, ThreadInfo] = {}
        for i in range(count.value):
            t = threads[i]
            self.threads[t.id] = ThreadInfo(t.id, t.tid, _text(t.name), t.nevents)

        objects = lib.cya_get_objects(handle, ctypes.byref(count))
        self.objects: List[LoadedObject] = []
        for i in range(count.value):
            o = objects[i]
            self.objects.append(
                LoadedObject(
                    id=o.id,
                    load_bias=o.load_bias,
                    path=_text(o.path),
                    build_id=bytes(o.build_id[: o.build_id_len]).hex() if o.build_id_len else "",
                    segments=tuple((o.segments[2 * j], o.segments[2 * j + 1]) for j in range(o.nsegments)),
                    unload_time_ns=None if o.unload_time_ns < 0 else o.unload_time_ns,
                    load_generation=o.load_generation,
                    unload_generation=None if o.unload_generation == 2**64 - 1 else o.unload_generation,
                )
            )
        paths = {o.id: o.path for o in self.objects}

        losses = lib.cya_get_losses(handle, ctypes.byref(count))
        self.write_losses: List[WriteLoss] = [
            WriteLoss(l.from_ns, l.until_ns, l.events, l.frames, _text(l.reason))
            for l in (losses[i] for i in range(count.value))
        ]
        takeovers = lib.cya_get_takeovers(handle, ctypes.byref(count))
        domains = ("raw", "mem", "obj")
        self.takeovers: List[Takeover] = []
        for i in range(count.value):
            t = takeovers[i]
            if t.what == 0:
                what, where = "got", paths.get(t.object, f"object {t.object}")
            else:
                what, where = "pymem", domains[t.object] if t.object < 3 else f"domain {t.object}"
            self.takeovers.append(
                Takeover(t.time_ns, what, where, _text(t.function), _text(t.target), "taken" if t.state else "restored")
            )

        pyframes = lib.cya_get_pyframes(handle, ctypes.byref(count))
        self.pyframes: Dict[int, PyFrame] = {}
        for i in range(count.value):
            f = pyframes[i]
            self.pyframes[f.id] = PyFrame(f.id, f.line, _text(f.function), _text(f.file))

        self._raw_stacks: Optional[Dict[int, RawStack]] = None  # read on first use

    @property
    def stack_info(self) -> Dict[int, RawStack]:
        """stack id -> its frame words, load generation and cut (as recorded)."""
        if self._raw_stacks is None:
            count = ctypes.c_size_t()
            stacks = library().cya_get_stacks(self.handle, ctypes.byref(count))
            info: Dict[int, RawStack] = {}
            for i in range(count.value):
                st = stacks[i]
                words: Tuple[int, ...] = ()
                if st.nframes:
                    address = ctypes.cast(st.frames, ctypes.c_void_p).value or 0
                    words = tuple((_u64 * st.nframes).from_address(address))
                info[st.id] = RawStack(words, st.generation, st.cut, st.cut_at)
            self._raw_stacks = info
        return self._raw_stacks

    @property
    def raw_stacks(self) -> Dict[int, List[int]]:
        """stack id -> frame words, innermost first (FORMAT.md)."""
        return {sid: list(st.words) for sid, st in self.stack_info.items()}

    # -- lifetime ------------------------------------------------------------------

    @property
    def handle(self) -> int:
        if self._handle is None:
            raise ValueError("the capture is closed")
        return self._handle

    def close(self) -> None:
        lib = library()
        if self._symbols is not None:
            lib.cya_symbols_close(self._symbols)
            self._symbols = None
        if self._handle is not None:
            lib.cya_close(self._handle)
            self._handle = None
            self.events = EventList(self, 0)

    @property
    def order_conflicts(self) -> Tuple[int, int]:
        """(events, time in ns of the first one's tick): events that no order of the threads
        of their tick could place with their block in the right state (an allocation of a
        live block, a free of a dead one; (0, 0) for a capture the tracer wrote correctly).
        Makes the events (`events`) if they are not made yet. ValueError once closed."""
        handle = self.handle
        if len(self.events):
            self.events[0]
        first = _u64()
        count = library().cya_order_conflicts(handle, ctypes.byref(first))
        return count, first.value

    # -- symbols -------------------------------------------------------------------

    @property
    def symbols_handle(self) -> int:
        """The C symbol table (cya_symbols), built on first use."""
        if self._symbols is None:
            lib = library()
            if not hasattr(lib, "cya_symbolize") or lib.cya_symbolize.restype is not ctypes.c_void_p:
                raise CytoolError("this libcyanalyze.so has no symboliser", hint="run `make -C runtime`")
            if hasattr(lib, "cya_symbolize_search") and lib.cya_symbolize_search.restype is ctypes.c_void_p:
                handle = lib.cya_symbolize_search(self.handle, os.fsencode(symbol_search_path()))
            else:
                handle = lib.cya_symbolize(self.handle)
            if not handle:
                raise CytoolError(f"{self.path}: out of memory while symbolising")
            self._symbols = handle
        return self._symbols

    @property
    def symbol_warnings(self) -> List[str]:
        """Why some frames could not be symbolised (deleted or changed modules)."""
        text = _text(library().cya_symbols_warnings(self.symbols_handle))
        return [line for line in text.splitlines() if line]

    def locations(self) -> List[Frame]:
        lib = library()
        count = ctypes.c_size_t()
        table = lib.cya_symbols_locations(self.symbols_handle, ctypes.byref(count))
        return [
            Frame(_text(loc.function), _text(loc.file), loc.line, FRAME_KINDS[loc.kind if loc.kind < len(FRAME_KINDS) else 3], _text(loc.object))
            for loc in (table[i] for i in range(count.value))
        ]

    @property
    def stacks(self) -> Dict[int, List[Frame]]:
        """stack id -> symbolised frames, innermost first (inline frames expanded,
        Cython helper frames folded into their .pyx caller)."""
        if self._stacks is None:
            lib = library()
            locations = self.locations()
            count = ctypes.c_size_t()
            stacks: Dict[int, List[Frame]] = {}
            for stack_id in self.stack_info:
                indices = lib.cya_symbols_stack(self.symbols_handle, stack_id, ctypes.byref(count))
                stacks[stack_id] = [locations[indices[i]] for i in range(count.value)]
            self._stacks = stacks
        return self._stacks

    # -- summaries -----------------------------------------------------------------

    def truncation_message(self) -> str:
        """One sentence on what is missing and why ("" for a complete capture): the
        events read, and the events the tracer recorded that are not in the file."""
        if not self.truncated:
            return ""
        causes = []
        if self.live:
            causes.append("it is still being written by a running process")
        elif not self.complete:
            last = max(self.end_time_ns, self.last_progress_ns)
            causes.append(f"it has no end: the traced process was killed or crashed after {last / 1e9:.3f} s, its last sign of life")
        if self.damaged_frames:
            causes.append(f"{self.damaged_frames} damaged frame{'s' if self.damaged_frames != 1 else ''} skipped")
        if self.missing_batches:
            causes.append(f"{self.missing_batches} batch{'es' if self.missing_batches != 1 else ''} of events missing")
        if self.exec_failure:
            causes.append(f"tracing ended at {self.exec_time_ns / 1e9:.3f} s for an exec of {self.exec_what} that "
                          f"failed ({self.exec_failure}): the program went on untraced")
        if not causes:
            causes.append(self.problem or "events are missing")
        read = len(self.events)
        message = f"{self.path}: the capture is truncated ({'; '.join(causes)}): {read:,} event{'s' if read != 1 else ''} read"
        if self.missing_events:
            message += f", {self.missing_events:,} that the tracer recorded are missing"
        if not self.complete and not self.live:
            window = "~10 ms" if self.header.version >= 3 else "1-2 s"
            message += f"; events of its last {window} may be missing as well"
        return message

def symbol_search_path() -> str:
    """Where the symboliser looks, by build-id, for a module deleted or rebuilt since
    the capture: every entry of cytool's build cache, then $CYTOOL_SYMBOL_PATH
    (colon-separated directory glob patterns)."""
    from cytool.cache import cache_root

    patterns = [str(cache_root() / "entries" / "*")]
    extra = os.environ.get("CYTOOL_SYMBOL_PATH", "")
    patterns += [p for p in extra.split(":") if p]
    return ":".join(patterns)


def read_capture(path: Union[str, "os.PathLike[str]"]) -> Capture:
    """Read a whole capture file. Raises CytoolError for a file that is missing, not a
    capture, from a newer format, or with a damaged header."""
    path = Path(path)
    lib = library()
    error = ctypes.c_int(0)
    buffer = ctypes.create_string_buffer(1024)
    handle = lib.cya_open(os.fsencode(path), ctypes.byref(error), buffer, len(buffer))
    if not handle:
        message = _text(buffer.value) or f"{path}: cannot read the capture"
        hints = {
            1: "check the path",
            2: "give it a capture written by `cytool profile` (or cytool.Tracker / CYTOOL_PROFILE)",
            3: "upgrade cytool to read this capture",
            4: "the file is damaged or was cut off before its header was written",
        }
        raise CytoolError(message, hint=hints.get(error.value, ""), exit_code=2)
    return Capture(path, handle)
