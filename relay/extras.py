"""Optional parts of pgpulse. The relay's install is lean; the commands that need more (the
dev server, the demo, the benchmarks) name the extra that brings it instead of a traceback."""

from __future__ import annotations

import importlib.util

from relay.errors import MissingExtra

# extra -> the modules its commands cannot run without (pyproject.toml lists the same)
EXTRA_MODULES = {"devserver": ("hiredis",), "bench": ("hiredis", "redis")}
COMMAND_EXTRA = {"devserver": "devserver", "demo": "devserver", "bench": "bench"}


def require(command: str) -> None:
    """Checked before the command starts anything (a benchmark run, a throwaway cluster)."""
    extra = COMMAND_EXTRA.get(command)
    if extra and any(importlib.util.find_spec(m) is None for m in EXTRA_MODULES[extra]):
        raise MissingExtra(command, extra)


def explain(command: str, exc: ModuleNotFoundError) -> MissingExtra | None:
    """The extra that brings a module an import missed deeper down; None if none does."""
    root = (exc.name or "").partition(".")[0]
    for extra in (COMMAND_EXTRA.get(command), *EXTRA_MODULES):
        if extra and root in EXTRA_MODULES[extra]:
            return MissingExtra(command, extra)
    return None
