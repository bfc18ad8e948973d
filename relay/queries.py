"""Named SQL queries, read once from sql/queries.sql (`-- name --` headers)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_HEADER = re.compile(r"^-- ([a-z_]+) --\n", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    text = (SQL_DIR / "queries.sql").read_text()
    parts = _HEADER.split(text)[1:]
    return {name: body.strip() for name, body in zip(parts[::2], parts[1::2])}


def sql_file(name: str) -> str:
    return (SQL_DIR / name).read_text()
