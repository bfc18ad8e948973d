"""Named SQL queries, read once from sql/queries.sql: each under a `-- name --` header and
its description (comment lines, left out of the query's text). The one way to reach a
query is `queries()["name"]`; the relay's go through relay.delivery.outbox."""

from __future__ import annotations

import re
from functools import cache

from relay.resources import sql_text

_HEADER = re.compile(r"^-- ([a-z_]+) --\n(?:--.*\n)*", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    parts = _HEADER.split(sql_text("queries.sql"))[1:]
    return {name: body.strip() for name, body in zip(parts[::2], parts[1::2])}
