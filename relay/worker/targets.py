"""Which targets a worker may fetch: the URL rule of `pgpulse.url_problem` (sql/40_url_checks.sql)
again, in Python, and the same rule for every address a host resolves to. A job is checked
whatever the database said: anyone holding a region's token can push one.

Both run the shared vectors (tests/support/url_vectors.json); each refusal carries the
vectors' reason key (`loopback`, `metadata`, ...) and a line like the database's."""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PRIVATE_ONLY = "(allowed only with PGPULSE_ALLOW_PRIVATE_TARGETS=on)"


class Refusal(NamedTuple):
    reason: str  # a reason key of tests/support/url_vectors.json, or "malformed"
    message: str  # one line


_V4 = ipaddress.IPv4Address
_N = ipaddress.ip_network

METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
     "instance-data.ec2.internal"}
)  # fmt: skip
LOOPBACK_NAMES = frozenset(
    {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "localhost6",
     "localhost6.localdomain6"}
)  # fmt: skip
# (kind, networks) in the order the database tries them
KINDS = (
    ("loopback", (_N("127.0.0.0/8"), _N("::1/128"))),
    ("link-local", (_N("169.254.0.0/16"), _N("fe80::/10"))),
    ("unspecified", (_N("0.0.0.0/8"), _N("::/128"))),
    (
        "private",
        tuple(
            _N(n)
            for n in (
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",
                "fc00::/7",
                "fec0::/10",
                "64:ff9b:1::/48",
            )
        ),  # fmt: skip
    ),
    ("multicast", (_N("224.0.0.0/4"), _N("ff00::/8"))),
    ("reserved", (_N("240.0.0.0/4"), _N("192.0.0.0/24"), _N("198.18.0.0/15"))),
)
KIND_WORDS = {"unspecified": "the unspecified address"}
# IPv6 ranges whose last 32 bits are an IPv4 address a connection reaches
LAST32 = tuple(
    _N(n) for n in ("::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48")
)
SIX_TO_FOUR = _N("2002::/16")
LOCAL_NAT64 = _N("64:ff9b:1::/48")
COMPATIBLE = _N("::/96")

_UNSAFE_CHARS = re.compile(
    "[\\s\\x00-\\x1f\\x7f\\x80-\\x9f\\xa0\\u1680\\u2000-\\u200f\\u2028\\u2029\\u202f\\u205f"
    "\\u3000\\ufeff]"
)
_FAST = re.compile(
    r"^https?://([a-z0-9-]+\.)+[a-z][a-z0-9-]*(:[1-9][0-9]?[0-9]?[0-9]?)?([/?#][!-\[\]-~]*)?$"
)
_FAST_PRIVATE = re.compile(
    r"^https?://[^/?#]*\.(localhost|internal|local|localdomain|lan|intranet|corp|home|private"
    r"|svc|arpa|goog)(:|/|\?|#|$)"
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(//)?([^/?#]*)")
_PRIVATE_NAME = re.compile(
    r"(^|\.)(internal|local|localdomain|lan|intranet|corp|home|private|svc|home\.arpa)$"
)
_NOT_A_LABEL = re.compile(r"(^|\.)xn--([^.]*-)?(\.|$)")


def embedded(ip: IPAddress) -> list[IPAddress]:
    """What a connection to `ip` reaches: an IPv4 address inside an IPv6 one (mapped,
    compatible, SIIT, NAT64 and local-use NAT64 in the last 32 bits, 6to4 in bits 16-47),
    then the address itself."""
    if ip.version == 6:
        value = int(ip)
        if any(ip in n for n in LAST32) or (ip in COMPATIBLE and value > 1):
            return [_V4(value & 0xFFFFFFFF), ip]
        if ip in SIX_TO_FOUR:
            return [_V4((value >> 80) & 0xFFFFFFFF), ip]
    return [ip]


def _local_nat64_placings(ip: IPAddress) -> list[IPAddress]:
    """Where RFC 6052's /48, /56 and /64 placings put an IPv4 address in 64:ff9b:1::/48."""
    if ip.version != 6 or ip not in LOCAL_NAT64:
        return []
    b = ip.packed
    return [_V4(b[6:8] + b[9:11]), _V4(b[7:8] + b[9:12]), _V4(b[9:13])]


def address_problem(ip: IPAddress, allow_private: bool, shown: str | None = None) -> Refusal | None:
    """Why a connection to `ip` is refused, or None. Metadata endpoints always (also inside
    IPv6 and in local-use NAT64's other placings); the rest unless allow_private."""
    shown = shown or str(ip)

    def named(v4: IPAddress) -> str:
        return f"{v4}, " if str(v4) != shown.strip("[]") else ""

    reaches = embedded(ip)
    for v4 in reaches + _local_nat64_placings(ip):
        if v4 in METADATA:
            return Refusal(
                "metadata", f"host {shown} is {named(v4)}a cloud metadata endpoint (always refused)"
            )
    if allow_private:
        return None
    for v4 in reaches:
        for kind, networks in KINDS:
            if any(v4.version == n.version and v4 in n for n in networks):
                return Refusal(
                    kind, f"host {shown} is {named(v4)}{KIND_WORDS.get(kind, kind)} {PRIVATE_ONLY}"
                )
    return None


def _ipv4_of(parts: list[str]) -> int | None:
    """An IPv4 address as inet_aton reads it (1-4 parts, decimal, octal or hex, the last
    filling the bytes left), or None."""
    if len(parts) > 4:
        return None
    address = 0
    for i, label in enumerate(parts, start=1):
        if re.fullmatch(r"0x[0-9a-f]*", label):
            digits = label[2:].lstrip("0")
            if len(digits) > 8:
                return None
            value = int(digits or "0", 16)
        elif re.fullmatch(r"0[0-7]+", label):
            digits = label.lstrip("0")
            if len(digits) > 11:
                return None
            value = int(digits or "0", 8)
        elif re.fullmatch(r"0|[1-9][0-9]{0,9}", label):
            value = int(label)
        else:
            return None
        if i < len(parts):
            if value > 255:
                return None
            address += value * 256 ** (4 - i)
        elif value >= 256 ** (5 - i):
            return None
        else:
            address += value
    return address


def _code_points(text: str) -> str:
    """Characters outside ASCII shown as <U+XXXX>: they may be invisible."""
    return "".join(c if c.isascii() else f"<U+{ord(c):04X}>" for c in text)


def url_problem(url: str, allow_private: bool = False) -> Refusal | None:
    """Why a worker may not fetch `url`, or None: pgpulse.url_problem's rule."""
    if len(url) <= 2048 and _FAST.match(url) and not _FAST_PRIVATE.match(url):
        # the usual URL (a lower-case public-looking name, no A-label): nothing to take apart
        authority = url.split("/")[2]
        if len(authority) <= 63 and "xn--" not in authority:
            return None
    if len(url) > 2048:
        return Refusal("malformed", f"{len(url)} characters long, over the limit of 2048")
    if _UNSAFE_CHARS.search(url):
        return Refusal("malformed", "has whitespace or control characters")
    if "\\" in url:
        return Refusal("malformed", "has a backslash (write it as %5C)")
    m = _SCHEME.match(url)
    if m is None or (m[1].lower() in ("http", "https") and m[2] is None):
        return Refusal("malformed", "must start with http:// or https://")
    if m[1].lower() not in ("http", "https"):
        return Refusal("malformed", f"scheme {m[1]}, not http or https")
    if m[1] not in ("http", "https"):
        return Refusal("malformed", f"scheme {m[1]} in lower case, please (http or https)")
    authority = m[3]
    if "@" in authority:
        return Refusal(
            "malformed", "has a user name or password before the host (userinfo is refused)"
        )
    bracketed = authority.startswith("[")
    if bracketed:
        hp = re.fullmatch(r"\[([^\]]*)\](:(.*))?", authority)
        if hp is None:
            return Refusal("malformed", "an IPv6 address without its closing bracket")
    else:
        hp = re.fullmatch(r"([^:]*)(:(.*))?", authority)
    assert hp is not None  # every string matches: the port part is optional
    host, port = hp[1], hp[3]
    shown = f"[{host}]" if bracketed else host
    if hp[2] is not None:
        if port == "":
            return Refusal("malformed", 'empty port after ":" (give 1-65535 or none)')
        if not re.fullmatch(r"[0-9]+", port):
            return Refusal("malformed", f'port "{port}" is not a number 1-65535')
        if len(port.lstrip("0")) > 5 or not 1 <= int(port) <= 65535:
            return Refusal("malformed", f"port {port} out of range 1-65535")
    if host == "":
        return Refusal("malformed", "no host")
    if not host.isascii():
        return Refusal(
            "not-ascii",
            f"host {_code_points(shown)} is not ASCII (store an internationalised name in its A-label "
            "form, xn--...)",
        )
    if bracketed:
        if not re.fullmatch(r"[0-9A-Fa-f:.]+", host):
            return Refusal("malformed", f"host [{host}] is not an IPv6 address")
        try:
            ip: IPAddress = ipaddress.IPv6Address(host)
        except ValueError:
            return Refusal("malformed", f"host [{host}] is not an IPv6 address")
        return address_problem(ip, allow_private, shown)
    name = host.lower()
    if name.endswith("."):
        name = name[:-1]
    if name == "" or re.search(r"(^|\.)(\.|$)", name):
        return Refusal("malformed", f"host {host} has an empty label")
    if not re.fullmatch(r"[a-z0-9._-]*", name):
        return Refusal("malformed", f"host {host} has characters a host name cannot have")
    if len(name) > 253 or re.search(r"[^.]{64}", name):
        return Refusal("malformed", f"host {host[:80]} is longer than DNS allows")
    if _NOT_A_LABEL.search(name):
        return Refusal(
            "not-a-label",
            f"host {host} has an xn-- label that encodes no Unicode (not an A-label)",
        )
    parts = name.split(".")
    if re.fullmatch(r"0x[0-9a-f]*|[0-9]+", parts[-1]):
        value = _ipv4_of(parts)
        if value is None:
            return Refusal("malformed", f"host {host} is not an IPv4 address")
        return address_problem(_V4(value), allow_private, shown)
    if name in METADATA_NAMES:
        return Refusal("metadata", f"host {host} is a cloud metadata endpoint (always refused)")
    if allow_private:
        return None
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return Refusal("loopback", f"host {host} is loopback {PRIVATE_ONLY}")
    if _PRIVATE_NAME.search(name):
        return Refusal("private-name", f"host {host} is a private network name {PRIVATE_ONLY}")
    if len(parts) == 1:
        return Refusal(
            "single-label",
            f"host {host} is a single-label name, resolved inside the local network {PRIVATE_ONLY}",
        )
    return None


def url_host_address(url_host: str) -> IPAddress | None:
    """The address a URL's host names when it is an IP address in any spelling the rule
    reads (`2130706433`, `0x7f.1`, `[::1]`), else None (a name to resolve)."""
    host = url_host.strip("[]").rstrip(".").lower()
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    parts = host.split(".")
    if parts and re.fullmatch(r"0x[0-9a-f]*|[0-9]+", parts[-1]):
        value = _ipv4_of(parts)
        if value is not None:
            return _V4(value)
    return None
