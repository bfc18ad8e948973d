"""`pgpulse maintenance`: windows when monitors are not checked (once or weekly, in an IANA
time zone, for some monitors or all). Plain SQL on pgpulse.maintenance_windows works too."""

from __future__ import annotations

from typing import Any

from relay.db import fetch_json
from relay.errors import UserInputError
from relay.queries import queries

WEEKDAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}


def parse_weekdays(text: str) -> list[int]:
    """'sat,sun' or '6,7' -> ISO weekdays (1 = Monday)."""
    days: list[int] = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        day = WEEKDAYS.get(part[:3]) if not part.isdigit() else int(part)
        if day is None or day not in WEEKDAYS.values():
            raise UserInputError(f"bad weekday {part!r}: use mon..sun or 1..7 (1 = Monday)")
        days.append(day)
    if not days:
        raise UserInputError("--weekly needs at least one weekday, e.g. sat,sun")
    return sorted(set(days))


def parse_monitor_ids(values: list[str] | None) -> list[str] | None:
    """Monitor ids as text (a uuid, or an adopted table's own ids)."""
    if not values:
        return None
    if not all(v.strip() for v in values):
        raise UserInputError("bad monitor id: an empty --monitor")
    return [v.strip() for v in values]


def add(
    conn,
    *,
    time_zone: str,
    name: str = "",
    monitors: list[str] | None = None,
    starts: str | None = None,
    ends: str | None = None,
    weekly: str | None = None,
    at: str | None = None,
    duration: str | None = None,
) -> int:
    """Adds a window: once (starts and ends) or weekly (weekly days, at, duration)."""
    once = starts is not None or ends is not None
    if once == (weekly is not None):
        raise UserInputError("give either --from and --to (once) or --weekly, --at and --for")
    if once and not (starts and ends):
        raise UserInputError("a one-off window needs both --from and --to")
    if weekly is not None and not (at and duration):
        raise UserInputError("a weekly window needs --at (local start time) and --for (duration)")
    params = {
        "name": name,
        "monitor_ids": parse_monitor_ids(monitors),
        "time_zone": time_zone,
        "starts": starts,
        "ends": ends,
        "weekdays": parse_weekdays(weekly) if weekly is not None else None,
        "start_time": at,
        "duration": duration,
    }
    return conn.execute(queries()["maintenance_add"], params).fetchone()["id"]


def list_windows(conn) -> list[dict[str, Any]]:
    return fetch_json(conn, queries()["maintenance_list"])


def remove(conn, window_id: int) -> None:
    if not conn.execute(queries()["maintenance_remove"], {"id": window_id}).fetchone():
        raise UserInputError(f"no maintenance window {window_id}")


def describe(w: dict[str, Any]) -> str:
    """One line per window for people."""
    scope = "all monitors" if w["monitor_ids"] is None else f"{len(w['monitor_ids'])} monitor(s)"
    if w["kind"] == "once":
        when = f"once {w['starts_local']} to {w['ends_local']}"
    else:
        days = ",".join(k for k, v in WEEKDAYS.items() if v in w["weekdays"])
        when = f"weekly {days} at {w['start_time']} for {w['duration']}"
    state = (
        f"ACTIVE until {w['next_end_local']}"
        if w["active_now"]
        else f"next {w['next_start_local']}"
        if w["next_start_local"]
        else "over"
    )
    return (
        f"{w['id']:>4} {w['name'] or '-':<16} {when} {w['time_zone']}, {scope}: {state}; "
        f"skipped {w['skipped_slots']} slot(s)"
    )
