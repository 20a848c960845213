"""The emulator's WSGI app: xAI's routes under ``/v1``, temporary images, and ``/_emulator`` controls.

Routes: ``POST /v1/images/generations`` and ``/v1/images/edits``, ``GET /v1/image-generation-models[/{id}]``,
``GET /v1/api-key``, ``POST /v1/files`` (multipart), ``POST``/``GET /v1/batches``, ``GET /v1/batches/{id}``,
``POST /v1/batches/{id}/requests``, ``GET /v1/batches/{id}/results``, ``POST /v1/batches/{id}:cancel``;
``GET /tmp-images/{name}``; ``/_emulator/reset``, ``config``, ``stats``, ``expire-images`` and
``batches/{id}:expire`` / ``:refuse``.

Every ``/v1`` call goes through the same steps: configured latency, then the next queued fault
(dropped connection, scripted status, non-JSON body), then the API key, then the handler; a
generate/edit call over ``rate_limit_rps`` is refused (429) before all of them, as a gateway refuses
fast. Each logged request carries the number of generate/edit calls in flight when it arrived. Temporary
images are served without auth; control endpoints (like moto's ``/moto-api/``) need no key either.
Paths and paging parameters are those of :mod:`~airflow_provider_xai_image.testing.contract`.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter, Map, Rule
from werkzeug.wrappers import Request, Response

from airflow_provider_xai_image.testing.backend import EmulatorBackend, redact_key
from airflow_provider_xai_image.testing.catalog import MODELS, resolve_model
from airflow_provider_xai_image.testing.contract import (
    API_KEY_PATH,
    API_ROOT,
    BATCHES_PATH,
    DEFAULT_PAGE_LIMIT,
    EDITS_PATH,
    FILES_PATH,
    GENERATIONS_PATH,
    MAX_PAGE_LIMIT,
    MODELS_PATH,
    PAGE_LIMIT_PARAM,
    PAGE_TOKEN_PARAM,
)
from airflow_provider_xai_image.testing.errors import ApiError
from airflow_provider_xai_image.testing.images import render
from airflow_provider_xai_image.testing.records import TEMP_IMAGE_PATH, Generation, LoggedRequest
from airflow_provider_xai_image.testing.schemas import (
    AddBatchRequestsBody,
    CreateBatchBody,
    EditBody,
    GenerateBody,
    describe,
    status_of,
)
from airflow_provider_xai_image.testing.uploads import parse_file_upload

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

logger = logging.getLogger(__name__)

CONTROL_ROOT = "/_emulator"
#: Bodies at least this large are logged without their parsed JSON.
LOG_JSON_MAX_BYTES = 64 * 1024
#: Revision 1's paging parameter, refused with a pointer to ``limit``.
WRONG_PAGE_PARAM = "page_size"
#: Chunks per second of a slowed-down image download.
SLOW_CHUNKS_PER_SECOND = 20
#: What an ``invalid_json`` fault sends with status 200 (and a JSON content type).
INVALID_JSON_BODY = b"<html><body><h1>502 Bad Gateway</h1><p>upstream hiccup</p></body></html>"

_NOT_JSON = object()
_Model = TypeVar("_Model", bound=BaseModel)
Handler = Callable[..., Response]


class _BatchIdConverter(BaseConverter):
    """A batch id: one path segment without ``:``, so ``/batches/<id>:cancel`` routes as meant."""

    regex = "[^/:]+"


def _json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")


def _error_response(error: ApiError) -> Response:
    response = _json_response(error.to_json(), error.status)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _parse_json(body: bytes) -> Any:
    """The JSON value of ``body``; ``_NOT_JSON`` when it is empty or malformed."""
    try:
        return json.loads(body) if body else _NOT_JSON
    except ValueError:
        return _NOT_JSON


def _validate(model: type[_Model], payload: Any) -> _Model:
    """``payload`` as ``model``: 400 when it is not JSON, 422 naming each invalid field."""
    if payload is _NOT_JSON:
        raise ApiError(400, "The request body is not valid JSON.")
    if not isinstance(payload, dict):
        raise ApiError(422, "The request body must be a JSON object.")
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        raise ApiError(status_of(error), describe(error)) from None


def _page_token(scope: str, offset: int | None) -> dict[str, str]:
    """``{"pagination_token": ...}`` for a next page at ``offset``, or nothing on the last page."""
    if offset is None:
        return {}
    return {PAGE_TOKEN_PARAM: base64.urlsafe_b64encode(f"{scope}:{offset}".encode()).decode("ascii")}


def _page_request(request: Request, scope: str) -> tuple[int, int]:
    """``(offset, limit)`` from ``limit`` and ``pagination_token`` (issued for ``scope``); 400 when wrong."""
    if WRONG_PAGE_PARAM in request.args:
        raise ApiError(400, f"unknown parameter {WRONG_PAGE_PARAM}; use {PAGE_LIMIT_PARAM}")
    raw_limit = request.args.get(PAGE_LIMIT_PARAM, str(DEFAULT_PAGE_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE_LIMIT:
        raise ApiError(400, f"{PAGE_LIMIT_PARAM} must be an integer from 1 to {MAX_PAGE_LIMIT}, got {raw_limit!r}.")
    token = request.args.get(PAGE_TOKEN_PARAM)
    if not token:
        return 0, int(raw_limit)
    try:
        token_scope, _, offset = base64.urlsafe_b64decode(token.encode()).decode().rpartition(":")
    except ValueError:  # not base64, or not text
        token_scope, offset = "", ""
    if token_scope != scope or not offset.isdigit():
        raise ApiError(400, f"Invalid {PAGE_TOKEN_PARAM}.")
    return int(offset), int(raw_limit)


def _paced(data: bytes, bytes_per_second: int) -> Iterator[bytes]:
    """Yield ``data`` in chunks at ``bytes_per_second``."""
    chunk = max(1, bytes_per_second // SLOW_CHUNKS_PER_SECOND)
    for start in range(0, len(data), chunk):
        part = data[start : start + chunk]
        time.sleep(len(part) / bytes_per_second)
        yield part


def _drop_connection(environ: WSGIEnvironment) -> None:
    """Close the client's connection without an answer (werkzeug's server exposes the socket)."""
    connection: socket.socket = environ["werkzeug.socket"]
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        logger.debug("The connection was already closed", exc_info=True)


class EmulatorApp:
    """WSGI application serving one :class:`EmulatorBackend`."""

    def __init__(self, backend: EmulatorBackend) -> None:
        self.backend = backend
        api = API_ROOT
        batch = f"{api}/{BATCHES_PATH}/<batch_id:batch_id>"
        rules: list[tuple[str, str, Handler]] = [
            ("POST", f"{api}/{GENERATIONS_PATH}", self._generate),
            ("POST", f"{api}/{EDITS_PATH}", self._edit),
            ("GET", f"{api}/{MODELS_PATH}", self._list_models),
            ("GET", f"{api}/{MODELS_PATH}/<model_id>", self._get_model),
            ("GET", f"{api}/{API_KEY_PATH}", self._api_key),
            ("POST", f"{api}/{FILES_PATH}", self._upload_file),
            ("POST", f"{api}/{BATCHES_PATH}", self._create_batch),
            ("GET", f"{api}/{BATCHES_PATH}", self._list_batches),
            ("GET", batch, self._get_batch),
            ("POST", f"{batch}/requests", self._add_batch_requests),
            ("GET", f"{batch}/results", self._batch_results),
            ("POST", f"{batch}:cancel", self._cancel_batch),
            ("GET", f"/{TEMP_IMAGE_PATH}/<filename>", self._temp_image),
            ("POST", f"{CONTROL_ROOT}/reset", self._control_reset),
            ("GET", f"{CONTROL_ROOT}/config", self._control_get_config),
            ("POST", f"{CONTROL_ROOT}/config", self._control_configure),
            ("GET", f"{CONTROL_ROOT}/stats", self._control_stats),
            ("POST", f"{CONTROL_ROOT}/expire-images", self._control_expire_images),
            ("POST", f"{CONTROL_ROOT}/batches/<batch_id:batch_id>:expire", self._control_expire_batch),
            ("POST", f"{CONTROL_ROOT}/batches/<batch_id:batch_id>:refuse", self._control_refuse_batch),
        ]
        self.generation_paths = {f"{api}/{GENERATIONS_PATH}", f"{api}/{EDITS_PATH}"}
        self.url_map = Map(
            [Rule(path, methods=[method], endpoint=handler) for method, path, handler in rules],
            converters={"batch_id": _BatchIdConverter},
            strict_slashes=False,
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        arrived = time.monotonic()
        generation = request.method == "POST" and request.path in self.generation_paths
        in_flight = self.backend.generation_started() if generation else self.backend.generations_in_flight()
        try:
            body = request.get_data()
            payload = _parse_json(body)
            response = self._dispatch(request, payload)
        finally:
            if generation:
                self.backend.generation_ended()
        if not request.path.startswith(f"{CONTROL_ROOT}/"):
            logged_json = payload if payload is not _NOT_JSON and len(body) < LOG_JSON_MAX_BYTES else None
            status = None if response is None else response.status_code
            query = request.query_string.decode("latin-1")
            record = LoggedRequest(
                request.method, request.path, query, status, arrived, len(body), logged_json, in_flight
            )
            self.backend.record_request(record)
        if response is None:
            _drop_connection(environ)
            response = Response(status=500)
        return response(environ, start_response)

    def _dispatch(self, request: Request, payload: Any) -> Response | None:
        """The response to ``request``, or None to drop the connection."""
        try:
            handler, args = self.url_map.bind_to_environ(request.environ).match()
            if request.path.startswith(f"{API_ROOT}/"):
                return self._api_call(handler, request, payload, args)
            return handler(request, payload, **args)
        except HTTPException as error:
            return _error_response(ApiError(error.code or 500, f"{request.method} {request.path}: {error.name}"))
        except ApiError as error:
            return _error_response(error)
        except Exception:
            logger.exception("The xAI emulator failed on %s %s", request.method, request.path)
            return _error_response(ApiError(500, "The emulator failed; see its log."))

    def _api_call(self, handler: Handler, request: Request, payload: Any, args: Mapping[str, Any]) -> Response | None:
        generation = handler in (self._generate, self._edit)
        if generation:
            self.backend.check_rate_limit()
        delay = self.backend.latency()
        if delay:
            time.sleep(delay)
        fault = self.backend.take_api_fault(generation)
        if fault == "reset_connection":
            return None
        if fault == "invalid_json":
            return Response(INVALID_JSON_BODY, status=200, mimetype="application/json")
        if isinstance(fault, ApiError):
            if self.backend.config.echo_authorization:
                raise fault.quoting(request.headers.get("Authorization", ""))
            raise fault
        self._authenticate(request)
        return handler(request, payload, **args)

    def _authenticate(self, request: Request) -> None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "Incorrect API key provided: none was sent (expected 'Authorization: Bearer <key>').")
        if not hmac.compare_digest(key.strip().encode(), self.backend.api_key.encode()):
            raise ApiError(401, f"Incorrect API key provided: {redact_key(key.strip())}.")

    def _generation_response(self, request: Request, generation: Generation) -> Response:
        prefix = self.backend.config.b64_data_uri_prefix
        return _json_response(generation.to_json(request.host_url, prefix))

    # Images and models ---------------------------------------------------------------------

    def _generate(self, request: Request, payload: Any) -> Response:
        body = _validate(GenerateBody, payload)
        time.sleep(self.backend.config.generation_latency)
        return self._generation_response(request, self.backend.generate(body))

    def _edit(self, request: Request, payload: Any) -> Response:
        body = _validate(EditBody, payload)
        time.sleep(self.backend.config.generation_latency)
        return self._generation_response(request, self.backend.generate(body))

    def _list_models(self, request: Request, payload: Any) -> Response:
        return _json_response({"models": [model.to_json() for model in MODELS]})

    def _get_model(self, request: Request, payload: Any, model_id: str) -> Response:
        model = resolve_model(model_id)
        if model is None:
            raise ApiError(404, f"The model {model_id} does not exist or your team does not have access to it.")
        return _json_response(model.to_json())

    def _api_key(self, request: Request, payload: Any) -> Response:
        return _json_response(self.backend.api_key_info())

    def _temp_image(self, request: Request, payload: Any, filename: str) -> Response:
        spec = self.backend.temp_image(filename)
        data = render(spec)
        fault = self.backend.take_download_fault()
        sent = data if fault is None else data[: len(data) // 2]
        pace = self.backend.config.slow_image_bytes_per_second
        # An iterator, not a list: werkzeug then adds no Content-Length of its own (it sends chunks).
        chunks = _paced(sent, pace) if pace else iter([sent])
        response = Response(chunks, mimetype=spec.mime_type, direct_passthrough=True)
        if fault != "truncated_no_length":
            response.headers["Content-Length"] = str(len(data))
        return response

    # Files ---------------------------------------------------------------------------------

    def _upload_file(self, request: Request, payload: Any) -> Response:
        upload = parse_file_upload(request.headers.get("Content-Type", ""), request.get_data())
        return _json_response(self.backend.upload_file(upload))

    # Batches -------------------------------------------------------------------------------

    def _create_batch(self, request: Request, payload: Any) -> Response:
        body = _validate(CreateBatchBody, payload)
        return _json_response(self.backend.create_batch(body.name, body.input_file_id))

    def _list_batches(self, request: Request, payload: Any) -> Response:
        offset, limit = _page_request(request, BATCHES_PATH)
        batches, next_offset = self.backend.list_batches(offset, limit)
        return _json_response({"batches": batches, **_page_token(BATCHES_PATH, next_offset)})

    def _get_batch(self, request: Request, payload: Any, batch_id: str) -> Response:
        return _json_response(self.backend.get_batch(batch_id))

    def _add_batch_requests(self, request: Request, payload: Any, batch_id: str) -> Response:
        self.backend.admit_batch_add(len(request.get_data()))
        body = _validate(AddBatchRequestsBody, payload)
        entries = [(entry.batch_request_id, entry.body) for entry in body.batch_requests]
        self.backend.add_batch_requests(batch_id, entries)
        return _json_response({})

    def _batch_results(self, request: Request, payload: Any, batch_id: str) -> Response:
        offset, limit = _page_request(request, batch_id)
        outcomes, next_offset = self.backend.batch_results(batch_id, offset, limit)
        config = self.backend.config
        items = [
            outcome.to_json(config.batch_error_shape, request.host_url, config.b64_data_uri_prefix)
            for outcome in outcomes
        ]
        return _json_response({"results": items, **_page_token(batch_id, next_offset)})

    def _cancel_batch(self, request: Request, payload: Any, batch_id: str) -> Response:
        return _json_response(self.backend.cancel_batch(batch_id))

    # Controls ------------------------------------------------------------------------------

    def _control_reset(self, request: Request, payload: Any) -> Response:
        self.backend.reset()
        return _json_response({"status": "ok"})

    def _control_get_config(self, request: Request, payload: Any) -> Response:
        return _json_response(self.backend.config.model_dump(mode="json"))

    def _control_configure(self, request: Request, payload: Any) -> Response:
        if payload is _NOT_JSON or not isinstance(payload, dict):
            raise ApiError(400, "Send the settings to change as a JSON object.")
        try:
            config = self.backend.configure(**payload)
        except ValidationError as error:
            raise ApiError(422, describe(error)) from None
        return _json_response(config.model_dump(mode="json"))

    def _control_stats(self, request: Request, payload: Any) -> Response:
        return _json_response(self.backend.stats())

    def _control_expire_images(self, request: Request, payload: Any) -> Response:
        self.backend.expire_images()
        return _json_response({"status": "ok"})

    def _control_expire_batch(self, request: Request, payload: Any, batch_id: str) -> Response:
        message = payload.get("message") if isinstance(payload, dict) else None
        if message is not None and not isinstance(message, str):
            raise ApiError(422, "message must be a string.")
        return _json_response(self.backend.expire_batch(batch_id, message))

    def _control_refuse_batch(self, request: Request, payload: Any, batch_id: str) -> Response:
        message = payload.get("message") if isinstance(payload, dict) else None
        if not isinstance(message, str) or not message:
            raise ApiError(422, 'Send {"message": "..."}: why xAI refuses the batch.')
        return _json_response(self.backend.refuse_batch(batch_id, message))
