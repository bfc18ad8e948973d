"""What the suites share, one home each; fixtures stay in the conftest.py files and use these.

- `activity`: what the relays are doing in the database (LISTEN, open claims).
- `catalog`: a database's pgpulse objects from PostgreSQL's catalog, for comparing two.
- `cli`: the checkout's root, a clean environment, `pgpulse ...` in a subprocess, one-line errors.
- `processes`: a long-running `pgpulse` process (relay, http) with its output in files.
- `regions`: the regions the relay suites publish to, their tokens, a relay's environment.
- `seeding`: regions, monitors, outbox jobs and ticks in a test database.
- `queues`: the regional queues read straight from redis-server; job timestamps.
- `dsn`: connection URLs as another user, with a password.
- `fakes`: the relay's seams faked (HTTP client, outbox store, clock) for unit tests.
- `hijacks`: objects a hostile role plants in public, for the tick's search_path tests.
- `waiting`: waiting on a condition with a deadline (the suites never sleep to wait).
- `cron_minute`: one pg_cron minute for every test that waits for one (their scenarios
  arranged together before it).

Import as `from tests.support.<module> import <name>`; never from a conftest module.
"""
