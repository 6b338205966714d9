"""How reports write sizes and times."""
from __future__ import annotations


def human_bytes(n: int) -> str:
    """1536 -> "1.5 KiB"; exact below 1 KiB."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024.0
        if value < 1024.0 or unit == "TiB":
            return f"{value:.1f} {unit}"
    return f"{n} B"


def human_count(n: int) -> str:
    return f"{n:,}"


def human_duration(ns: int) -> str:
    if ns < 1_000_000:
        return f"{ns / 1000:.0f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.1f} ms"
    return f"{ns / 1_000_000_000:.2f} s"


def share(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
               "g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4, "tb": 1024**4, "tib": 1024**4}


def parse_size(text: str) -> int:
    """"24 MB" -> 25165824 bytes. Units B, KB, MB, GB, TB (and KiB, MiB, ...) are all
    powers of 1024, as pytest-memray reads them; a bare number is bytes. ValueError for
    anything else (a negative size, an unknown unit)."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (write e.g. \"24 MB\", \"512 KB\", \"100 B\")")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
