"""Cython breakpoints: `.pyx` lines and Cython function names to the right addresses.

Owns cy-break's resolution. A `.pyx` line can have code in several C functions (the
`def` wrapper, argument parsing, module init, cached constants) and gdb, asked for a
line without code, silently slides to the next one. So a spec is first planned from
the debug XML (which Cython function owns the line; a def line or a function name means
the function's first statement; a line no function owns is refused, naming the nearest
line that has code), then, once the module's shared object is loaded
(`gdb.events.new_objfile`), its addresses are taken from the line table inside the owner
(or inside the callers it was inlined into: cytool_gdb_placement; a breakpoint on a
function in an optimised build only where every call passes, else where the function is
entered), and the breakpoint is announced at the line its stops will show (in an optimised build not always the line
asked for: then it says why). Each address becomes an internal gdb breakpoint; when the process exits they are deleted and the Cython
breakpoint goes back to pending, to be placed again on the next run.

A spec no known module matches yet (a module the program imports later, a file of a
package not loaded yet) stays pending and is planned again whenever a module's debug
information becomes known; one that never matched is reported when the program exits.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional

import gdb  # type: ignore

import cytool_gdb_placement as placement
import cytool_gdb_state as state
from cytool_gdb_debuginfo import Function, Module, is_blank_or_comment, nearest, prefer_generator_bodies, source_lines

CYTHON_SOURCES = (".pyx", ".pxi", ".pxd")


class Plan:
    """Where a spec will stop: a line of a file, in these functions."""

    def __init__(self, module: Module, path: str, line: int, functions: List[Function], note: str = "",
                 first_statement: bool = False, whole_function: bool = False) -> None:
        self.module = module
        self.path = path
        self.line = line
        self.functions = functions
        self.note = note
        self.first_statement = first_statement  # stop after the function's set-up
        self.whole_function = whole_function  # asked for by name or def line: any first line with code
        self.shown_line: Optional[int] = None  # the line its stops show, when not `line` (set when placed)
        self.at_entry = False  # (optimised build) placed where the function is entered, not at `line`

    def describe(self) -> str:
        if not self.path:  # a module without debug XML whose C file was not found
            names = ", ".join(f.qualified_name + "()" for f in self.functions)
            return f"{names} (its entry: no .pyx lines known)"
        names = ", ".join(f.display_name + "()" for f in self.functions)
        return f"{os.path.basename(self.path)}:{self.shown_line or self.line} in {names}"


class Location(gdb.Breakpoint):
    """One address of a Cython breakpoint (internal: cytool reports its stops itself)."""

    def __init__(self, address: int, owner: "CyBreakpoint", function: Function, inlined: Optional[str]) -> None:
        super().__init__(f"*{address:#x}", internal=True, temporary=False)
        self.owner = owner
        self.function = function
        self.inlined = inlined
        self.address = address


class CyBreakpoint:
    def __init__(self, number: int, spec: str, internal: bool = False) -> None:
        self.number = number
        self.spec = spec
        self.internal = internal
        self.plan: Optional[Plan] = None
        self.locations: List[Location] = []
        self.error: Optional[str] = None
        self.pending_reason = ""  # why it is not placed yet (shown by cy-break, reported at exit)
        self.placed_in_run = False

    @property
    def pending(self) -> bool:
        return not self.locations

    def clear(self) -> None:
        for location in self.locations:
            try:
                if location.is_valid():
                    location.delete()
            except RuntimeError:
                pass
        self.locations = []

    def delete(self) -> None:
        self.clear()
        if self in _breakpoints:
            _breakpoints.remove(self)

    def status(self) -> str:
        if self.locations:
            parts = []
            for location in self.locations:
                text = f"{location.address:#x}"
                if location.inlined:
                    text += f" (inlined into {location.inlined})"
                parts.append(text)
            return ", ".join(parts)
        return "pending" + (f": {self.pending_reason}" if self.pending_reason else "")


_breakpoints: List[CyBreakpoint] = []
_next_number = 1
_LINE_SPEC = re.compile(r"^(?:(?P<file>.+):)?(?P<line>\d+)$")
_FUNCTION_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def breakpoints() -> List[CyBreakpoint]:
    return list(_breakpoints)


def owner_of(breakpoint: "gdb.Breakpoint") -> Optional[CyBreakpoint]:
    return breakpoint.owner if isinstance(breakpoint, Location) else None


def next_number() -> int:
    global _next_number
    number = _next_number
    _next_number += 1
    return number


# -- planning (needs only the XML) --------------------------------------------------------


def _current_source() -> Optional[str]:
    from cytool_gdb_frames import location, selected_cython_frame

    frame = selected_cython_frame(required=False)
    if frame is not None:
        path, _ = location(frame)
        if path:
            return path
    return state.default_source


def check_syntax(spec: str) -> None:
    """CyError for a spec that cannot name a .pyx line or a Cython function."""
    match = _LINE_SPEC.match(spec)
    if match:
        file_name = match.group("file")
        if file_name and not file_name.endswith(CYTHON_SOURCES):
            raise state.CyError(
                f"{spec!r}: FILE:LINE needs a Cython source file ({', '.join(CYTHON_SOURCES)}; "
                f"a .py file for Python code), not {file_name!r}; a function is named without a line")
        return
    if not _FUNCTION_SPEC.match(spec):
        raise state.CyError(
            f"{spec!r} is neither FILE.pyx:LINE, LINE nor a function name (work, mod.work, Class.method, "
            "outer.inner, pkg.mod.func)")


def plan(spec: str) -> Optional[Plan]:
    """A Plan, None if no known module has the spec yet (pending), or CyError if it is wrong."""
    spec = spec.strip()
    check_syntax(spec)
    match = _LINE_SPEC.match(spec)
    if match:
        file_name = match.group("file") or _current_source()
        line = int(match.group("line"))
        if not file_name:
            return None
        modules = state.module_for_source(file_name)
        if not modules:
            return None
        module = modules[0]
        path = module.find_source(file_name)
        assert path is not None
        return plan_line(module, path, line)
    return plan_function(spec)


def _refuse_no_code(module: Module, path: str, line: int, what: str) -> None:
    name = os.path.basename(path)
    covered = set()
    for function in module.functions:
        covered.update(l for l in function.lines.get(path, ()) if not is_blank_or_comment(path, l))
    near = nearest(covered, line)
    hint = f"; the nearest line with code is {name}:{near}" if near else ""
    raise state.CyError(f"{name}:{line} has no code ({what}){hint}")


def plan_line(module: Module, path: str, line: int) -> Plan:
    lines = source_lines(path)
    count = len(lines) - (1 if lines and lines[-1] == "" else 0)  # (the text after the last newline)
    if lines and line > count:
        name = os.path.basename(path)
        raise state.CyError(f"{name}:{line} is past the end of {name} ({count} lines)")
    defined = _def_line_function(module, path, line)
    if defined is not None:
        first = defined.first_statement()
        if first is not None:
            return Plan(module, path, first, [defined],
                        f"line {line} is the def line of {defined.display_name}(): stopping at its first statement, "
                        f"line {first}", first_statement=True, whole_function=True)
    if is_blank_or_comment(path, line):
        _refuse_no_code(module, path, line, "blank or comment")
    owners = module.owners(path, line)
    if not owners:
        _refuse_no_code(module, path, line, "blank, comment or declaration")
    first = [f for f in owners if f.first_statement() == line]
    return Plan(module, path, line, owners, first_statement=len(first) == len(owners))


def _def_line_function(module: Module, path: str, line: int) -> Optional[Function]:
    """The function defined on this line (a generator's body, not its factory)."""
    defined = [f for f in module.functions
               if not f.is_module_init and f.lineno == line and f.source == path and f.first_statement() is not None]
    defined = prefer_generator_bodies(defined)
    return defined[0] if defined else None


def plan_function(spec: str) -> Optional[Plan]:
    candidates: List[Function] = []
    for module in state.modules():
        candidates.extend(module.function_named(spec))
    if not candidates:
        candidates = _inlined_cdef_function(spec)
    if not candidates:
        return None
    if len(candidates) > 1:
        exact = [f for f in candidates if f.display_name == spec or f.qualified_name == spec]
        if len(exact) == 1:
            candidates = exact
        else:
            names = ", ".join(f.qualified_name for f in candidates)
            raise state.CyError(f"{spec!r} is ambiguous: {names}; qualify it (Class.method, outer.inner, mod.func)")
    function = candidates[0]
    first = function.first_statement()
    return Plan(function.module, function.source or "", first or function.lineno, [function], first_statement=True,
                whole_function=True)


def _inlined_cdef_function(spec: str) -> List[Function]:
    """A cdef function of a module without debug XML that has no symbol (inlined into
    every caller): its C name written forward, if gdb's debug information knows it."""
    for module in state.modules():
        if not state.is_foreign(module) or state.objfile_for(module) is None:
            continue
        cname = module.cdef_cname(spec)
        if cname is None:
            continue
        try:
            sals = gdb.decode_line(cname)[1]
        except gdb.error:
            continue
        if sals:
            function = module.adopt(cname)
            state.register_function(function)
            return [function]
    return []


def _pending_reason(spec: str) -> str:
    known = ", ".join(sorted(m.name for m in state.modules())) or "none yet"
    match = _LINE_SPEC.match(spec)
    if match:
        file_name = match.group("file") or "the current file"
        stem = os.path.basename(file_name).split(".", 1)[0]
        blind = [m for m in state.modules() if state.is_foreign(m) and m.short_name == stem and not m.line_map]
        if blind:
            return (f"{blind[0].name} is loaded but its .pyx lines are unknown: it was not built by cytool and its "
                    f"generated C file ({stem}.c) was not found; {_develop_hint()}")
        return f"no module loaded so far has {file_name} among its sources (known: {known})"
    return f"no Cython function named {spec!r} in the modules known so far ({known})"


def _develop_hint() -> str:
    from cytool_gdb_frames import foreign_develop_hint

    return foreign_develop_hint()


# -- resolution (needs the loaded shared object) ----------------------------------------


def resolve(breakpoint: CyBreakpoint, announce: bool = True) -> None:
    """Plan (if not yet) and place the breakpoint if its module is loaded. A refusal (no
    code there in the loaded module) deletes it and, in batch mode, ends the run."""
    if breakpoint.locations:
        return
    if breakpoint.plan is None:
        breakpoint.plan = plan(breakpoint.spec)
        if breakpoint.plan is None:
            breakpoint.pending_reason = _pending_reason(breakpoint.spec)
            return
        if breakpoint.plan.note and announce and not breakpoint.internal:
            print(f"cytool: breakpoint {breakpoint.number}: {breakpoint.plan.note}")
    if state.objfile_for(breakpoint.plan.module) is None:
        breakpoint.pending_reason = f"module {breakpoint.plan.module.name} is not loaded yet"
        return
    found, refusal = placement.place_line(breakpoint.plan.path, breakpoint.plan.line, breakpoint.plan.functions,
                                          breakpoint.plan.first_statement)
    if refusal and breakpoint.plan.whole_function:
        found, refusal = _first_line_with_code(breakpoint, refusal)
    elif found and _optimised_whole_function(breakpoint.plan):
        found, breakpoint.plan.at_entry = placement.run_on_every_call(breakpoint.plan.functions[0], found)
    if refusal:
        breakpoint.error = refusal
        if announce:
            print(f"cytool: breakpoint {breakpoint.number} ({breakpoint.spec}) not set: {refusal}")
        breakpoint.delete()
        if not breakpoint.internal:
            state.fail_batch(f"breakpoint {breakpoint.number} ({breakpoint.spec}) was refused")
        return
    for where in found:
        breakpoint.locations.append(Location(where.pc, breakpoint, where.function, where.inlined))
    _say_shown_line(breakpoint, found, announce)
    breakpoint.placed_in_run = True
    breakpoint.pending_reason = ""
    if announce and not breakpoint.internal:
        inlined = sorted({w.inlined for w in found if w.inlined})
        extra = f" (inlined into {', '.join(inlined)})" if inlined else ""
        print(f"Cython breakpoint {breakpoint.number} at {breakpoint.plan.describe()}{extra}")


def _say_shown_line(breakpoint: CyBreakpoint, found: List[placement.Placement], announce: bool) -> None:
    """Announce the line the stops will show. An optimising build may leave the line
    asked for (a function's first statement, say) no instruction where a stop shows it:
    its only instruction is where the function's inlined copy is entered (a stop there
    shows the caller, so the breakpoint sits on the next instruction, of the next line),
    or the code is an inlined helper called from another line. The stop then shows
    another line; the breakpoint is announced (and listed) at that line, saying why."""
    plan_ = breakpoint.plan
    assert plan_ is not None
    plan_.shown_line = None
    if not plan_.path or not found:
        return
    if plan_.at_entry:
        _say_entry(breakpoint, found, announce)
        return
    positions = [placement.shown_position(where) for where in found]
    if any(p is None or os.path.basename(p[0]) != os.path.basename(plan_.path) for p in positions):
        return  # not known everywhere, or in another file (a helper's): the line asked for stands
    lines = {line for _, line in positions}
    if len(lines) != 1 or plan_.line in lines:
        return
    plan_.shown_line = lines.pop()
    if not announce or breakpoint.internal:
        return
    name = os.path.basename(plan_.path)
    level = placement.module_level(plan_.module) or "-O0"
    if level != "-O0":
        why = (f"has no instruction where a stop shows it in this {level} build of {plan_.module.name} (the "
               "compiler merged its code with the lines around it)")
    else:
        why = "has its code where the line table names another line"
    print(f"cytool: breakpoint {breakpoint.number}: {name}:{plan_.line} {why}; its stops show line "
          f"{plan_.shown_line}")


def _say_entry(breakpoint: CyBreakpoint, found: List[placement.Placement], announce: bool) -> None:
    """Announce a breakpoint placed where the function is entered (an optimised build
    whose first statement has code only where not every call runs it:
    placement.run_on_every_call), at the line its stops show when that is one line."""
    plan_ = breakpoint.plan
    assert plan_ is not None
    positions = [placement.shown_position(where) for where in found]
    lines = {p[1] for p in positions if p is not None and os.path.basename(p[0]) == os.path.basename(plan_.path)}
    if len(lines) == 1 and None not in positions and lines != {plan_.line}:
        plan_.shown_line = lines.pop()
    elif lines == {plan_.line} and None not in positions:
        return  # its stops show the line asked for: nothing to explain
    if not announce or breakpoint.internal:
        return
    name = os.path.basename(plan_.path)
    level = placement.module_level(plan_.module) or "-O0"
    function = plan_.functions[0]
    shown = f": its stops show line {plan_.shown_line}" if plan_.shown_line else ""
    print(f"cytool: breakpoint {breakpoint.number}: {name}:{plan_.line} has code in this {level} build of "
          f"{plan_.module.name} only where not every call of {function.display_name}() runs (an error path, or "
          f"merged with an inlined function): it stops where {function.display_name}() is entered{shown}")


def _optimised_whole_function(plan_: Plan) -> bool:
    """A breakpoint on a function itself (by name, def line) in an optimised build."""
    if not plan_.whole_function or len(plan_.functions) != 1:
        return False
    level = placement.module_level(plan_.module)
    return level is not None and level != "-O0"


def _first_line_with_code(breakpoint: CyBreakpoint, refusal: str):
    """A function's first statement has no code (an optimising build folded it away):
    its first later line that has code inside the function is where its body starts,
    unless that code is where not every call runs it (an error path, the function's cold
    part): then a few more lines are tried, and else the function's entries
    (placement.run_on_every_call) are where it stops."""
    plan_ = breakpoint.plan
    assert plan_ is not None
    function = plan_.functions[0]
    optimised = _optimised_whole_function(plan_)
    tried = 0
    for line in sorted(l for l in function.lines.get(plan_.path, ()) if l > plan_.line):
        if is_blank_or_comment(plan_.path, line):
            continue
        found, _ = placement.place_line(plan_.path, line, [function], first_statement=False)
        if found and optimised:
            tried += 1
            found, at_entry = placement.run_on_every_call(function, found)
            if at_entry:
                if tried < 4:
                    continue
                break
        if found:
            breakpoint.plan = Plan(plan_.module, plan_.path, line, [function],
                                   f"line {plan_.line} has no code in this build", first_statement=True,
                                   whole_function=True)
            if not breakpoint.internal:
                print(f"cytool: {plan_.path.rsplit('/', 1)[-1]}:{plan_.line}, the first statement of "
                      f"{function.display_name}(), has no code in this build: using line {line}")
            return found, None
    if optimised:
        found, _ = placement.run_on_every_call(function, [])
        if found:
            plan_.at_entry = True
            return found, None
    return [], refusal


def create(spec: str, internal: bool = False) -> CyBreakpoint:
    """cy-break: refuse what is wrong now, place it if possible, else keep it pending."""
    spec = spec.strip()
    planned = plan(spec)
    number = 0 if internal else next_number()
    breakpoint = CyBreakpoint(number, spec, internal)
    breakpoint.plan = planned
    _breakpoints.append(breakpoint)
    if planned is not None and planned.note and not internal:
        print(f"cytool: {planned.note}")
    resolve(breakpoint, announce=not internal)
    if breakpoint.error is not None:
        raise state.CyError(breakpoint.error)
    if breakpoint.pending and not internal:
        where = planned.describe() if planned else spec
        reason = breakpoint.pending_reason
        if planned is None:
            print(f"Cython breakpoint {number} ({where}) pending: {reason}; it is placed when such a module loads")
        else:
            print(f"Cython breakpoint {number} ({where}) pending until its module is loaded")
    return breakpoint


def delete(number: int) -> None:
    for breakpoint in _breakpoints:
        if breakpoint.number == number and not breakpoint.internal:
            breakpoint.delete()
            return
    raise state.CyError(f"No Cython breakpoint number {number}")


def resolve_pending() -> None:
    for breakpoint in list(_breakpoints):
        if breakpoint.pending:
            try:
                resolve(breakpoint)
            except gdb.GdbError as error:
                print(f"cytool: breakpoint {breakpoint.number} ({breakpoint.spec}): {error}")
                breakpoint.delete()
                if not breakpoint.internal:
                    state.fail_batch(f"breakpoint {breakpoint.number} ({breakpoint.spec}) was refused")


def replan_pending(module: Module) -> None:
    """New debug information: pending specs with no plan may match it now."""
    for breakpoint in list(_breakpoints):
        if breakpoint.plan is None and breakpoint.pending:
            try:
                breakpoint.plan = plan(breakpoint.spec)
                if breakpoint.plan is not None and breakpoint.plan.note and not breakpoint.internal:
                    print(f"cytool: breakpoint {breakpoint.number}: {breakpoint.plan.note}")
            except gdb.GdbError as error:
                print(f"cytool: breakpoint {breakpoint.number} ({breakpoint.spec}): {error}")
                breakpoint.delete()
                state.fail_batch(f"breakpoint {breakpoint.number} ({breakpoint.spec}) was refused")


def process_exited() -> None:
    """The process is gone: report the specs that never matched anything in it, and turn
    every breakpoint back to pending (its addresses mean nothing in the next process)."""
    for breakpoint in list(_breakpoints):
        if breakpoint.internal:
            breakpoint.delete()
            continue
        if not breakpoint.placed_in_run:
            reason = breakpoint.pending_reason or _pending_reason(breakpoint.spec)
            print(f"cytool: breakpoint {breakpoint.number} ({breakpoint.spec}) matched nothing in this run: {reason}")
            state.fail_batch(f"breakpoint {breakpoint.number} ({breakpoint.spec}) matched nothing")
        breakpoint.clear()
        breakpoint.placed_in_run = False


def break_at_function_entries(module: Module) -> List[CyBreakpoint]:
    """Internal breakpoints at the first statement of every function of a module (cy-step),
    after each function's set-up."""
    placed = []
    for function in module.functions:
        if function.is_module_init or function.source is None:
            continue
        if not function.is_generator_body and any(f.is_generator_body and f.qualified_name == function.qualified_name
                                                  for f in module.functions):
            continue  # a generator's factory: its body is where the code runs
        first = function.first_statement() or function.lineno
        breakpoint = CyBreakpoint(0, f"{function.qualified_name}", internal=True)
        breakpoint.plan = Plan(module, function.source, first, [function], first_statement=True,
                               whole_function=True)
        _breakpoints.append(breakpoint)
        try:
            resolve(breakpoint, announce=False)
        except gdb.GdbError:
            breakpoint.delete()
            continue
        if breakpoint.locations:
            placed.append(breakpoint)
        else:
            breakpoint.delete()
    return placed
