"""Where a `.pyx` line or a Cython function's body is in the machine code.

Owns reading the line table of a loaded module for the cy-* commands: which addresses a
line has inside a given Cython function (out of line, or inlined into a caller by an
optimising build), where a function's body starts once its set-up is done, whether an
optimised function's first-statement address is run by every call (else its entry, as
gdb's `break FUNC` places it, is where a breakpoint on the function goes), the build's
optimisation level (from the compiler's DW_AT_producer), and honest reasons when a line
has no address where it was asked for.

Why the set-up matters: Cython emits the initialisers of a function's locals
(`PyObject *__pyx_v_y = NULL`) under the `#line` of the first body line, then the set-up
(closure scope, argument unpacking, reference-nanny context) under the def line, then the
first statement under its own line again. Stopping at the lowest address of the first
body line stops before the locals exist. So the body's entry is the first row of that
line after the last def-line row of the set-up.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Tuple

import gdb  # type: ignore

import cytool_gdb_state as state
from cytool_gdb_debuginfo import Function, Module, c_name

Rows = List[Tuple[int, int]]  # (pc, line), ascending pc
Runs = List[Tuple[int, int, bool]]  # (pc, line, artifact): where a line's code starts again
_rows_cache: Dict[Tuple[str, str], Rows] = {}
_runs_cache: Dict[Tuple[str, str], Runs] = {}
_level_cache: Dict[str, str] = {}
# gdb.decode_line by spec ("path:line", a C name): 10 ms and more in a big module, and
# cy-step places a breakpoint at every function's first statement at each step
_sals_cache: Dict[str, list] = {}


def forget() -> None:
    """Addresses change with every process: drop what was read from the last one."""
    _rows_cache.clear()
    _runs_cache.clear()
    _level_cache.clear()
    _sals_cache.clear()


def forget_lines() -> None:
    """An object was loaded: a spec may now have more places (gdb.events.new_objfile)."""
    _sals_cache.clear()


def decode_line(spec: str) -> list:
    """gdb.decode_line(spec)[1] as a list (empty for none), kept until the next object
    loads or the process ends. Raises gdb.error as gdb.decode_line does (not kept)."""
    found = _sals_cache.get(spec)
    if found is None:
        found = list(gdb.decode_line(spec)[1] or ())
        _sals_cache[spec] = found
    return found


# -- blocks -------------------------------------------------------------------------------


def function_names_at(pc: int) -> List[str]:
    """C function names around pc, innermost first, inlined functions included, as Cython
    wrote them (a C++ block's signature dropped: cytool_gdb_debuginfo.c_name)."""
    names: List[str] = []
    try:
        block = gdb.block_for_pc(pc)
    except (gdb.error, RuntimeError):
        return names
    while block is not None:
        if block.function is not None:
            names.append(c_name(block.function.name))
        block = block.superblock
    return names


def innermost_cython(pc: int, module: Module) -> Optional[Function]:
    for name in function_names_at(pc):
        function = module.by_cname.get(name)
        if function is not None:
            return function
    return None


def inlined_into(pc: int, function: Function) -> Optional[str]:
    """The Cython function that `function`'s code at pc is inlined into, or None when pc
    is in its own out-of-line body (or only in Cython's own Python wrapper of it)."""
    names = function_names_at(pc)
    if function.cname not in names:
        return None
    for name in names[names.index(function.cname) + 1:]:
        caller = function.module.by_cname.get(name)
        if caller is not None and caller is not function:
            return caller.display_name + "()"
    return None


def _copy_of(pc: int, cname: str) -> int:
    """The start of the block of this copy of the function (out of line or one inlined copy)."""
    try:
        block = gdb.block_for_pc(pc)
    except (gdb.error, RuntimeError):
        return 0
    while block is not None:
        if block.function is not None and c_name(block.function.name) == cname:
            return block.start
        block = block.superblock
    return 0


# -- the line table -------------------------------------------------------------------------


def _symtab(path: str, line: int) -> Optional["gdb.Symtab"]:
    for spec in (f"{path}:{line}", f"{os.path.basename(path)}:{line}"):
        try:
            sals = decode_line(spec)
        except gdb.error:
            continue
        for sal in sals:
            if sal.symtab is not None:
                return sal.symtab
    return None


def sals_for_line(path: str, line: int) -> list:
    """gdb's own placement of `break path:line` (one address per function or inlined copy)."""
    for spec in (f"{path}:{line}", f"{os.path.basename(path)}:{line}"):
        try:
            sals = decode_line(spec)
        except gdb.error:
            continue
        if sals:
            return [s for s in sals if s.line == line]
    return []


def line_pcs(path: str, line: int) -> List[int]:
    """Every address the line table gives this line (all functions)."""
    symtab = _symtab(path, line)
    if symtab is None:
        return []
    try:
        return sorted({entry.pc for entry in (symtab.linetable().line(line) or ())})
    except (gdb.error, AttributeError, RuntimeError):
        return []


def function_rows(function: Function) -> Rows:
    """(pc, line) rows of the function's def file inside its out-of-line body."""
    key = (function.module.name, function.cname)
    if key in _rows_cache:
        return _rows_cache[key]
    rows: Rows = []
    block = state.function_block(function)
    symbol = block.function if block is not None else None
    if block is not None and symbol is not None and symbol.symtab is not None:
        try:
            rows = sorted((entry.pc, entry.line) for entry in symbol.symtab.linetable()
                          if block.start <= entry.pc < block.end)
        except (gdb.error, RuntimeError):
            rows = []
    if rows and getattr(function.module, "c_lines", False):
        rows = _as_pyx_rows(function, rows)
    _rows_cache[key] = rows
    return rows


def _as_pyx_rows(function: Function, rows: Rows) -> Rows:
    """C line-table rows of a module built without #line, as rows of the .pyx lines
    the C file's position comments give (rows of other files left out)."""
    source = os.path.basename(function.source or "")
    mapped: Rows = []
    for pc, c_line in rows:
        position = function.module.pyx_position(c_line)
        if position is not None and os.path.basename(position[0]) == source:
            mapped.append((pc, position[1]))
    return mapped


def function_runs(function: Function) -> Runs:
    """The function's line-table rows merged into runs (a new run where the line
    changes), each marked artifact or not by matching the k-th run of a line with the
    k-th C statement of that line (cytool_gdb_debuginfo.c_statement_lines). Without the
    C file, nothing is marked."""
    key = (function.module.name, function.cname)
    if key in _runs_cache:
        return _runs_cache[key]
    runs: List[Tuple[int, int]] = []
    for pc, line in function_rows(function):
        if not runs or runs[-1][1] != line:
            runs.append((pc, line))
    source = os.path.basename(function.source or "")
    entries = [entry for entry in function.module.c_statement_lines(function) if entry.source == source]
    statements = _compiled_statements(entries, runs)
    flags: Dict[int, List[bool]] = {}
    for line, artifact in statements:
        flags.setdefault(line, []).append(artifact)
    seen: Dict[int, int] = {}
    marked: Runs = []
    for pc, line in runs:
        index = seen.get(line, 0)
        seen[line] = index + 1
        line_flags = flags.get(line, [])
        marked.append((pc, line, line_flags[index] if index < len(line_flags) else False))
    _runs_cache[key] = marked
    return marked


def _merged(entries: list, taken: set) -> List[Tuple[int, bool]]:
    """(line, artifact) of the entries taken, consecutive repeats of a line merged (one
    code run in the line table); a merged entry is an artifact only if all its parts are."""
    statements: List[Tuple[int, bool]] = []
    for index, entry in enumerate(entries):
        if index not in taken:
            continue
        if statements and statements[-1][0] == entry.line:
            statements[-1] = (entry.line, statements[-1][1] and entry.artifact)
        else:
            statements.append((entry.line, entry.artifact))
    return statements


def _compiled_statements(entries: list, runs: List[Tuple[int, int]]) -> List[Tuple[int, bool]]:
    """The C statements that were compiled, as (line, artifact) runs in C order.

    An artifact inside #if/#else (the keyword-argument code of a call Cython writes for
    both CYTHON_VECTORCALL and not) may be in the branch that was not compiled; counted
    anyway it takes the place of the next statement's real run ("cy-next skips the
    `return` after a call with keywords"). Such artifacts are left out until the line
    table has more runs of their line than the statements left account for."""
    doubtful = [index for index, entry in enumerate(entries) if entry.artifact and entry.conditional]
    taken = set(range(len(entries))) - set(doubtful)
    if not doubtful:
        return _merged(entries, taken)
    run_counts: Dict[int, int] = {}
    for _, line in runs:
        run_counts[line] = run_counts.get(line, 0) + 1
    while True:
        statements = _merged(entries, taken)
        counts: Dict[int, int] = {}
        for line, _ in statements:
            counts[line] = counts.get(line, 0) + 1
        wanted = next((index for index in doubtful if index not in taken
                       and run_counts.get(entries[index].line, 0) > counts.get(entries[index].line, 0)), None)
        if wanted is None:
            return statements
        taken.add(wanted)


def is_artifact(function: Function, pc: int) -> bool:
    """True when pc is in code that only carries its line number by accident (see
    function_runs): stepping must not stop there."""
    runs = function_runs(function)
    index = row_index([(run[0], run[1]) for run in runs], pc)
    return index >= 0 and runs[index][2]


def first_real_run(function: Function, line: int) -> Optional[int]:
    """The start of the first run of `line` in the function that is not an artifact."""
    for pc, run_line, artifact in function_runs(function):
        if run_line == line and not artifact:
            return pc
    return None


def body_entry(function: Function) -> Optional[int]:
    """The address where the function's first statement starts once its set-up is done
    (locals initialised, closure scope loaded, arguments unpacked), in an -O0 build; None
    for an optimising build (its code is scheduled freely: gdb's own placement is used)."""
    block = state.function_block(function)
    if block is None or optimisation_level_at(block.start) != "-O0":
        return None
    first = function.first_statement() or function.lineno
    rows = function_rows(function)
    if first == function.lineno or not rows:
        # a lambda or a one-line def: all its rows carry the def line (gdb even merges them
        # into the previous function's), so the line table cannot say where the set-up ends
        return _after_argument_spills(block)
    entry = first_real_run(function, first)
    if entry is not None and function.module.c_statement_lines(function):
        return entry  # the C file told the initialisers' rows (artifacts) apart
    set_up_end = -1
    region_end = len(rows)
    for index, (_, line) in enumerate(rows):
        if line < function.lineno or line > first:
            region_end = index  # the body's later lines: the set-up is over
            break
        if line == function.lineno:
            set_up_end = index
    for pc, line in rows[set_up_end + 1:region_end]:
        if line == first:
            return pc
    candidates = [pc for pc, line in rows if line == first]
    return candidates[0] if candidates else None


# An -O0 x86-64 prologue: frame set-up, arguments stored from their registers, locals
# set to 0/NULL. AT&T and Intel syntax (gdb's disassembly-flavor).
_PROLOGUE = re.compile(
    r"^(endbr64|push\s+%?r\w+|mov\s+%rsp,%rbp|mov\s+rbp,rsp|sub\s+\$?(0x)?[0-9a-f]+,%rsp|sub\s+rsp,(0x)?[0-9a-f]+"
    r"|mov[a-z]*\s+%(r[sd]i|[re]?[sd]i|[re]?[cd]x|r[89]d?|xmm[0-7]),-?(0x)?[0-9a-f]*\(%rbp\)"
    r"|mov[a-z]*\s+\$0x0,-?(0x)?[0-9a-f]*\(%rbp\)"
    r"|mov[a-z]*\s+\w+ PTR \[rbp-(0x)?[0-9a-f]+\],(r[sd]i|[re]?[sd]i|[re]?[cd]x|r[89]d?|xmm[0-7]|0x0))(\s|$)"
)


def _after_argument_spills(block: "gdb.Block") -> int:
    """The first instruction after an -O0 x86-64 prologue (arguments readable from
    there on); on other architectures, gdb's own end of prologue."""
    try:
        architecture = gdb.selected_frame().architecture()
    except gdb.error:
        architecture = None
    if architecture is None or "x86-64" not in architecture.name():
        try:
            sals = gdb.decode_line(f"*{block.start:#x}")[1]
            return gdb.decode_line(block.function.name)[1][0].pc if sals else block.start
        except gdb.error:
            return block.start
    try:
        instructions = architecture.disassemble(block.start, block.end - 1, 64)
    except (gdb.error, gdb.MemoryError):
        return block.start
    for instruction in instructions:
        if not _PROLOGUE.match(instruction["asm"].strip()):
            return instruction["addr"]
    return block.start


def row_index(rows: Rows, pc: int) -> int:
    """Index of the row whose code holds pc (the last row starting at or before it)."""
    low, high = 0, len(rows)
    while low < high:
        middle = (low + high) // 2
        if rows[middle][0] <= pc:
            low = middle + 1
        else:
            high = middle
    return low - 1


def is_branch_tail(function: Function, pc: int, line: int) -> bool:
    """True when pc is in code of `line` that comes after the code of the lines nested in
    it: the jump out of an `if` branch (Python does not run that line again there), the
    next pass of a loop head (its target is assigned by then)."""
    rows = function_rows(function)
    index = row_index(rows, pc)
    if index < 0 or rows[index][1] != line:
        return False
    seen_nested = False
    for _, earlier in reversed(rows[:index]):
        if earlier > line:
            seen_nested = True
        elif earlier == line and seen_nested:
            return True
    return False


# -- optimisation level ---------------------------------------------------------------------

_LEVEL = re.compile(r"(?:^|\s)-O(\d|s|z|g|fast)?(?=\s|$)")


def optimisation_level(producer: Optional[str]) -> str:
    """`-O2` from `GNU C17 12.2.0 -mtune=generic -g -O2 ...` (the last -O wins; -O0 if none)."""
    found = _LEVEL.findall(producer or "")
    if not found:
        return "-O0"
    level = found[-1]
    return "-O" + (level if level != "" else "1")


def optimisation_level_at(pc: int) -> str:
    try:
        symtab = gdb.find_pc_line(pc).symtab
    except (gdb.error, RuntimeError):
        symtab = None
    if symtab is None:
        return "-O0"
    key = symtab.objfile.filename if symtab.objfile else symtab.filename
    if key not in _level_cache:
        try:
            _level_cache[key] = optimisation_level(symtab.producer)
        except (gdb.error, AttributeError, RuntimeError):
            _level_cache[key] = "-O0"
    return _level_cache[key]


def module_level(module: Module) -> Optional[str]:
    """The optimisation level the loaded module was compiled at, or None if not loaded."""
    for function in module.functions:
        block = state.function_block(function)
        if block is not None:
            return optimisation_level_at(block.start)
    return None


REBUILD_HINT = ("rebuild it at -O0 to debug every line (`cytool build -O0`, `cytool debug` on the file "
                "itself, or `cytool develop --debug` for a project)")


# -- placing a line in its owner --------------------------------------------------------------


class Placement:
    """Where one line of one Cython function was placed: its address and, for code an
    optimising build inlined elsewhere, the function it was inlined into."""

    def __init__(self, function: Function, pc: int, inlined: Optional[str]) -> None:
        self.function = function
        self.pc = pc
        self.inlined = inlined


def _is_inlined(block: "gdb.Block") -> bool:
    """Whether a function's block is an inlined copy (another function encloses it)."""
    outer = block.superblock
    while outer is not None and outer.function is None and not (outer.is_global or outer.is_static):
        outer = outer.superblock
    return outer is not None and not (outer.is_global or outer.is_static)


def _function_block(pc: int, cname: str) -> Optional["gdb.Block"]:
    """The block of function `cname` (out of line or an inlined copy) that holds pc."""
    try:
        block = gdb.block_for_pc(pc)
    except (gdb.error, RuntimeError):
        return None
    while block is not None and not (block.function is not None and c_name(block.function.name) == cname):
        block = block.superblock
    return block


def _enters(pc: int, block: "gdb.Block") -> bool:
    """Whether gdb takes a stop at pc for an entry into the inlined `block` (and so shows
    the caller): pc is the block's first address, or the instruction before pc is outside
    it (pc starts one of the address ranges an optimising build splits it into). The
    rule of gdb's skip_inline_frames (gdb/inline-frame.c, block_starting_point_at)."""
    if block.start == pc:
        return True
    try:
        before = gdb.block_for_pc(pc - 1)
    except (gdb.error, RuntimeError):
        return True
    while before is not None:
        if before.function is not None:
            if before.function.name == block.function.name and before.start == block.start and \
                    before.end == block.end:
                return False
            if not _is_inlined(before):
                return True
        before = before.superblock
    return True


def _starts_a_range(pc: int, cname: str) -> bool:
    """Whether pc starts one of the address ranges of an inlined copy of `cname` (not its
    first: gcc gives an inlined call in an unrolled loop one copy of several ranges)."""
    block = _function_block(pc, cname)
    return block is not None and block.start != pc and _is_inlined(block) and _enters(pc, block)


def past_inline_entry(pc: int, cname: str) -> int:
    """An address where a stop shows the function `cname` inlined there: gdb presents a
    stop where an inlined copy is entered (its first address, or the start of one of its
    address ranges) as a stop in its caller, unless a user breakpoint asked for it, and
    cytool's breakpoints are internal ones. So such an address becomes the next
    instruction that is inside the copy and not an entry (at most a few ahead); pc when
    there is none, or when pc is in an out-of-line body."""
    block = _function_block(pc, cname)
    if block is None or not _is_inlined(block):
        return pc
    try:
        architecture = gdb.selected_inferior().architecture()
    except (gdb.error, RuntimeError, AttributeError):
        return pc
    candidate = pc
    for _ in range(8):
        if not _enters(candidate, block):
            return candidate
        try:
            instructions = architecture.disassemble(candidate, count=2)
        except (gdb.error, gdb.MemoryError, RuntimeError):
            return pc
        if len(instructions) < 2:
            return pc
        following = instructions[1]["addr"]
        inside = _function_block(following, cname)
        if inside is None or inside.start != block.start or inside.end != block.end:
            return pc
        candidate = following
    return pc


def shown_position(placement: Placement) -> Optional[Tuple[str, int]]:
    """(path, line) that a stop at placement.pc shows for the Cython function, by gdb's
    rules: inlined functions entered at pc are hidden (innermost first, while each is
    entered there: see _enters), and a frame with a function inlined into it below shows
    the call site of that function (the inlined block's symbol carries DW_AT_call_line),
    else the line table's row at pc. In an optimising build this is not always the line
    asked for: the line's only instruction may be where the function's inlined copy is
    entered (past_inline_entry then moved on, to the next line's code), or the code of an
    inlined helper called on another line. .pyx positions for a module built without
    #line. None when gdb knows no block or line there, and when pc is still where the
    function's copy is entered: cytool tells that stop as the line asked for
    (cytool_gdb_stepping._report_inlined_entry)."""
    pc = placement.pc
    try:
        block = gdb.block_for_pc(pc)
    except (gdb.error, RuntimeError):
        return None
    chain: List["gdb.Block"] = []  # the function blocks around pc, innermost first
    while block is not None:
        if block.function is not None:
            chain.append(block)
        block = block.superblock
    names = [c_name(b.function.name) for b in chain]
    if placement.function.cname not in names:
        return None
    hidden = 0
    while hidden < len(chain) and _is_inlined(chain[hidden]) and _enters(pc, chain[hidden]):
        hidden += 1
    shown = names.index(placement.function.cname)  # the frame cytool shows
    if hidden > shown:
        return None
    try:
        if shown > 0:
            symbol = chain[shown - 1].function
            symtab, line = symbol.symtab, symbol.line
        else:
            sal = gdb.find_pc_line(pc)
            symtab, line = sal.symtab, sal.line
        if symtab is None or not line:
            return None
        path = symtab.fullname()
    except (gdb.error, RuntimeError):
        return None
    from cytool_gdb_frames import pyx_position

    function = placement.function.module.by_cname.get(names[shown], placement.function)
    return pyx_position(function, path, line)


# -- where every call of a function passes ----------------------------------------------------

# x86-64 instructions after which the next one is not always run (calls return)
_NOT_FALLING_THROUGH = re.compile(r"^(?:(?:bnd|notrack|rep[a-z]*)\s+)*(?:j[a-z]+|ret[a-z]*|ud2|hlt|int3)\b")


def _straight_line(start: int, limit: int = 512):
    """The addresses of the instructions run from `start` on, up to and including the
    first after which the next one is not always run (a jump, a return; calls return), at
    most `limit`. None at once on another architecture than x86-64 (not known)."""
    try:
        architecture = gdb.selected_inferior().architecture()
    except (gdb.error, RuntimeError, AttributeError):
        yield None
        return
    if "x86-64" not in architecture.name():
        yield None
        return
    address = start
    count = 0
    while count < limit:
        try:
            instructions = architecture.disassemble(address, count=32)
        except (gdb.error, gdb.MemoryError, RuntimeError):
            return
        if not instructions:
            return
        for instruction in instructions:
            yield instruction["addr"]
            count += 1
            if _NOT_FALLING_THROUGH.match(instruction["asm"].strip()) or count >= limit:
                return
        address = instructions[-1]["addr"] + instructions[-1]["length"]


def _falls_through(start: int, pc: int) -> bool:
    """Whether the code from `start` reaches pc without a jump on the way (calls return):
    then every pass through `start` runs pc. True on another architecture than x86-64
    (not checked), False when pc comes before `start` or more than 512 instructions on."""
    if pc == start:
        return True
    if pc < start:
        return False
    for address in _straight_line(start):
        if address is None or address == pc:
            return True
        if address > pc:
            return False
    return False


def _shown_in_own_source(function: Function, entry: int) -> int:
    """The first address from `entry` on (straight-line code, a few dozen instructions)
    where a stop shows a line of the function's own source file (shown_position), not a
    header's whose inlined function starts there too, and preferably a body line, not
    the def line (the prologue's); `entry` when there is none."""
    source = os.path.basename(function.source or "")
    first = None
    for address in _straight_line(entry, 48):
        if address is None:
            break
        shown = shown_position(Placement(function, address, None))
        if shown is not None and os.path.basename(shown[0]) == source:
            if shown[1] != function.lineno:
                return address
            first = address if first is None else first
    return first if first is not None else entry


def _in_order_after(function: Function, entry: int, pc: int) -> bool:
    """Whether pc comes after `entry` with only code of earlier lines of the function
    between them (a cpdef method's dispatch test, say, before the first statement), as
    the first statement's code does; not an error path or the function's cold part (it
    comes before the entry, or after code of the lines that follow it). For the
    function's out-of-line body, whose rows are known."""
    if pc <= entry:
        return False
    rows = function_rows(function)
    if not rows or not rows[0][0] <= entry <= rows[-1][0]:
        return False
    line = next((l for p, l in reversed(rows) if p <= pc), None)
    if line is None:
        return False
    return all(earlier <= line for p, earlier in rows if entry <= p < pc)


def function_entries(function: Function) -> List[int]:
    """Where gdb's `break FUNC` stops (after the prologue of the out-of-line body, at the
    entry of each copy inlined elsewhere): what every call of the function runs. A copy
    inlined into another copy of itself (gcc's partial inlining) is left out: its outer
    copy's entry comes first. [] when gdb does not know the function."""
    try:
        sals = gdb.decode_line(function.cname)[1]
    except gdb.error:
        return []
    pcs = [s.pc for s in sals or ()]
    try:
        temporary = gdb.Breakpoint(function.cname, internal=True)
    except (gdb.error, RuntimeError):
        temporary = None
    if temporary is not None:
        try:
            pcs = [location.address for location in getattr(temporary, "locations", None) or ()] or pcs
        finally:
            temporary.delete()
    entries: List[int] = []
    for pc in sorted(set(pcs)):
        if function_names_at(pc).count(function.cname) > 1:
            continue
        entries.append(pc)
    return entries


def run_on_every_call(function: Function, found: List[Placement]) -> Tuple[List[Placement], bool]:
    """The stops of a breakpoint on the function itself (by name or def line) in an
    optimised build: in its out-of-line body, the placement of the line asked for if the
    code from the body's entry (function_entries) falls through to it or reaches it past
    only earlier lines (_in_order_after), else the entry itself (moved on to where a stop
    shows the function's own source). Inlined copies are left as placed: gcc may split
    one over several paths, and the copy's entry gdb names need not be on the one taken.
    Why: asked for its first statement, gdb may know that line only at an address few
    calls run: the statement's own row at the entry dropped (gdb keeps one file's rows at
    an address, and an inlined header function starts there too), leaving a row on an
    error path or in the function's `.cold` part, where the breakpoint never stops.
    Returns (stops, whether the entry replaced the placement or stands for a body
    without one)."""
    body = state.function_block(function)
    entries = [entry for entry in function_entries(function)
               if body is not None and _copy_of(entry, function.cname) == body.start]
    if not entries:
        return found, False
    stops: List[Placement] = []
    replaced = False
    for entry in entries:
        copy = _copy_of(entry, function.cname)
        mine = [p for p in found if _copy_of(p.pc, function.cname) == copy]
        good = [p for p in mine if _falls_through(entry, p.pc) or _in_order_after(function, entry, p.pc)]
        if good:
            stops.append(good[0])
        else:
            pc = _shown_in_own_source(function, past_inline_entry(entry, function.cname))
            stops.append(Placement(function, pc, inlined_into(pc, function)))
            replaced = True
    copies = {_copy_of(entry, function.cname) for entry in entries}
    stops.extend(p for p in found if _copy_of(p.pc, function.cname) not in copies)
    return stops, replaced


def place_line(path: str, line: int, owners: List[Function],
               first_statement: bool) -> Tuple[List[Placement], Optional[str]]:
    """Addresses of path:line inside each owner function, or ([], the reason it has none)."""
    if owners and state.is_foreign(owners[0].module) and (owners[0].module.c_lines or not owners[0].lines):
        found, refusal = _place_without_line_directives(path, line, owners, first_statement)
    else:
        found, refusal = _place_line(path, line, owners, first_statement)
    for placement in found:
        placement.pc = past_inline_entry(placement.pc, placement.function.cname)
    return found, refusal


def _place_line(path: str, line: int, owners: List[Function],
                first_statement: bool) -> Tuple[List[Placement], Optional[str]]:
    placed: List[Placement] = []
    sals = sals_for_line(path, line)
    for function in owners:
        pcs: List[int] = []
        if first_statement:
            entry = body_entry(function)
            if entry is not None:
                pcs = [entry]
        if not pcs and state.function_block(function) is not None and \
                optimisation_level_at(state.function_block(function).start) == "-O0":
            real = first_real_run(function, line)
            if real is not None:
                pcs = [real]  # not an artifact row gdb would take for the line
        if not pcs:
            pcs = [s.pc for s in sals if function.cname in function_names_at(s.pc)]
            # gdb gives one address per function; an optimising build may hold several
            # copies of this one there (inlined more than once, a loop unrolled): each
            # copy's first address of the line too
            pcs += [pc for pc in line_pcs(path, line) if function.cname in function_names_at(pc)]
        if not pcs:
            pcs = [pc for pc in line_pcs(path, line) if function.cname in function_names_at(pc)]
        seen = set()
        for pc in sorted(set(pcs)):
            copy = _copy_of(pc, function.cname)
            if copy in seen and not _starts_a_range(pc, function.cname):
                continue  # one address per copy of the function (gdb does the same) ...
            seen.add(copy)  # ... and per address range of an inlined copy (an unrolled loop's)
            placed.append(Placement(function, pc, inlined_into(pc, function)))
        if not pcs and state.function_block(function) is None:
            placed.extend(_merged_into_callers(path, line, function))
    if placed:
        return placed, None
    return [], _no_code_reason(path, line, owners)


def _place_without_line_directives(path: str, line: int, owners: List[Function],
                                   first_statement: bool) -> Tuple[List[Placement], Optional[str]]:
    """Placement in a module built without #line (cytool_gdb_foreign): the line table
    speaks C, so a .pyx line is the C lines the position comments give it, in the owner
    (its own body or a copy inlined elsewhere); a function without known lines (no C
    file) is its entry, as gdb's `break` would place it."""
    placed: List[Placement] = []
    for function in owners:
        module = function.module
        pcs: List[int] = []
        if function.lines and line:
            for c_line in module.c_lines_of(function, path, line):
                pcs = [pc for pc in _c_line_pcs(module.c_filename, c_line) if function.cname in function_names_at(pc)]
                if pcs:
                    break
        if not pcs and first_statement and (not function.lines or not _has_line_table(function)):
            pcs = _entry_pcs(function)  # no .pyx lines known, or no line table to find them in
        seen = set()
        for pc in sorted(pcs):
            copy = _copy_of(pc, function.cname)
            if copy in seen and copy:
                continue
            seen.add(copy)
            placed.append(Placement(function, pc, inlined_into(pc, function)))
    if placed:
        return placed, None
    function = owners[0] if owners else None
    if function is not None and function.lines and not _has_line_table(function):
        return [], (f"{function.module.name} has no line table (built without -g): only its functions' entries can "
                    f"be broken on (cy-break {function.qualified_name}); "
                    "rebuild it with `cytool develop` for its lines")
    return [], _no_code_reason(path, line, owners)


def _c_line_pcs(c_filename: str, c_line: int) -> List[int]:
    """gdb's addresses for line `c_line` of a C file (none when it has no code there)."""
    for spec in (f"{c_filename}:{c_line}", f"{os.path.basename(c_filename)}:{c_line}"):
        try:
            sals = decode_line(spec)
        except gdb.error:
            continue
        if sals:
            return [s.pc for s in sals if s.line == c_line]
    return []


def _entry_pcs(function: Function) -> List[int]:
    """Where gdb's `break NAME` stops: after the prologue of the function (or of each
    copy inlined elsewhere), else of its Python wrapper."""
    for cname in [function.cname] + list(getattr(function, "wrappers", [])):
        try:
            sals = decode_line(cname)
        except gdb.error:
            continue
        if sals:
            return [s.pc for s in sals]
    return []


def _has_line_table(function: Function) -> bool:
    for pc in _entry_pcs(function):
        try:
            if gdb.find_pc_line(pc).symtab is not None:
                return True
        except (gdb.error, RuntimeError):
            continue
    return False


def _merged_into_callers(path: str, line: int, function: Function) -> List[Placement]:
    """A function with no body of its own (inlined everywhere) whose line's code an
    optimising build merged into its Cython callers without an inline record: the
    line's addresses inside those callers, one per caller."""
    placed: List[Placement] = []
    hosts = set()
    for pc in line_pcs(path, line):
        host = innermost_cython(pc, function.module)
        if host is None or host is function or host.is_module_init or host.cname in hosts:
            continue
        hosts.add(host.cname)
        placed.append(Placement(function, pc, host.display_name + "()"))
    return placed


def _no_code_reason(path: str, line: int, owners: List[Function]) -> str:
    name = os.path.basename(path)
    owner_names = ", ".join(f.display_name + "()" for f in owners)
    module = owners[0].module if owners else None
    level = module_level(module) if module is not None else None
    elsewhere: List[str] = []
    for pc in line_pcs(path, line):
        names = function_names_at(pc)
        if names and names[0] not in elsewhere:
            elsewhere.append(names[0])
    if level and level != "-O0":
        if elsewhere:
            where = ", ".join(_describe_c_function(module, n) for n in elsewhere[:3])
            return (f"{name}:{line} has code only in {where} in this {level} build of {module.name}, "
                    f"none in {owner_names}: the compiler moved or merged it; {REBUILD_HINT}")
        return (f"{name}:{line} has no code left in this {level} build of {module.name} "
                f"(the compiler optimised it away); {REBUILD_HINT}")
    return f"{name}:{line} has no code in {owner_names}"


def _describe_c_function(module: Optional[Module], cname: str) -> str:
    function = module.by_cname.get(cname) if module is not None else None
    if function is not None:
        return function.display_name + "()"
    return cname + "()"
