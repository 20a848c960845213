"""The ``xai`` Airflow connection: its form in the UI and the settings read from it."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from airflow_provider_xai_image.api.images import DEFAULT_BASE_URL, DEFAULT_MODEL
from airflow_provider_xai_image.exceptions import XaiConnectionConfigError

if TYPE_CHECKING:
    from airflow.sdk import Connection

CONN_TYPE = "xai"
DEFAULT_CONN_ID = "xai_default"
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Read timeout of image requests: a ``2.0`` request at 2k takes 60-80 s and ``n`` multiplies it; a
#: shorter one would cut off work that xAI still bills.
DEFAULT_IMAGE_READ_TIMEOUT = 900.0
#: Read timeout of every other call (free, and quick).
DEFAULT_READ_TIMEOUT = 120.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_MAX_AMBIGUOUS_RETRIES = 0
#: xAI's rate limit of each image model, per team (requests per second); teams with a raised limit set theirs.
DEFAULT_REQUESTS_PER_SECOND = 5.0
#: What an API key may hold: visible ASCII, nothing an HTTP header refuses (a newline, a space).
_KEY_CHARACTERS = re.compile(r"[\x21-\x7e]+")

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
                "timeout": DEFAULT_IMAGE_READ_TIMEOUT,
                "max_retries": DEFAULT_MAX_RETRIES,
                "max_ambiguous_retries": DEFAULT_MAX_AMBIGUOUS_RETRIES,
                "requests_per_second": DEFAULT_REQUESTS_PER_SECOND,
                "default_model": DEFAULT_MODEL,
            }
        ),
        "timeout": str(DEFAULT_IMAGE_READ_TIMEOUT),
        "max_retries": str(DEFAULT_MAX_RETRIES),
        "max_ambiguous_retries": str(DEFAULT_MAX_AMBIGUOUS_RETRIES),
        "requests_per_second": f"{DEFAULT_REQUESTS_PER_SECOND:g}",
        "default_model": DEFAULT_MODEL,
    },
}

#: Extra fields shown in the connection form (Airflow's declarative ``conn-fields``). They start empty, with
#: the defaults as placeholders, so a connection saved from the UI follows the defaults of later versions.
CONN_FIELDS: dict[str, Any] = {
    "timeout": {
        "label": "Timeout (seconds)",
        "description": (
            f"Read timeout of one request (default {DEFAULT_IMAGE_READ_TIMEOUT:g} s for image requests, "
            f"{DEFAULT_READ_TIMEOUT:g} s for others); the connect timeout is {DEFAULT_CONNECT_TIMEOUT:g} s."
        ),
        "schema": {"type": ["number", "null"]},
    },
    "max_retries": {
        "label": "Max retries",
        "description": (
            "Retries of 503, connection errors and (outside the generate operator, which slows down "
            "instead) 429, with exponential backoff, Retry-After honoured."
        ),
        "schema": {"type": ["integer", "null"]},
    },
    "max_ambiguous_retries": {
        "label": "Max ambiguous retries",
        "description": (
            "Re-sends of a paid image request that may have reached xAI (read timeout, dropped "
            "connection, 500/502/504). Each may be billed; 0 never pays twice."
        ),
        "schema": {"type": ["integer", "null"]},
    },
    "requests_per_second": {
        "label": "Requests per second",
        "description": (
            "xAI's rate limit of each image model for your team (default "
            f"{DEFAULT_REQUESTS_PER_SECOND:g}). The generate operator paces its requests by it, slower on 429s."
        ),
        "schema": {"type": ["number", "null"]},
    },
    "default_model": {
        "label": "Default model",
        "description": "Model used when a task names none.",
        "schema": {"type": ["string", "null"]},
    },
}


def form_widgets() -> dict[str, Any]:
    """:data:`CONN_FIELDS` as wtforms fields, for an Airflow whose ProvidersManager ignores ``conn-fields``
    (before 3.2) and asks the hook instead; empty like them. Raises ImportError without wtforms (it comes
    with the FAB provider), which Airflow takes as "no form fields"."""
    from wtforms import IntegerField, StringField
    from wtforms.validators import Optional

    return {
        name: (IntegerField if "integer" in field["schema"]["type"] else StringField)(
            field["label"], validators=[Optional()], description=field["description"]
        )
        for name, field in CONN_FIELDS.items()
    }


@dataclass(frozen=True)
class XaiConnectionSettings:
    """Everything the hook needs from the connection; the key is a ``SecretStr`` so reprs mask it."""

    api_key: SecretStr = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: The connection's read timeout; None: :data:`DEFAULT_IMAGE_READ_TIMEOUT` or :data:`DEFAULT_READ_TIMEOUT`.
    read_timeout: float | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    max_ambiguous_retries: int = DEFAULT_MAX_AMBIGUOUS_RETRIES
    #: xAI's rate limit of each image model for the team: where the generate operator's pace starts.
    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND
    default_model: str = DEFAULT_MODEL

    def timeout(self, image_request: bool = False) -> tuple[float, float]:
        """``(connect, read)`` seconds for one call."""
        default = DEFAULT_IMAGE_READ_TIMEOUT if image_request else DEFAULT_READ_TIMEOUT
        return self.connect_timeout, default if self.read_timeout is None else self.read_timeout

    @classmethod
    def from_connection(cls, conn: Connection) -> XaiConnectionSettings:
        api_key = api_key_of(conn)
        extra = conn.extra_dejson

        def option(name: str) -> Any:
            value = extra.get(name, extra.get(f"extra__{CONN_TYPE}__{name}"))
            return None if value == "" else value

        try:
            timeout = option("timeout")
            read_timeout: float | None
            if isinstance(timeout, list | tuple):
                connect_timeout, read_timeout = (float(value) for value in timeout)
            else:
                connect_timeout = DEFAULT_CONNECT_TIMEOUT
                read_timeout = None if timeout is None else float(timeout)
        except (TypeError, ValueError):
            raise XaiConnectionConfigError(
                f"Connection {conn.conn_id!r}: extra 'timeout' must be seconds or [connect, read], got {timeout!r}"
            ) from None

        def count(name: str, default: int) -> int:
            value = option(name)
            try:
                number = default if value is None else int(value)
            except (TypeError, ValueError):
                number = -1
            if number < 0 or isinstance(value, bool | float):
                raise XaiConnectionConfigError(
                    f"Connection {conn.conn_id!r}: extra {name!r} must be a whole number >= 0, got {value!r}"
                )
            return number

        def rate(name: str, default: float) -> float:
            value = option(name)
            try:
                number = default if value is None else float(value)
            except (TypeError, ValueError):
                number = math.nan
            if not 0 < number < math.inf or isinstance(value, bool):
                raise XaiConnectionConfigError(
                    f"Connection {conn.conn_id!r}: extra {name!r} must be requests per second > 0, got {value!r}"
                )
            return number

        return cls(
            api_key=api_key,
            base_url=base_url(conn.host, conn.port, conn.schema),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_retries=count("max_retries", DEFAULT_MAX_RETRIES),
            max_ambiguous_retries=count("max_ambiguous_retries", DEFAULT_MAX_AMBIGUOUS_RETRIES),
            requests_per_second=rate("requests_per_second", DEFAULT_REQUESTS_PER_SECOND),
            default_model=option("default_model") or DEFAULT_MODEL,
        )


def api_key_of(conn: Connection) -> SecretStr:
    """The connection's API key without surrounding whitespace (a secret read from a file often ends in a
    newline); refused, without being echoed, when it holds a character no HTTP header may carry."""
    key = (conn.password or "").strip()
    if not key:
        raise XaiConnectionConfigError(
            f"Connection {conn.conn_id!r} has no API key (the password field). " + how_to_create(conn.conn_id)
        )
    if not _KEY_CHARACTERS.fullmatch(key):
        raise XaiConnectionConfigError(
            f"Connection {conn.conn_id!r}: the API key holds a character an HTTP header cannot carry (a line "
            "break, a space or a control character inside it); paste the key again."
        )
    return SecretStr(key)


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
