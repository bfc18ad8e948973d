"""A long-running `pgpulse` process (relay, http) for one test: its own session, so it can
be signalled alone, and its output in files, readable while it runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.cli import ROOT
from tests.support.regions import REGIONS, make_relay_env
from tests.support.waiting import wait_for


class PgpulseProcess:
    """`pgpulse args` in a subprocess; with `port`, its HTTP endpoints are at `url`."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        workdir: Path,
        name: str,
        *,
        port: int | None = None,
        preexec_fn: Callable[[], Any] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}" if port else None
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", *args],
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=preexec_fn,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            os.killpg(self.proc.pid, sig)  # its own session: the group is just this process

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout:g} s\n{self.tail()}"
            ) from None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, and SIGKILL if it has not ended within `timeout`; its exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def wait_ready(self) -> PgpulseProcess:
        """Waits until /healthz answers 200."""

        def up() -> bool:
            if not self.running():
                raise AssertionError(f"{self.name} exited early\n{self.tail()}")
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            return False

        wait_for(up, 30, f"the HTTP endpoints of {self.name}")
        return self

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    @property
    def output(self) -> str:
        return self.stdout() + self.stderr()

    def events(self) -> list[dict]:
        """The structured log lines written so far (a line being written is skipped)."""
        events = []
        for line in self.stderr().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def has_event(self, name: str, **fields: Any) -> bool:
        return any(
            e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
            for e in self.events()
        )

    def tail(self, lines: int = 15) -> str:
        text = self.stderr().splitlines()[-lines:]
        return f"--- {self.name} (exit {self.proc.poll()}) stderr tail:\n" + "\n".join(text)


class Processes:
    """The `pgpulse` processes one test starts; whatever still runs at its end is killed."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[PgpulseProcess] = []

    def start(self, *args: str, env: dict[str, str], **kwargs: Any) -> PgpulseProcess:
        name = f"{args[0]}{len(self.started)}" if args else f"pgpulse{len(self.started)}"
        process = PgpulseProcess(list(args), env, self.workdir, name, **kwargs)
        self.started.append(process)
        return process

    @property
    def output(self) -> str:
        return "".join(p.output for p in self.started)

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.started[-4:])

    def stop_all(self) -> None:
        for process in self.started:
            process.signal(signal.SIGTERM)
        for process in self.started:
            process.stop()

    def cleanup(self) -> None:
        for process in self.started:
            if process.running():
                process.kill()


class Relays(Processes):
    """`pgpulse relay` processes of one test, publishing to the regions of
    `tests.support.regions` through the dev server at `upstash_url`."""

    def __init__(self, db_url: str, upstash_url: str, workdir: Path) -> None:
        super().__init__(workdir)
        self.db_url = db_url
        self.upstash_url = upstash_url

    def env(self, tokens: dict[str, str] | None = None, **settings: Any) -> dict[str, str]:
        """Every region with its own token unless `tokens` (code -> token) says otherwise."""
        tokens = {r.code: (tokens or {}).get(r.code, r.token) for r in REGIONS}
        return make_relay_env(
            self.db_url,
            self.upstash_url,
            tokens,
            shared_url=True,
            **({"poll_interval_s": 1, "log_level": "INFO"} | settings),
        )

    def start(
        self,
        *args: str,
        env: dict[str, str] | None = None,  # type: ignore[override]
        **settings: Any,
    ) -> PgpulseProcess:
        return super().start("relay", *args, env=env or self.env(**settings))

    def run_once(self, timeout: float = 60, **settings: Any) -> dict:
        """`pgpulse relay --once --json`; returns its totals."""
        process = self.start("--once", "--json", **settings)
        code = process.wait(timeout)
        assert code == 0, process.tail()
        return json.loads(process.stdout())
