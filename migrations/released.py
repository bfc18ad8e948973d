"""Released revisions are frozen: migrations/released.json holds, per released revision, the
sha256 of each of its files, and a check-lane test fails when one differs.

`python -m migrations.released 0.2.0` records a revision at its tag (run it, commit the
manifest, then tag); from then on `python -m migrations.freeze` no longer writes its SQL."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "migrations" / "released.json"


def revision_files(revision: str, root: Path = ROOT) -> list[Path]:
    """What a revision ships: its module, its SQL (migrations/sql/<revision>*.sql) and, for
    0.2.0, the conversion of legacy installs (migrations/legacy/)."""
    module = root / "migrations" / "versions" / f"v{revision.replace('.', '_')}.py"
    files = [module, *sorted((root / "migrations" / "sql").glob(f"{revision}*.sql"))]
    if revision == "0.2.0":
        files += sorted((root / "migrations" / "legacy").glob("*.sql"))
    return files


def hashes(revision: str, root: Path = ROOT) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in revision_files(revision, root)
        if path.exists()
    }


def released(manifest: Path = MANIFEST) -> dict[str, dict[str, str]]:
    return json.loads(manifest.read_text()) if manifest.exists() else {}


def edited(root: Path = ROOT, manifest: Path = MANIFEST) -> list[str]:
    """Released revisions' files that differ from the manifest (edited, added or removed)."""
    found = []
    for revision, recorded in released(manifest).items():
        now = hashes(revision, root)
        for name in sorted(set(recorded) | set(now)):
            if recorded.get(name) != now.get(name):
                found.append(f"{revision}: {name}")
    return found


def record(revision: str) -> None:
    manifest = released()
    manifest[revision] = hashes(revision)
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m migrations.released REVISION   (at the tag, e.g. 0.2.0)")
    record(sys.argv[1])
    print(f"recorded {sys.argv[1]} in migrations/released.json", file=sys.stderr)
