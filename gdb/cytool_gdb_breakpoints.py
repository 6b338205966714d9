"""Cython breakpoints: `.pyx` lines and Cython function names to the right addresses.

Owns cy-break's resolution. A `.pyx` line can have code in several C functions (the
`def` wrapper, argument parsing, module init, cached constants) and gdb, asked for a
line without code, silently slides to the next one. So a spec is first planned from
the debug XML (which Cython function owns the line; a def line means the function's
first statement; a line no function owns is refused, naming the nearest line that has
code), then, once the module's shared object is loaded (`gdb.events.new_objfile`), its
addresses are taken from the line table and kept only inside the owner's C function.
Each location becomes an address breakpoint; when the process exits they are deleted
and the Cython breakpoint goes back to pending, to be resolved again on the next run.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

import gdb  # type: ignore

import cytool_gdb_state as state
from cytool_gdb_debuginfo import Function, Module, nearest


class Plan:
    """Where a spec will stop: a line of a file, in these functions."""

    def __init__(self, module: Module, path: str, line: int, functions: List[Function], note: str = "") -> None:
        self.module = module
        self.path = path
        self.line = line
        self.functions = functions
        self.note = note

    def describe(self) -> str:
        names = ", ".join(f.display_name + "()" for f in self.functions)
        return f"{os.path.basename(self.path)}:{self.line} in {names}"


class Location(gdb.Breakpoint):
    """One address of a Cython breakpoint."""

    def __init__(self, address: int, owner: "CyBreakpoint", function: Function, internal: bool) -> None:
        super().__init__(f"*{address:#x}", internal=internal, temporary=False)
        self.owner = owner
        self.function = function


class CyBreakpoint:
    def __init__(self, number: int, spec: str, internal: bool = False) -> None:
        self.number = number
        self.spec = spec
        self.internal = internal
        self.plan: Optional[Plan] = None
        self.locations: List[Location] = []
        self.error: Optional[str] = None

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


_breakpoints: List[CyBreakpoint] = []
_next_number = 1
_LINE_SPEC = re.compile(r"^(?:(?P<file>.+):)?(?P<line>\d+)$")


def breakpoints() -> List[CyBreakpoint]:
    return list(_breakpoints)


def owner_of(breakpoint: "gdb.Breakpoint") -> Optional[CyBreakpoint]:
    return breakpoint.owner if isinstance(breakpoint, Location) else None


# -- planning (needs only the XML) --------------------------------------------------------


def _current_source() -> Optional[str]:
    from cytool_gdb_frames import location, selected_cython_frame

    frame = selected_cython_frame(required=False)
    if frame is not None:
        path, _ = location(frame)
        if path:
            return path
    return state.default_source


def plan(spec: str) -> Optional[Plan]:
    """A Plan, None if no loaded debug info knows the spec yet, or CyError if it is wrong."""
    spec = spec.strip()
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


def plan_line(module: Module, path: str, line: int) -> Plan:
    name = os.path.basename(path)
    defined = module.def_line_function(path, line)
    if defined is not None:
        first = defined.first_statement()
        if first is not None:
            return Plan(module, path, first, [defined],
                        f"line {line} is the def line of {defined.display_name}(): stopping at its first statement, line {first}")
        return Plan(module, path, line, [defined])
    owners = module.owners(path, line)
    if not owners:
        covered = set()
        for function in module.functions:
            covered.update(function.lines.get(path, ()))
        near = nearest(covered, line)
        hint = f"; the nearest line with code is {name}:{near}" if near else ""
        raise state.CyError(f"{name}:{line} has no code (blank, comment or declaration){hint}")
    return Plan(module, path, line, owners)


def plan_function(spec: str) -> Optional[Plan]:
    candidates: List[Function] = []
    modules = state.modules()
    if not modules:
        return None
    for module in modules:
        name = spec
        if "." in spec and spec.split(".", 1)[0] == module.name:
            name = spec.split(".", 1)[1]
        candidates.extend(module.function_named(name))
    if not candidates:
        raise state.CyError(
            f"No Cython function named {spec!r} in {', '.join(m.name for m in modules)}",
            )
    if len(candidates) > 1:
        exact = [f for f in candidates if f.display_name == spec or f.qualified_name == spec]
        if len(exact) == 1:
            candidates = exact
        else:
            names = ", ".join(f.qualified_name for f in candidates)
            raise state.CyError(f"{spec!r} is ambiguous: {names}; qualify it (Class.method, outer.inner)")
    function = candidates[0]
    assert function.source is not None
    first = function.first_statement()
    return Plan(function.module, function.source, first or function.lineno, [function])


# -- resolution (needs the loaded shared object) ----------------------------------------


def _sals(path: str, line: int) -> list:
    for spec in (f"{path}:{line}", f"{os.path.basename(path)}:{line}"):
        try:
            sals = gdb.decode_line(spec)[1]
        except gdb.error:
            continue
        if sals:
            return list(sals)
    return []


def addresses(plan_: Plan) -> Tuple[List[Tuple[Function, int]], Optional[str]]:
    """[(function, pc)] for the plan, or ([], refusal message) when the line has no code there."""
    sals = _sals(plan_.path, plan_.line)
    symtab = sals[0].symtab if sals else None
    entries = []
    if symtab is not None:
        try:
            entries = list(symtab.linetable().line(plan_.line) or ())
        except (gdb.error, AttributeError):
            entries = []
    result = []
    ranges = []
    for function in plan_.functions:
        span = state.function_range(function)
        if span is None:
            continue
        ranges.append(span)
        pcs = [s.pc for s in sals if s.line == plan_.line and span[0] <= s.pc < span[1]]
        if not pcs:
            pcs = [e.pc for e in entries if span[0] <= e.pc < span[1]]
        if pcs:
            result.append((function, min(pcs)))
    if result:
        return result, None
    name = os.path.basename(plan_.path)
    lines = set()
    if symtab is not None:
        try:
            for entry in symtab.linetable():
                if any(start <= entry.pc < end for start, end in ranges):
                    lines.add(entry.line)
        except gdb.error:
            pass
    xml_lines = set()
    for function in plan_.functions:
        xml_lines.update(function.lines.get(plan_.path, ()))
    near = nearest((lines & xml_lines) or lines or xml_lines, plan_.line)
    hint = f"; the nearest line with code is {name}:{near}" if near else ""
    owners = ", ".join(f.display_name + "()" for f in plan_.functions)
    return [], f"{name}:{plan_.line} has no code in {owners}{hint}"


def resolve(breakpoint: CyBreakpoint, announce: bool = True) -> None:
    """Plan (if not yet) and place the breakpoint if its module is loaded."""
    if breakpoint.locations:
        return
    if breakpoint.plan is None:
        breakpoint.plan = plan(breakpoint.spec)
        if breakpoint.plan is None:
            return
    if state.objfile_for(breakpoint.plan.module) is None:
        return
    found, refusal = addresses(breakpoint.plan)
    if refusal:
        breakpoint.error = refusal
        if announce:
            print(f"cytool: breakpoint {breakpoint.number} ({breakpoint.spec}) not set: {refusal}")
        breakpoint.delete()
        return
    for function, pc in found:
        breakpoint.locations.append(Location(pc, breakpoint, function, breakpoint.internal))
    if announce and not breakpoint.internal:
        print(f"Cython breakpoint {breakpoint.number} at {breakpoint.plan.describe()}")


def create(spec: str, internal: bool = False) -> CyBreakpoint:
    """cy-break: refuse what is wrong now, place it if possible, else keep it pending."""
    global _next_number
    planned = plan(spec)
    number = 0
    if not internal:
        number = _next_number
        _next_number += 1
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


def forget_locations() -> None:
    """The process is gone: its addresses mean nothing in the next one."""
    for breakpoint in list(_breakpoints):
        breakpoint.clear()
        if breakpoint.internal:
            breakpoint.delete()


def break_at_function_entries(module: Module) -> List[CyBreakpoint]:
    """Internal breakpoints at the first statement of every function of a module (cy-step)."""
    placed = []
    for function in module.functions:
        if function.is_module_init or function.source is None:
            continue
        first = function.first_statement() or function.lineno
        breakpoint = CyBreakpoint(0, f"{function.qualified_name}", internal=True)
        breakpoint.plan = Plan(module, function.source, first, [function])
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
