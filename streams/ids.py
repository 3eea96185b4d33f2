"""Stream entry ids: `<ms>-<seq>`, compared as pairs of integers."""

from __future__ import annotations


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def is_newer(a: str, b: str) -> bool:
    """Whether entry id `a` comes after `b` in its stream."""
    return parse_id(a) > parse_id(b)


def id_time_ms(entry_id: str) -> int:
    return parse_id(entry_id)[0]
