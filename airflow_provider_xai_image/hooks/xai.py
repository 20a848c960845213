"""XaiHook: the ``xai`` connection and every HTTP call to the xAI API, sync (requests) and async (httpx)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from functools import cached_property, partial
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote

import httpx
import requests
import tenacity
import urllib3
from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook, mask_secret
from requests.adapters import HTTPAdapter

from airflow_provider_xai_image import __version__
from airflow_provider_xai_image.api.images import (
    API_KEY_PATH,
    BATCH_FILE_FIELDS,
    BATCHES_PATH,
    DEPRECATED_MODELS,
    FILES_PATH,
    HIGHEST_KNOWN_PRICE_USD_TICKS,
    MAX_PAGE_LIMIT,
    MODELS_PATH,
    Batch,
    BatchResult,
    ImageGenerationResult,
    ImageModel,
    ImageRequest,
    parse_batch_results_page,
    parse_image_response,
)
from airflow_provider_xai_image.connection import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
    UI_FIELD_BEHAVIOUR,
    XaiConnectionSettings,
    how_to_create,
)
from airflow_provider_xai_image.exceptions import (
    XaiApiError,
    XaiAuthError,
    XaiBadRequestError,
    XaiConnectionConfigError,
    XaiImageError,
    XaiPossiblyBilledError,
    XaiRateLimitError,
    XaiServerError,
)
from airflow_provider_xai_image.hooks.redaction import KeyScrubber
from airflow_provider_xai_image.hooks.retry import AmbiguousAttempts, retry_policy
from airflow_provider_xai_image.storage.image_checks import MAX_IMAGE_BYTES, ImageWriter, VerifiedImage

if TYPE_CHECKING:
    from airflow_provider_xai_image.engine.ratelimit import AsyncRateLimiter, RateLimiter

USER_AGENT = f"airflow-provider-xai-image/{__version__}"
DOWNLOAD_CHUNK_BYTES = 256 * 1024
#: Connection pool size: the generate operator's default cap of requests in flight (``ratelimit.IN_FLIGHT_CAP``).
POOL_SIZE = 128
#: Results per page: a page of base64 images is held in memory whole, so not xAI's maximum of 1000.
RESULTS_PAGE_LIMIT = 100
#: Words of a 400's error text that mean the key was refused (xAI answers some wrong keys with 400).
_KEY_REFUSED_WORDS = ("api key", "api-key", "apikey")


def error_from_response(
    method: str, path: str, status: int, body: str, retry_after: str | None, *, paid: bool = False
) -> XaiApiError:
    """The typed error for an HTTP error status, carrying xAI's own error text."""
    detail = _error_detail(body)
    # Some answers percent-encode their text ("Incorrect%20API%20key").
    if status in (401, 403) or (status == 400 and any(word in unquote(detail).lower() for word in _KEY_REFUSED_WORDS)):
        return XaiAuthError(method, path, status, f"the API key was refused: {detail}")
    if status == 429:
        return XaiRateLimitError(method, path, status, detail, _seconds(retry_after))
    if status >= 500:
        return server_error(method, path, status, detail, maybe_processed=status != 503, paid=paid)
    return XaiBadRequestError(method, path, status, detail)


def server_error(
    method: str, path: str, status: int | None, detail: str, *, maybe_processed: bool, paid: bool
) -> XaiServerError:
    """A transient failure; for a paid request that may have reached xAI, :class:`XaiPossiblyBilledError`."""
    if paid and maybe_processed:
        return XaiPossiblyBilledError(method, path, status, detail)
    return XaiServerError(method, path, status, detail, maybe_processed=maybe_processed)


def _error_detail(body: str) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return body.strip()[:500] or "(empty body)"
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict):
            error = error.get("message", error)
        code = payload.get("code")
        return f"{code}: {error}" if code else str(error)
    return str(payload)[:500]


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def read_response(
    method: str, path: str, status: int, body: str, retry_after: str | None, *, paid: bool = False
) -> dict[str, Any]:
    """The JSON object of a successful response, or the typed error of a failed one."""
    if status >= 400:
        raise error_from_response(method, path, status, body, retry_after, paid=paid)
    try:
        payload = json.loads(body)
    except ValueError:
        detail = f"response is not valid JSON: {body[:80]!r}"
        raise server_error(method, path, status, detail, maybe_processed=True, paid=paid) from None
    if not isinstance(payload, dict):
        raise server_error(method, path, status, "response is not a JSON object", maybe_processed=True, paid=paid)
    return payload


def transport_failure(method: str, path: str, error: Exception, *, paid: bool) -> XaiServerError:
    """A request that got no HTTP answer. Only the type of the library's error is shown: its text may
    quote a header, hence the key. It surely did not reach xAI only when no connection was made."""
    if isinstance(error, requests.RequestException):
        reason = getattr(error.args[0], "reason", None) if error.args else None
        unsent = (
            isinstance(error, requests.ConnectTimeout | ValueError)  # ValueError: refused before sending (bad header)
            or isinstance(reason, urllib3.exceptions.NewConnectionError)
        )
    else:
        unsent = isinstance(
            error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.LocalProtocolError
        )
    what = "no connection could be made" if unsent else "the connection broke or timed out after the request was sent"
    return server_error(method, path, None, f"{type(error).__name__} ({what})", maybe_processed=not unsent, paid=paid)


def _pooled_session(headers: dict[str, str]) -> requests.Session:
    """A session whose connection pool fits the operators' highest sensible concurrency."""
    session = requests.Session()
    session.headers.update(headers)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _page(limit: int, token: str | None) -> dict[str, Any]:
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise ValueError(f"limit: must be 1..{MAX_PAGE_LIMIT}, got {limit!r}")
    return {"limit": limit, **({"pagination_token": token} if token else {})}


def _batches_page(payload: dict[str, Any]) -> tuple[list[Batch], str | None]:
    return [Batch.model_validate(item) for item in payload.get("batches", [])], payload.get("pagination_token") or None


def _results_page(batch_id: str, payload: dict[str, Any], model: str) -> tuple[list[BatchResult], str | None]:
    try:
        return parse_batch_results_page(payload, model)
    except ValueError as error:
        raise XaiServerError("GET", f"{BATCHES_PATH}/{batch_id}/results", 200, str(error)) from None


class XaiHook(BaseHook):
    """
    Talks to the xAI API with the API key of an Airflow connection of type ``xai``.

    The connection's password is the API key (surrounding whitespace is stripped); its host an optional
    base URL (default ``https://api.x.ai/v1``); its extras ``timeout`` (seconds, or ``[connect, read]``),
    ``max_retries``, ``max_ambiguous_retries``, ``requests_per_second`` and ``default_model``. Failures that
    surely were not served (connection errors, 429, 503) are retried with exponential backoff and jitter,
    honouring ``Retry-After``; a paid request that may have reached xAI is not re-sent unless
    ``max_ambiguous_retries`` allows it (see :mod:`airflow_provider_xai_image.hooks.retry`). Image requests
    sent through a task's rate limiter leave 429s to it (see :mod:`airflow_provider_xai_image.engine.ratelimit`).

    :param xai_conn_id: The Airflow connection to use.
    """

    conn_name_attr = "xai_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "xAI"

    def __init__(self, xai_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.xai_conn_id = xai_conn_id
        self._settings: XaiConnectionSettings | None = None
        self._key_checked = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(xai_conn_id={self.xai_conn_id!r})"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """How the ``xai`` connection form looks in the Airflow UI (a copy: Airflow < 3.2 prefixes the
        placeholder keys of the dict it gets, in place)."""
        from copy import deepcopy

        return deepcopy(UI_FIELD_BEHAVIOUR)

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The form's extra fields where Airflow ignores the provider info's ``conn-fields`` (before 3.2;
        from 3.2 on Airflow reads those and never calls this for the ``xai`` type)."""
        from airflow_provider_xai_image.connection import form_widgets

        return form_widgets()

    # -- connection -------------------------------------------------------------------------------

    @property
    def settings(self) -> XaiConnectionSettings:
        if self._settings is None:
            try:
                conn = self.get_connection(self.xai_conn_id)
            except AirflowNotFoundException:
                raise self._missing_connection() from None
            self._settings = self._read_settings(conn)
        return self._settings

    async def aload_settings(self) -> XaiConnectionSettings:
        """Read the connection without blocking the event loop (for triggers)."""
        if self._settings is None:
            try:
                conn = await self.aget_connection(self.xai_conn_id)
            except AirflowNotFoundException:
                raise self._missing_connection() from None
            self._settings = self._read_settings(conn)
        return self._settings

    @staticmethod
    def _read_settings(conn: Any) -> XaiConnectionSettings:
        settings = XaiConnectionSettings.from_connection(conn)
        mask_secret(settings.api_key.get_secret_value())
        return settings

    def _missing_connection(self) -> XaiConnectionConfigError:
        return XaiConnectionConfigError(
            f"Airflow connection {self.xai_conn_id!r} does not exist. " + how_to_create(self.xai_conn_id)
        )

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.settings.api_key.get_secret_value()}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }

    def _url(self, path: str) -> str:
        return f"{self.settings.base_url}/{path}"

    @cached_property
    def _scrub_key(self) -> KeyScrubber:
        """Removes the key from an answer's text before anything (error, record, log) is derived from it."""
        return KeyScrubber(self.settings.api_key.get_secret_value())

    @cached_property
    def _session(self) -> requests.Session:
        return _pooled_session(self._headers())

    @cached_property
    def _download_session(self) -> requests.Session:
        """Temporary image URLs need no key, and must never be sent it."""
        return _pooled_session({"User-Agent": USER_AGENT})

    def get_conn(self) -> requests.Session:
        """The hook's ``requests.Session``, carrying the API key and User-Agent."""
        return self._session

    # -- one call, retried --------------------------------------------------------------------------

    def _retrying(
        self, retry_rate_limits: bool = True, ambiguous: AmbiguousAttempts | None = None
    ) -> tenacity.Retrying:
        settings = self.settings
        policy = retry_policy(
            settings.max_retries,
            self.log,
            settings.max_ambiguous_retries,
            retry_rate_limits=retry_rate_limits,
            ambiguous=ambiguous,
        )
        return tenacity.Retrying(**policy)

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        paid: bool = False,
        retry_rate_limits: bool = True,
        ambiguous: AmbiguousAttempts | None = None,
    ) -> dict[str, Any]:
        """
        Send one API request and return its JSON object.

        :param method: HTTP method.
        :param path: Path under the base URL.
        :param json_body: JSON body, if any.
        :param params: Query parameters, if any.
        :param files: Multipart files, if any.
        :param data: Multipart form fields, if any.
        :param paid: The request costs money (generate, edit, batch creation): a failure that may have
            reached xAI raises :class:`XaiPossiblyBilledError` and is re-sent only ``max_ambiguous_retries``
            times. Image requests also get the long read timeout.
        :param retry_rate_limits: Retry 429s (``max_retries``); False raises :class:`XaiRateLimitError` at
            once, for a rate limiter to handle.
        :param ambiguous: The sends of this paid request that may have reached xAI, counted over every call
            that sends it (a rate limiter's re-sends); default: this call's own.
        """
        timeout = self.settings.timeout(image_request=paid and method == "POST" and path.startswith("images/"))
        for attempt in self._retrying(retry_rate_limits, ambiguous):
            with attempt:
                try:
                    response = self._session.request(
                        method, self._url(path), json=json_body, params=params, files=files, data=data, timeout=timeout
                    )
                except requests.RequestException as error:
                    raise transport_failure(method, path, error, paid=paid) from None
                retry_after = response.headers.get("Retry-After")
                body = self._scrub_key(response.text)
                return read_response(method, path, response.status_code, body, retry_after, paid=paid)
        raise AssertionError("unreachable: tenacity reraises the last error")

    # -- API -----------------------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with the free ``GET /api-key``; the message names the key, never shows it."""
        try:
            info = self.call("GET", API_KEY_PATH)
        except Exception as error:
            return False, str(error)
        label = info.get("name") or info.get("redacted_api_key") or "(unnamed key)"
        return True, f"Connected to xAI at {self.settings.base_url} with API key {label!r}."

    def check_api_key(self) -> None:
        """Before the first paid request: check the key with the free ``GET /api-key`` (once per hook).

        :raises XaiAuthError: xAI refused the key (400/401/403).
        """
        if not self._key_checked:
            self.call("GET", API_KEY_PATH)
            self._key_checked = True

    def build_request(self, prompt: str, **params: Any) -> ImageRequest:
        """Validate one image request (no request is sent); ``model=None`` takes the connection's default.

        :param prompt: The prompt.
        :param params: ``model``, ``n``, ``aspect_ratio``, ``resolution``, ``quality``,
            ``response_format``, ``user``, ``source_images`` (see :meth:`generate_images`).
        """
        given = {name: value for name, value in params.items() if value is not None}
        if "model" not in given:
            given["model"] = self.settings.default_model
        if isinstance(given.get("source_images"), list):
            given["source_images"] = tuple(given["source_images"])
        return ImageRequest.build(prompt=prompt, **given)

    def generate_images(
        self,
        prompt: str,
        *,
        model: str | None = None,
        n: int = 1,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        quality: str | None = None,
        response_format: str = "url",
        user: str | None = None,
        source_images: Sequence[str] | None = None,
    ) -> ImageGenerationResult:
        """
        Generate images from a prompt, or edit ``source_images`` when given.

        :param prompt: What to draw, or how to change the source images.
        :param model: Model id; default the connection's ``default_model`` (``grok-imagine-image-quality``).
        :param n: Images to generate, 1..10.
        :param aspect_ratio: One of ``models.ASPECT_RATIOS``.
        :param resolution: ``1k`` or ``2k``.
        :param quality: ``low`` or ``medium`` (``grok-imagine-image-2.0``; sent only when set).
        :param response_format: ``url`` (temporary URL) or ``b64_json`` (inline bytes).
        :param user: End-user id for xAI's abuse monitoring.
        :param source_images: 1..3 https URLs or ``data:image/...`` URIs; calls ``images/edits``.
        :return: The images (URL or bytes each, or marked filtered), the model used and the cost.
        :raises XaiPossiblyBilledError: the request may have been billed, and was not re-sent.
        """
        request = self.build_request(
            prompt,
            model=model,
            n=n,
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            quality=quality,
            response_format=response_format,
            user=user,
            source_images=tuple(source_images) if source_images is not None else None,
        )
        return self.run_image_request(request)

    def run_image_request(self, request: ImageRequest, limiter: RateLimiter | None = None) -> ImageGenerationResult:
        """Send a validated request to ``images/generations`` or ``images/edits`` (paid: see :meth:`call`).

        :param request: The request.
        :param limiter: The task's rate limiter, shared by its requests: a 429 slows them all down and the
            refused request is sent again when the limiter allows, never counting against ``max_retries``.
            Without one, a 429 is retried like a 503.
        :raises XaiPossiblyBilledError: also when a send may have reached xAI and a later error (a 429)
            ended the request.
        """
        self._warn_if_deprecated(request.model)
        ambiguous = AmbiguousAttempts()
        send = partial(
            self.call,
            "POST",
            request.path,
            json_body=request.body(),
            paid=True,
            retry_rate_limits=limiter is None,
            ambiguous=ambiguous,
        )
        try:
            payload = send() if limiter is None else limiter.send(send)
        except XaiApiError as error:
            raise ambiguous.ending(error) from None
        return parse_image_response(payload, request.model, request.n)

    def _warn_if_deprecated(self, model: str) -> None:
        if replacement := DEPRECATED_MODELS.get(model):
            self.log.warning("Model %r is deprecated by xAI; use %r instead.", model, replacement)

    def list_image_models(self) -> list[ImageModel]:
        """The image models this key can use, with their prices (1e-10 USD per image)."""
        payload = self.call("GET", MODELS_PATH)
        return [ImageModel.model_validate(item) for item in payload.get("models", [])]

    @cached_property
    def _models_or_none(self) -> list[ImageModel] | None:
        try:
            return self.list_image_models()
        except XaiApiError as error:
            self.log.warning("Could not read image prices (%s); estimating with the highest known price.", error)
            return None

    def price_per_image_usd_ticks(self, request: ImageRequest) -> int:
        """
        The price of one image of ``request``: the model's price for its quality and resolution (the
        highest matching tier of ``pricing``, else ``image_price``). When prices cannot be read or the
        model is not listed, the highest known price: an estimate is never low. Edits bill each source
        image too, without a published price: estimate them at the same price.
        """
        for entry in self._models_or_none or ():
            if request.model == entry.id or request.model in entry.aliases:
                return entry.price_usd_ticks(request.quality, request.resolution) or HIGHEST_KNOWN_PRICE_USD_TICKS
        return HIGHEST_KNOWN_PRICE_USD_TICKS

    def download(self, url: str, sink: IO[bytes], *, max_bytes: int = MAX_IMAGE_BYTES) -> VerifiedImage:
        """
        Stream the image at a temporary ``url`` into ``sink`` (a seekable binary file).

        A broken or cut transfer is retried from the start; an expired URL, a body that is not an
        image, one over ``max_bytes`` or one that stays incomplete raises :class:`XaiImageError`.
        """
        for attempt in self._retrying():
            with attempt:
                sink.seek(0)
                sink.truncate()
                return self._download_once(url, sink, max_bytes)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _download_once(self, url: str, sink: IO[bytes], max_bytes: int) -> VerifiedImage:
        name = url.rsplit("/", 1)[-1]
        writer = ImageWriter(sink, name, max_bytes)
        try:
            with self._download_session.get(url, stream=True, timeout=self.settings.timeout()) as response:
                if response.status_code in (403, 404, 410):
                    raise XaiImageError(f"temporary image URL {name} is expired or gone (HTTP {response.status_code})")
                if response.status_code >= 400:
                    body = self._scrub_key(response.text)
                    raise error_from_response(
                        "GET", name, response.status_code, body, response.headers.get("Retry-After")
                    )
                for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                    writer.write(chunk)
                length = response.headers.get("Content-Length")
        except requests.RequestException as error:
            raise transport_failure("GET", name, error, paid=False) from None
        try:
            return writer.result(expected_size=int(length) if length and length.isdigit() else None)
        except XaiImageError as error:
            raise XaiServerError("GET", name, 200, f"image download incomplete: {error}") from None

    # -- batches -------------------------------------------------------------------------------------

    def upload_batch_file(self, filename: str, content: bytes) -> str:
        """Upload a batch input file (JSON Lines) with ``POST /files``; return its file id. Free to retry."""
        payload = self.call(
            "POST", FILES_PATH, data=BATCH_FILE_FIELDS, files={"file": (filename, content, "application/jsonl")}
        )
        return str(payload["id"])

    def create_batch(self, name: str, input_file_id: str) -> Batch:
        """Create a batch from an uploaded input file. Paid: an ambiguous failure is not re-sent (look the
        batch up by name with :meth:`find_batch_by_name` before creating another)."""
        body = {"name": name, "input_file_id": input_file_id}
        return Batch.model_validate(self.call("POST", BATCHES_PATH, json_body=body, paid=True))

    def get_batch(self, batch_id: str) -> Batch:
        """The batch's state."""
        return Batch.model_validate(self.call("GET", f"{BATCHES_PATH}/{batch_id}"))

    def iter_batch_results(
        self, batch_id: str, *, model: str = "", limit: int = RESULTS_PAGE_LIMIT
    ) -> Iterator[BatchResult]:
        """Every result of the batch, page by page (unordered: match by ``batch_request_id``)."""
        token: str | None = None
        while True:
            payload = self.call("GET", f"{BATCHES_PATH}/{batch_id}/results", params=_page(limit, token))
            results, token = _results_page(batch_id, payload, model)
            yield from results
            if not token:
                return

    def cancel_batch(self, batch_id: str) -> Batch:
        """Cancel the batch's pending requests."""
        return Batch.model_validate(self.call("POST", f"{BATCHES_PATH}/{batch_id}:cancel"))

    def list_batches(self, *, limit: int = MAX_PAGE_LIMIT) -> Iterator[Batch]:
        """The team's batches, as xAI lists them."""
        token: str | None = None
        while True:
            batches, token = _batches_page(self.call("GET", BATCHES_PATH, params=_page(limit, token)))
            yield from batches
            if not token:
                return

    def find_batch_by_name(self, name: str) -> Batch | None:
        """The team's batch called ``name``, if any."""
        return next((batch for batch in self.list_batches() if batch.name == name), None)

    # -- async (triggers) ---------------------------------------------------------------------------

    @asynccontextmanager
    async def async_client(self) -> AsyncIterator[httpx.AsyncClient]:
        """An ``httpx.AsyncClient`` carrying the key, for the ``a*`` methods."""
        settings = await self.aload_settings()
        connect, read = settings.timeout()
        limits = httpx.Limits(max_connections=POOL_SIZE)
        timeout = httpx.Timeout(read, connect=connect)
        async with httpx.AsyncClient(headers=self._headers(), timeout=timeout, limits=limits) as client:
            yield client

    async def acall(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        paid: bool = False,
        retry_rate_limits: bool = True,
        ambiguous: AmbiguousAttempts | None = None,
    ) -> dict[str, Any]:
        """The async :meth:`call`: same retry policy, same errors.

        :param client: From :meth:`async_client`.
        :param method: HTTP method.
        :param path: Path under the base URL.
        :param json_body: JSON body, if any.
        :param params: Query parameters, if any.
        :param paid: See :meth:`call`.
        :param retry_rate_limits: See :meth:`call`.
        :param ambiguous: See :meth:`call`.
        """
        settings = self.settings
        connect, read = settings.timeout(image_request=paid and path.startswith("images/"))
        timeout = httpx.Timeout(read, connect=connect)
        policy = retry_policy(
            settings.max_retries,
            self.log,
            settings.max_ambiguous_retries,
            retry_rate_limits=retry_rate_limits,
            ambiguous=ambiguous,
        )
        async for attempt in tenacity.AsyncRetrying(**policy):
            with attempt:
                try:
                    response = await client.request(
                        method, self._url(path), json=json_body, params=params, timeout=timeout
                    )
                except httpx.HTTPError as error:
                    raise transport_failure(method, path, error, paid=paid) from None
                retry_after = response.headers.get("Retry-After")
                body = self._scrub_key(response.text)
                return read_response(method, path, response.status_code, body, retry_after, paid=paid)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def acheck_api_key(self, client: httpx.AsyncClient) -> None:
        """The async :meth:`check_api_key`."""
        if not self._key_checked:
            await self.acall(client, "GET", API_KEY_PATH)
            self._key_checked = True

    async def arun_image_request(
        self, client: httpx.AsyncClient, request: ImageRequest, limiter: AsyncRateLimiter | None = None
    ) -> ImageGenerationResult:
        """The async :meth:`run_image_request`.

        :param client: From :meth:`async_client`.
        :param request: The request.
        :param limiter: The trigger's rate limiter (see :meth:`run_image_request`), or None.
        """
        self._warn_if_deprecated(request.model)
        ambiguous = AmbiguousAttempts()
        send = partial(
            self.acall,
            client,
            "POST",
            request.path,
            json_body=request.body(),
            paid=True,
            retry_rate_limits=limiter is None,
            ambiguous=ambiguous,
        )
        try:
            payload = await (send() if limiter is None else limiter.send(send))
        except XaiApiError as error:
            raise ambiguous.ending(error) from None
        return parse_image_response(payload, request.model, request.n)

    async def aget_batch(self, client: httpx.AsyncClient, batch_id: str) -> Batch:
        """The async :meth:`get_batch`."""
        return Batch.model_validate(await self.acall(client, "GET", f"{BATCHES_PATH}/{batch_id}"))
