"""The dev server as a managed subprocess, for tests, benchmarks and the demo."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from relay.devserver.options import ADMIN_TOKEN_ENV, REDIS_URL_ENV, TOKENS_ENV
from relay.errors import DevServerError
from relay.local.embedded import ManagedService, die_with_parent, free_port

# The default of DevServer(admin_token=...): a random token made for this server.
NEW_ADMIN_TOKEN = object()
# The folder holding the `relay` package, so the subprocess imports this same code.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class DevServer(ManagedService):
    """Run `python -m relay.devserver` in a subprocess and drive its admin API."""

    def __init__(
        self,
        redis_url: str,
        tokens: dict[str, int],
        admin_token: str | None | object = NEW_ADMIN_TOKEN,
        port: int | None = None,
        host: str = "127.0.0.1",
        redis_compat: str | None = None,
        strict_script_keys: bool = False,
    ) -> None:
        self.redis_url = redis_url
        self.tokens = dict(tokens)
        # no fixed default: a fresh random admin token unless one is given (None: admin off)
        self.admin_token: str | None = (
            secrets.token_urlsafe(24)
            if admin_token is NEW_ADMIN_TOKEN
            else cast("str | None", admin_token)
        )
        self.host = host
        self.redis_compat = redis_compat  # e.g. "6.2": newer commands refused
        self.strict_script_keys = strict_script_keys  # scripts touch only the keys in KEYS
        self.port = port
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> DevServer:
        import httpx

        if self.proc is not None and self.proc.poll() is None:
            return self  # already running
        if self.port is None:
            self.port = free_port()
        args = [
            sys.executable,
            "-m",
            "relay.devserver",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        if self.redis_compat:
            args += ["--redis-compat", self.redis_compat]
        if self.strict_script_keys:
            args.append("--strict-script-keys")
        # secrets go by environment: a command line is readable by every user (ps)
        env = {k: v for k, v in os.environ.items() if k not in (TOKENS_ENV, ADMIN_TOKEN_ENV)}
        env[REDIS_URL_ENV] = self.redis_url
        env[TOKENS_ENV] = "\n".join(f"{token}={db}" for token, db in self.tokens.items())
        if self.admin_token:
            env[ADMIN_TOKEN_ENV] = self.admin_token
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        probe, expected = ("/_admin/stats", 200) if self.admin_token else ("/", 401)
        headers = {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self.proc.poll() is not None:
                    self._fail(f"devserver exited with {self.proc.returncode}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get(self.url + probe, headers=headers).status_code == expected:
                        return self
                if time.monotonic() > deadline:
                    self._fail(f"devserver did not answer within {timeout:g} s")
                time.sleep(0.05)

    def _fail(self, what: str) -> None:
        """Stop, and raise with the last lines the subprocess wrote."""
        message = self._log_tail()
        self.stop()
        raise DevServerError(f"{what}: {message}")

    def _log_tail(self, lines: int = 5) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _admin(self, method: str, path: str, body: Any = None) -> dict:
        import httpx

        if not self.admin_token:
            raise DevServerError("this DevServer was started without an admin token")
        response = httpx.request(
            method,
            self.url + path,
            json=body,
            timeout=10.0,
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        if response.status_code != 200:
            raise DevServerError(
                f"admin {method} {path} answered {response.status_code}: {response.text}"
            )
        return response.json()

    def set_faults(self, spec: dict, tokens: list[str] | None = None) -> dict:
        """Install a fault rule (fields in `relay.devserver.faults`), for `tokens` or for all."""
        body = dict(spec)
        if tokens is not None:
            body["tokens"] = list(tokens)
        return self._admin("POST", "/_admin/faults", body)

    def clear_faults(self) -> dict:
        return self._admin("DELETE", "/_admin/faults")

    def stats(self) -> dict:
        return self._admin("GET", "/_admin/stats")

    def reset_stats(self) -> dict:
        return self._admin("DELETE", "/_admin/stats")
