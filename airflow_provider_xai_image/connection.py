"""The ``xai`` Airflow connection: its form in the UI and the settings read from it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from airflow_provider_xai_image.exceptions import XaiConnectionConfigError
from airflow_provider_xai_image.models import DEFAULT_BASE_URL, DEFAULT_MODEL

if TYPE_CHECKING:
    from airflow.sdk import Connection

CONN_TYPE = "xai"
DEFAULT_CONN_ID = "xai_default"
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 180.0
DEFAULT_MAX_RETRIES = 5

HOW_TO_CREATE = (
    "Create it in the Airflow UI (Admin > Connections, type 'xAI', API key in 'API Key'), with "
    "`airflow connections add {conn_id} --conn-type xai --conn-password <API key>`, or with the "
    'environment variable AIRFLOW_CONN_{env}=\'{{"conn_type": "xai", "password": "<API key>"}}\'.'
)

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden_fields": ["schema", "port", "login"],
    "relabeling": {"password": "API Key", "host": "Base URL"},
    "placeholders": {
        "host": DEFAULT_BASE_URL,
        "password": "xai-...",
        "extra": json.dumps(
            {
                "timeout": DEFAULT_READ_TIMEOUT,
                "max_retries": DEFAULT_MAX_RETRIES,
                "default_model": DEFAULT_MODEL,
            }
        ),
        "timeout": str(DEFAULT_READ_TIMEOUT),
        "max_retries": str(DEFAULT_MAX_RETRIES),
        "default_model": DEFAULT_MODEL,
    },
}

#: Extra fields shown in the connection form (Airflow's declarative ``conn-fields``).
CONN_FIELDS: dict[str, Any] = {
    "timeout": {
        "label": "Timeout (seconds)",
        "description": f"Read timeout of one request; the connect timeout is {DEFAULT_CONNECT_TIMEOUT:g} s.",
        "schema": {"type": ["number", "null"], "default": DEFAULT_READ_TIMEOUT},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of 429, 5xx and connection errors (exponential backoff, Retry-After honoured).",
        "schema": {"type": ["integer", "null"], "default": DEFAULT_MAX_RETRIES},
    },
    "default_model": {
        "label": "Default model",
        "description": "Model used when a task names none.",
        "schema": {"type": ["string", "null"], "default": DEFAULT_MODEL},
    },
}


@dataclass(frozen=True)
class XaiConnectionSettings:
    """Everything the hook needs from the connection; the key is a ``SecretStr`` so reprs mask it."""

    api_key: SecretStr = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    default_model: str = DEFAULT_MODEL

    @classmethod
    def from_connection(cls, conn: Connection) -> XaiConnectionSettings:
        if not conn.password:
            raise XaiConnectionConfigError(
                f"Connection {conn.conn_id!r} has no API key (the password field). " + how_to_create(conn.conn_id)
            )
        extra = conn.extra_dejson

        def option(name: str) -> Any:
            value = extra.get(name, extra.get(f"extra__{CONN_TYPE}__{name}"))
            return None if value == "" else value

        try:
            timeout = option("timeout")
            if isinstance(timeout, list | tuple):
                connect_timeout, read_timeout = (float(value) for value in timeout)
            else:
                connect_timeout = DEFAULT_CONNECT_TIMEOUT
                read_timeout = DEFAULT_READ_TIMEOUT if timeout is None else float(timeout)
        except (TypeError, ValueError):
            raise XaiConnectionConfigError(
                f"Connection {conn.conn_id!r}: extra 'timeout' must be seconds or [connect, read], got {timeout!r}"
            ) from None
        max_retries = option("max_retries")
        try:
            retries = DEFAULT_MAX_RETRIES if max_retries is None else int(max_retries)
        except (TypeError, ValueError):
            raise XaiConnectionConfigError(
                f"Connection {conn.conn_id!r}: extra 'max_retries' must be a whole number, got {max_retries!r}"
            ) from None
        return cls(
            api_key=SecretStr(conn.password),
            base_url=base_url(conn.host, conn.port, conn.schema),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_retries=retries,
            default_model=option("default_model") or DEFAULT_MODEL,
        )


def how_to_create(conn_id: str) -> str:
    return HOW_TO_CREATE.format(conn_id=conn_id, env=conn_id.upper())


def base_url(host: str | None, port: int | None = None, path: str | None = None) -> str:
    """The API base URL from the connection: host (with or without scheme), else xAI's.

    A connection given as a URI (``xai://:KEY@api.x.ai/v1``) splits the base URL into host, port and
    schema (the path); they are joined again when the host carries neither itself.
    """
    if not host:
        return DEFAULT_BASE_URL
    if "://" not in host:
        host = f"https://{host}"
    scheme, _, rest = host.partition("://")
    if "/" not in rest:
        if port and ":" not in rest:
            rest = f"{rest}:{port}"
        if path:
            rest = f"{rest}/{path.strip('/')}"
    return f"{scheme}://{rest}".rstrip("/")
