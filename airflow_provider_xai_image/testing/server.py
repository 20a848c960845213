"""``XaiEmulator``: the emulator's backend and WSGI app served by werkzeug on a loopback port."""

from __future__ import annotations

import json
import logging
import secrets
import threading
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from airflow_provider_xai_image.testing.backend import EmulatorBackend
from airflow_provider_xai_image.testing.config import EmulatorConfig
from airflow_provider_xai_image.testing.records import LoggedRequest
from airflow_provider_xai_image.testing.responses import API_ROOT, EmulatorApp

logger = logging.getLogger(__name__)

#: How often the serving loop checks for a stop request (the bound on how long ``stop()`` waits for it).
SHUTDOWN_POLL_SECONDS = 0.05


class _QuietRequestHandler(WSGIRequestHandler):
    """Sends werkzeug's per-request access log to this module's logger at DEBUG, not to stderr."""

    def log(self, type: str, message: str, *args: Any) -> None:
        logger.debug("%s %s: " + message, self.address_string(), type, *args)


class XaiEmulator:
    """A local xAI image API, for tests, demos, benchmarks and offline DAG runs.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`)::

        with XaiEmulator(latency=0.1, batch_seconds=0.2) as xai:
            client = OpenAI(base_url=xai.base_url, api_key=xai.api_key)

    Keyword arguments other than ``host``, ``port`` and ``api_key`` are :class:`EmulatorConfig`
    fields, validated at once; :meth:`configure` changes them while the emulator runs.
    :meth:`expire_batch` and :meth:`refuse_batch` play xAI's part in cancelling a batch.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None, **config: Any) -> None:
        self.host = host
        self.port = port
        self.backend = EmulatorBackend(api_key or f"xai-emu-{secrets.token_hex(16)}", EmulatorConfig(**config))
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> XaiEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> XaiEmulator:
        """Start serving in a daemon thread (port 0 picks a free port; see :attr:`base_url`)."""
        if self._server is not None:
            raise RuntimeError("The xAI emulator is already running.")
        server = make_server(
            self.host, self.port, EmulatorApp(self.backend), threaded=True, request_handler=_QuietRequestHandler
        )
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name="xai-emulator",
            daemon=True,
        )
        self._server = server
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; waits for requests in progress to finish. Does nothing when not running."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the server root (temporary images and ``/_emulator`` live here)."""
        if self._server is None:
            raise RuntimeError("The xAI emulator is not running; call start() or use it as a context manager.")
        return f"http://{self._server.host}:{self._server.port}"

    @property
    def base_url(self) -> str:
        """The API base URL to give clients, like ``https://api.x.ai/v1``."""
        return f"{self.url}{API_ROOT}"

    @property
    def api_key(self) -> str:
        return self.backend.api_key

    def connection_uri(self, *, api_key: str | None = None, **extra: Any) -> str:
        """An Airflow connection for this emulator, as JSON for ``AIRFLOW_CONN_XAI_DEFAULT``.

        :param api_key: The key it carries; default the emulator's own.
        :param extra: The connection's extras (``max_retries``, ``timeout``, ...), if any.
        """
        key = self.api_key if api_key is None else api_key
        connection: dict[str, Any] = {"conn_type": "xai", "password": key, "host": self.base_url}
        if extra:
            connection["extra"] = extra
        return json.dumps(connection)

    @property
    def config(self) -> EmulatorConfig:
        """A copy of the current settings and still-queued faults."""
        return self.backend.config

    def configure(self, **fields: Any) -> EmulatorConfig:
        """Change settings or queue faults, e.g. ``configure(status_script=[429, 503], retry_after=0)``."""
        return self.backend.configure(**fields)

    def reset(self) -> None:
        """Forget all state and restore the configuration given to the constructor."""
        self.backend.reset()

    @property
    def requests_log(self) -> list[LoggedRequest]:
        """Every request received so far (except to ``/_emulator``), oldest first."""
        return self.backend.requests_log

    @property
    def images_billed(self) -> int:
        return self.backend.images_billed

    @property
    def cost_usd_ticks(self) -> int:
        return self.backend.cost_usd_ticks

    def stats(self) -> dict[str, int]:
        """The counters of ``GET /_emulator/stats``."""
        return self.backend.stats()

    def expire_images(self) -> None:
        """Make every temporary image URL issued so far expire now."""
        self.backend.expire_images()

    def expire_batch(self, batch_id: str, message: str | None = None) -> dict[str, Any]:
        """Expire a batch as xAI would: pending requests cancelled, ``cancel_by_xai_message`` set."""
        return self.backend.expire_batch(batch_id, message)

    def refuse_batch(self, batch_id: str, message: str) -> dict[str, Any]:
        """Have xAI refuse a batch: what is pending is cancelled, ``cancel_by_xai_message`` is ``message``."""
        return self.backend.refuse_batch(batch_id, message)
