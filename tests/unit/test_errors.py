"""One errors module: bad user input is a UserInputError (not a database error), and the CLI
prints every pgpulse error as one line."""

from __future__ import annotations

import pytest

from relay import cli, errors
from relay.db import DatabaseError
from relay.schedule import admin, maintenance


class NoQueries:
    """A connection bad input must never reach."""

    def execute(self, *args, **kwargs):
        raise AssertionError("a query ran for bad input")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: admin.check_region_code("Bad_Code"), "bad region code 'Bad_Code'"),
        (lambda: admin.dlq_retry(NoQueries(), "not-a-uuid"), "bad job id 'not-a-uuid'"),
        (lambda: admin.dlq_purge(NoQueries(), "42"), "bad job id '42'"),
        (lambda: maintenance.parse_weekdays("sat,funday"), "bad weekday 'funday'"),
        (lambda: maintenance.parse_monitor_ids([" "]), "bad monitor id"),
        (
            lambda: maintenance.add(NoQueries(), time_zone="UTC", starts="2026-01-01 00:00"),
            "needs both --from and --to",
        ),
    ],
)
def test_bad_input_is_a_user_input_error_not_a_database_error(call, message):
    with pytest.raises(errors.UserInputError, match=message) as caught:
        call()
    assert not isinstance(caught.value, DatabaseError)


def test_every_pgpulse_error_lives_in_relay_errors():
    from relay import db, extras
    from relay.delivery import upstash
    from relay.devserver import server
    from relay.local import embedded

    assert db.DatabaseError is errors.DatabaseError
    assert upstash.TokenRefused is errors.TokenRefused
    assert embedded.ServiceError is errors.ServiceError
    assert server.DevServerError is errors.DevServerError
    assert extras.MissingExtra is errors.MissingExtra
    assert issubclass(errors.UnknownRegion, errors.UserInputError)


def test_the_cli_prints_a_pgpulse_error_as_one_line(monkeypatch, capsys):
    def bad_code(args):
        admin.check_region_code(args.code)

    monkeypatch.setitem(cli.COMMANDS, "region", bad_code)
    assert (
        cli.main(["region", "add", "Bad_Code", "--database-url", "postgresql://127.0.0.1:1/x"]) == 1
    )
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "pgpulse region: error: bad region code 'Bad_Code': use lowercase letters, digits and '-'"
    ]


def test_every_configured_secret_is_registered_with_the_redactor(monkeypatch):
    from relay import logs

    secrets = {
        "CRON_SECRET": "cron-s3cret",
        "UPSTASH_REDIS_REST_TOKEN_EU_WEST_1": "tok-eu-123",
        "PGPULSE_STATUS_SECRET": "status-s3cret",
        "PGPASSWORD": "pg-pass-99",
        "PGPULSE_DEVSERVER_TOKENS": "dev-aaa=0 dev-bbb=1",
        "PGPULSE_ALERT_WEBHOOK_URL": "https://hooks.invalid/T/B/x1y2",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(logs, "_secrets", set())
    cli.protect_secrets()
    assert logs.redact(" ".join(secrets.values())) == " ".join(["***"] * len(secrets))
