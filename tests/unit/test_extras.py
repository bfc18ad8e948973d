"""Which extra a command needs, and the one line it prints without it (the lean wheel test
in tests/packaging runs the real thing)."""

import importlib.util

import pytest

from relay import extras


def test_a_missing_module_names_the_commands_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "redis" else real(name, *a)
    )
    extras.require("devserver")  # redis is not the dev server's
    with pytest.raises(extras.MissingExtra) as missing:
        extras.require("bench")
    assert str(missing.value) == "pgpulse bench needs the bench extra: pip install 'pgpulse[bench]'"
    extras.require("relay")  # the relay needs no extra


def test_an_import_missed_deeper_down_is_explained_only_when_an_extra_brings_it():
    hiredis = ModuleNotFoundError("No module named 'hiredis'", name="hiredis")
    assert str(extras.explain("bench", hiredis)) == (
        "pgpulse bench needs the bench extra: pip install 'pgpulse[bench]'"
    )
    assert str(extras.explain("http", hiredis)) == (
        "pgpulse http needs the devserver extra: pip install 'pgpulse[devserver]'"
    )
    assert extras.explain("relay", ModuleNotFoundError("x", name="psycopg")) is None
