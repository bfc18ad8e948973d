"""Monitor URLs and whether a worker may fetch them: the vectors of url_vectors.json (one
rule for the database's pgpulse.url_problem and any worker's own check), and generated
ones: every code point IDNA (UTS #46) maps or drops and every default-ignorable one,
spliced into hosts that are refused, at several places. Workers in Python run the same:
`for v in file_vectors() + unicode_vectors(): ...`."""

from __future__ import annotations

import functools
import json
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

VECTORS_FILE = Path(__file__).with_name("url_vectors.json")

# Refused hosts the generated characters go into: each character at each place, the host
# changing with the place so that every host gets every place too.
SPLICE_HOSTS = ("localhost", "169.254.169.254", "metadata.google.internal", "127.0.0.1")

# PropList.txt's Other_Default_Ignorable_Code_Point (unicodedata has no property for it);
# the rest of Default_Ignorable_Code_Point is format characters (Cf) and variation
# selectors, which unicodedata does know.
OTHER_DEFAULT_IGNORABLE = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x2065, 0x2065),
    (0x3164, 0x3164),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0xE0000, 0xE0000),
    (0xE0002, 0xE001F),
    (0xE0080, 0xE00FF),
    (0xE01F0, 0xE0FFF),
)


@dataclass(frozen=True)
class UrlVector:
    url: str
    allowed_off: bool  # allowed with private targets off (the default)
    allowed_on: bool  # allowed with pgpulse.allow_private_targets = on
    reason: str  # why it is refused (a key of the file's "reasons"); "public": it is not


def reasons() -> dict[str, str]:
    return json.loads(VECTORS_FILE.read_text())["reasons"]


def file_vectors() -> list[UrlVector]:
    return [UrlVector(**v) for v in json.loads(VECTORS_FILE.read_text())["vectors"]]


def idna_code_points() -> set[int]:
    """Every non-ASCII code point UTS #46 maps, ignores (drops) or treats as a deviation:
    from the idna package's table when it is installed, and from NFKC_Casefold (which
    UTS #46's mapping starts from) approximated with unicodedata either way."""
    points = set()
    try:
        from idna import uts46data
    except ImportError:
        uts46data = None
    if uts46data is not None:
        starts, statuses = uts46data.uts46_starts, uts46data.uts46_statuses
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else sys.maxunicode + 1
            if chr(statuses[i]) in "MID":
                points.update(range(max(start, 0x80), end))
    return points | _unicodedata_scan()[0]


def default_ignorable_code_points() -> set[int]:
    """A superset of Default_Ignorable_Code_Point: format characters, variation selectors and
    the other default-ignorables (its few exclusions are kept: more is no harm here)."""
    points = {cp for start, end in OTHER_DEFAULT_IGNORABLE for cp in range(start, end + 1)}
    return points | _unicodedata_scan()[1]


@functools.cache
def _unicodedata_scan() -> tuple[set[int], set[int]]:
    """Non-ASCII code points NFKC_Casefold changes, and format characters (Cf) with the
    variation selectors: one pass over every code point."""
    mapped, ignorable = set(), set()
    for cp in range(0x80, sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if unicodedata.normalize("NFKC", c).casefold() != c:
            mapped.add(cp)
        if unicodedata.category(c) == "Cf" or "VARIATION SELECTOR" in unicodedata.name(c, ""):
            ignorable.add(cp)
    return mapped, ignorable


def spliced(host: str, place: int, char: str) -> str:
    """`char` in `host` at place 0 (first), 1 (after the first character), 2 (before the
    last dot, or in the middle) or 3 (last, before the port)."""
    at = [0, 1, host.rfind(".") if "." in host else len(host) // 2, len(host)][place]
    return host[:at] + char + host[at:]


def unicode_vectors() -> list[UrlVector]:
    """Each generated code point in each of four places of a refused host: always refused,
    whatever the setting (a host is ASCII)."""
    points = sorted(idna_code_points() | default_ignorable_code_points())
    vectors = []
    for i, cp in enumerate(points):
        for place in range(4):
            host = SPLICE_HOSTS[(i + place) % len(SPLICE_HOSTS)]
            url = f"http://{spliced(host, place, chr(cp))}:6379/latest/meta-data/"
            vectors.append(UrlVector(url, False, False, "not-ascii"))
    return vectors
