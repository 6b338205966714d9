"""One report for a process tree: the Profiles of several captures (a parent and the
children `--follow-fork` traced into `<capture>.<pid>`, multiprocessing workers, pytest-xdist
workers) merged into one Profile, with each process's own figures kept in
`Profile.processes`.

    merged = merge_profiles([load_profile(p) for p in paths])
    merged.totals.bytes == sum(p.totals.bytes for p in merged.processes)

What adds up: every figure of a line, a stack, a flame-graph node and the totals is the
sum over the processes (allocated, leaked and temporary bytes and counts; the peak
figures are the sum of each process's own peak, an upper bound of what was live at once,
since processes need not peak together). The live-bytes timeline is the sum of the
processes' timelines placed on one clock (each capture records its start, CLOCK_REALTIME).
Threads keep their own figures, named with their process.

A process that replaced its program (exec) left one capture per program, with the same
pid, each but the last ending at the exec. Their memory never coexisted (an exec releases
all of it), so of such a chain only the capture with the highest peak gives peak figures;
the later captures, whose header names no parent (the program started afresh), take the
first one's parent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Set, Tuple

from cytool.analysis import LineStats, Location, Metrics, ProcessStats, Profile, StackStats, ThreadStats

LocationKey = Tuple[str, str, int, str, str]


def _key(location: Location) -> LocationKey:
    return (location.function, location.file, location.line, location.kind, location.object)


def _copy(metrics: Metrics) -> Metrics:
    return Metrics(*metrics.as_tuple())


def _without_peak(metrics: Metrics) -> Metrics:
    return Metrics(metrics.bytes, metrics.count, 0, 0, metrics.leaked_bytes, metrics.leaked_count,
                   metrics.temporary_bytes, metrics.temporary_count)


def _program_chains(profiles: Sequence[Profile]) -> Tuple[Set[int], Dict[int, int]]:
    """The exec chains among `profiles` (see the module doc): the ids of the profiles whose
    peak figures do not count, and the parent pid to use for the later captures of a chain
    (by profile id)."""
    by_pid: Dict[int, List[Profile]] = {}
    for profile in profiles:
        by_pid.setdefault(profile.pid, []).append(profile)
    peakless: Set[int] = set()
    parents: Dict[int, int] = {}
    for same_pid in by_pid.values():
        if len(same_pid) < 2:
            continue
        same_pid.sort(key=lambda p: p.start_time_ns)
        chains = [[same_pid[0]]]
        for previous, profile in zip(same_pid, same_pid[1:]):
            ended = previous.exec_at_ns
            if ended is None or not previous.start_time_ns or profile.start_time_ns < previous.start_time_ns + ended:
                chains.append([profile])  # (not the program after an exec: another process that had this pid)
            else:
                chains[-1].append(profile)
        for chain in chains:
            highest = max(chain, key=lambda p: p.totals.peak_bytes)
            peakless.update(id(p) for p in chain if p is not highest)
            for profile in chain[1:]:
                if not profile.parent_pid:
                    parents[id(profile)] = chain[0].parent_pid
    return peakless, parents


def peak_rule(profile: Profile) -> str:
    """How a merged report's peak figures were made, in words (for its processes table)."""
    rule = "the sum of each one's peak"
    if len({p.pid for p in profile.processes}) < len(profile.processes):
        rule += "; the programs one process ran in turn (exec) count the highest of theirs"
    return rule


def process_stats(profile: Profile, parent_pid: int = 0) -> ProcessStats:
    """One process's line of the breakdown (parent_pid: instead of the capture's, if not 0)."""
    return ProcessStats(
        pid=profile.pid,
        parent_pid=parent_pid or profile.parent_pid,
        argv=profile.argv,
        capture_path=profile.capture_path,
        start_time_ns=profile.start_time_ns,
        totals=_copy(profile.totals),
        events=profile.events,
        peak_time_ns=profile.peak_time_ns,
        end_time_ns=profile.end_time_ns,
        threads=len(profile.threads),
        notes=profile.notes(),
    )


def _tree_order(profiles: Sequence[Profile], parents: Dict[int, int]) -> List[Profile]:
    """Parents before their children, then by start time: the root process first.
    parents: parent pids that replace the captures' own (by profile id)."""
    by_pid = {p.pid: p for p in sorted(profiles, key=lambda p: -p.start_time_ns)}  # (a pid's first capture)
    depth: Dict[int, int] = {}

    def parent_of(profile: Profile) -> int:
        return parents.get(id(profile), profile.parent_pid)

    def level(profile: Profile) -> int:
        seen = set()
        n, current = 0, profile
        while parent_of(current) in by_pid and current.pid not in seen:
            seen.add(current.pid)
            current = by_pid[parent_of(current)]
            n += 1
        return n

    for profile in profiles:
        depth[id(profile)] = level(profile)
    return sorted(profiles, key=lambda p: (depth[id(p)], p.start_time_ns, p.pid))


def _merge_timelines(profiles: Sequence[Profile], origin_ns: int) -> List[Tuple[int, int]]:
    """The sum of the processes' live-bytes step functions, times from `origin_ns`."""
    changes: List[Tuple[int, int]] = []
    for profile in profiles:
        offset = profile.start_time_ns - origin_ns if profile.start_time_ns and origin_ns else 0
        previous = 0
        for time_ns, live in profile.timeline:
            changes.append((time_ns + offset, live - previous))
            previous = live
    changes.sort()
    timeline: List[Tuple[int, int]] = []
    live = 0
    for time_ns, delta in changes:
        live += delta
        if timeline and timeline[-1][0] == time_ns:
            timeline[-1] = (time_ns, live)
        else:
            timeline.append((time_ns, live))
    return timeline


def merge_profiles(profiles: Sequence[Profile]) -> Profile:
    """One Profile for several processes (see the module doc); a single profile is
    returned with its own breakdown line. ValueError for no profile at all."""
    if not profiles:
        raise ValueError("no profile to merge")
    peakless, parents = _program_chains(profiles)
    ordered = _tree_order(profiles, parents)
    root = ordered[0]
    starts = [p.start_time_ns for p in ordered if p.start_time_ns]
    origin = min(starts) if len(starts) == len(ordered) else 0

    locations: List[Location] = []
    location_index: Dict[LocationKey, int] = {}

    def merged_location(location: Location) -> int:
        key = _key(location)
        if key not in location_index:
            location_index[key] = len(locations)
            locations.append(location)
        return location_index[key]

    totals = Metrics()
    lines: Dict[Tuple[str, int, str, str, str], LineStats] = {}
    stacks: Dict[Tuple[int, Tuple[int, ...]], StackStats] = {}
    flame: List[List[int]] = []
    flame_index: Dict[Tuple[int, int], int] = {}
    kinds: Dict[str, Tuple[int, int]] = {}
    threads: List[ThreadStats] = []
    for profile in ordered:
        counts_peak = id(profile) not in peakless

        def part(metrics: Metrics) -> Metrics:
            return metrics if counts_peak else _without_peak(metrics)

        totals.add(part(profile.totals))
        for line in profile.lines():
            key = (line.file, line.line, line.function, line.kind, line.object)
            merged = lines.get(key)
            if merged is None:
                merged = lines[key] = LineStats(line.file, line.line, line.function, line.kind, line.object)
            merged.self.add(part(line.self))
            merged.inclusive.add(part(line.inclusive))
            merged.attributed.add(part(line.attributed))
        for stack in profile.stacks:
            frames = tuple(merged_location(f) for f in stack.frames)
            key = (merged_location(stack.self_location), frames)
            if key not in stacks:
                stacks[key] = StackStats([locations[i] for i in frames], locations[key[0]], Metrics())
            stacks[key].metrics.add(part(stack.metrics))
        # flame nodes come parents first: [location, parent, bytes, peak, leaked, count]
        local: Dict[int, int] = {}
        for index, (location, parent, nbytes, peak, leaked, count) in enumerate(profile.flame):
            new_location = merged_location(profile.locations[location]) if location >= 0 else -1
            new_parent = local.get(parent, -1) if parent >= 0 else -1
            node = flame_index.get((new_parent, new_location))
            if node is None:
                node = flame_index[(new_parent, new_location)] = len(flame)
                flame.append([new_location, new_parent, 0, 0, 0, 0])
            flame[node][2] += nbytes
            flame[node][3] += peak if counts_peak else 0
            flame[node][4] += leaked
            flame[node][5] += count
            local[index] = node
        for kind, (events, nbytes) in profile.kinds.items():
            before = kinds.get(kind, (0, 0))
            kinds[kind] = (before[0] + events, before[1] + nbytes)
        for thread in profile.threads:
            name = f"{thread.name or thread.tid} (pid {profile.pid})"
            threads.append(ThreadStats(thread.id, thread.tid, name, _copy(thread.metrics)))

    def total(name: str) -> int:
        return sum(int(getattr(p, name)) for p in ordered)

    ranked_lines = sorted(lines.values(), key=lambda s: (-s.self.bytes, -s.inclusive.bytes, s.file, s.line))
    truncated = [p for p in ordered if p.truncated]
    return Profile(
        capture_path=root.capture_path,
        argv=root.argv,
        pid=root.pid,
        python_version=root.python_version,
        time_resolution_ns=root.time_resolution_ns,
        clock=root.clock,
        truncated=bool(truncated),
        truncation_message=(
            f"{len(truncated)} of the {len(ordered)} captures are truncated (events are missing): pid "
            + ", ".join(str(p.pid) for p in truncated)
        ) if truncated else "",
        dropped_events=total("dropped_events"),
        symbol_warnings=[],
        totals=totals,
        peak_time_ns=0,
        end_time_ns=max(p.end_time_ns + (p.start_time_ns - origin if origin else 0) for p in ordered),
        events=total("events"),
        frees=total("frees"),
        unmatched_frees=total("unmatched_frees"),
        replaced_blocks=total("replaced_blocks"),
        temporary_window=root.temporary_window,
        kinds=kinds,
        stacks=list(stacks.values()),
        timeline=_merge_timelines(ordered, origin),
        threads=threads,
        locations=locations,
        flame=flame,
        _lines=ranked_lines,
        missing_events=total("missing_events"),
        lost_events=total("lost_events"),
        max_frames=max(p.max_frames for p in ordered),
        cut_events=total("cut_events"),
        cut_bytes=total("cut_bytes"),
        cut_most=max(p.cut_most for p in ordered),
        parent_pid=root.parent_pid,
        start_time_ns=origin or root.start_time_ns,
        processes=[process_stats(p, parents.get(id(p), 0)) for p in ordered],
        objects=_union_objects(ordered),
    )


def _union_objects(profiles: Sequence[Profile]) -> list:
    """Every object the processes loaded, once per (path, build-id): the reports find the
    build records of the modules by these (cytool.reports.source)."""
    seen = set()
    union = []
    for profile in profiles:
        for loaded in getattr(profile, "objects", ()):
            key = (loaded.path, loaded.build_id)
            if key not in seen:
                seen.add(key)
                union.append(loaded)
    return union


def capture_paths(arguments: Sequence[str]) -> List[Path]:
    """The capture files a `cytool report` command line names: files as given, a folder
    as the capture files in it (`*.cytrace*`), a quoted glob as its matches; each once, in
    the order given. Raises FileNotFoundError naming a glob that matches nothing, and
    IsADirectoryError naming a folder without captures."""
    import glob

    found: List[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if ".cytrace" in p.name and p.is_file())
            if not matches:
                raise IsADirectoryError(argument)
        elif glob.has_magic(argument) and not path.exists():
            matches = sorted(Path(m) for m in glob.glob(argument))
        else:
            matches = [path]
        if not matches:
            raise FileNotFoundError(argument)
        for match in matches:
            if match not in found:
                found.append(match)
    return found
