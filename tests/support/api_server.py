"""A real ``airflow api-server`` on a free loopback port, with SimpleAuthManager users and the test auth
manager (:mod:`support.auth_manager`); its output goes to a log file whose tail is shown when it fails to
start. Used by the gallery and review tests."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.dag_runner import airflow_executable, pycache_env

#: The folder holding the ``support`` package: on a subprocess's PYTHONPATH, it can import the auth manager.
TESTS_ROOT = Path(__file__).resolve().parents[1]


def auth_manager_env() -> dict[str, str]:
    """The environment that makes an Airflow service use :class:`support.auth_manager.GalleryTestAuthManager`."""
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_ROOT), os.environ.get("PYTHONPATH")])),
        "AIRFLOW__CORE__AUTH_MANAGER": "support.auth_manager.GalleryTestAuthManager",
    }


def free_port() -> int:
    """A TCP port nothing listens on at the moment, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ApiServer:
    """A started ``airflow api-server``: its process, URL, log and users' passwords."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    passwords: dict[str, str]

    @classmethod
    def start(cls, workdir: Path, roles: Mapping[str, str], config: dict[str, str] | None = None) -> ApiServer:
        """Start the server (without waiting for it: see :meth:`wait_ready`).

        :param workdir: A folder for its passwords file and log.
        :param roles: Each user and their SimpleAuthManager role.
        :param config: Airflow configuration for it, as ``AIRFLOW__<SECTION>__<KEY>`` variables.
        """
        passwords = {user: secrets.token_urlsafe(16) for user in roles}
        passwords_file = workdir / "simple_auth_manager_passwords.json"
        passwords_file.write_text(json.dumps(passwords))
        port = free_port()
        env = pycache_env(
            {
                **os.environ,
                **auth_manager_env(),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{user}:{role}" for user, role in roles.items()),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
                **(config or {}),
            }
        )
        log_path = workdir / "api-server.log"
        command = [*airflow_executable(), "api-server", "--host", "127.0.0.1", "--port", str(port)]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*command, "--apps", "core", "--workers", "1"],
                env=env,
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(process, f"http://127.0.0.1:{port}", log_path, passwords)

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until the server answers its health check.

        :param timeout: Seconds to wait at most.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"airflow api-server exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"airflow api-server not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server and its workers (SIGTERM to its process group, SIGKILL after 20 s)."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def token(self, user: str) -> str:
        """A JWT for ``user``, the way Airflow's API hands them out (``POST /auth/token``).

        :param user: One of the users it was started with.
        """
        response = httpx.post(
            f"{self.base_url}/auth/token",
            json={"username": user, "password": self.passwords[user]},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return response.json()["access_token"]

    def log_size(self) -> int:
        """How many bytes the server has logged so far (for :meth:`log_since`)."""
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        """What the server logged after ``offset`` bytes.

        :param offset: A :meth:`log_size` taken earlier.
        """
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def log_tail(self, chars: int = 5000) -> str:
        """The end of the server's output."""
        return self.log_path.read_text(errors="replace")[-chars:]
