"""pgpulse's wheel and a folder of wheels of everything it may need, for installing it offline
with pip (--no-index --find-links): repacked from this test run's environment, not PyPI."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.cli import ROOT

SOURCES = ("pyproject.toml", "README.md", "LICENSE", "relay", "sql", "migrations")


def requirement_closure(requirements: list[str], extras: set[str] = frozenset()) -> set[str]:
    """Distribution names that pip installs for these requirements (markers evaluated here)."""
    found: set[str] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, wanted = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
            continue
        name = canonicalize_name(req.name)
        if name == "pgpulse":  # a self-reference: pgpulse[devserver] inside pgpulse[bench]
            continue
        dist = importlib.metadata.distribution(name)
        key = (name, frozenset(req.extras))
        if key in found:
            continue
        found.add(key)
        todo += [(Requirement(r), set(req.extras)) for r in dist.requires or []]
    return {name for name, _ in found}


def repack(dist: importlib.metadata.Distribution, into: Path) -> None:
    """A wheel made again from an installed distribution's files (its RECORD)."""
    tag = next(
        line.split(": ", 1)[1]
        for line in dist.read_text("WHEEL").splitlines()
        if line.startswith("Tag: ")
    )
    name = dist.metadata["Name"].replace("-", "_").replace(".", "_")
    skip = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    with zipfile.ZipFile(into / f"{name}-{dist.version}-{tag}.whl", "w") as wheel:
        record = []
        for file in dist.files:
            if (
                file.parts[0] == ".."
                or "__pycache__" in file.parts
                or (file.parts[0].endswith(".dist-info") and file.name in skip)
            ):
                continue
            wheel.write(file.locate(), file.as_posix())
            record.append(f"{file.as_posix()},,")
        info = next(f.parts[0] for f in dist.files if f.parts[0].endswith(".dist-info"))
        record.append(f"{info}/RECORD,,")
        wheel.writestr(f"{info}/RECORD", "\n".join(record) + "\n")


def build_wheelhouse(base: Path) -> Path:
    """pgpulse's wheel, built from a copy of the checkout, beside wheels of everything its
    extras may need; returns the folder."""
    src, house = base / "src", base / "wheelhouse"
    src.mkdir()
    house.mkdir()
    for name in SOURCES:  # a copy: the build leaves nothing in the checkout
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(house),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(src)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    every = [
        *project["dependencies"],
        *(r for extra in ("devserver", "bench") for r in project["optional-dependencies"][extra]),
    ]
    for name in requirement_closure(every):
        repack(importlib.metadata.distribution(name), house)
    return house
