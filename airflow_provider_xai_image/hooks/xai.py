"""XaiHook: the ``xai`` connection and every HTTP call to the xAI API, sync (requests) and async (httpx)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from functools import cached_property
from typing import IO, Any

import httpx
import requests
import tenacity
from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook
from requests.adapters import HTTPAdapter

from airflow_provider_xai_image import __version__
from airflow_provider_xai_image.batching import CallPacer, chunk_batch_requests
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
    XaiRateLimitError,
    XaiServerError,
)
from airflow_provider_xai_image.image_types import MAX_IMAGE_BYTES, ImageWriter, VerifiedImage
from airflow_provider_xai_image.models import (
    API_KEY_PATH,
    BATCHES_PATH,
    DEPRECATED_MODELS,
    FALLBACK_PRICE_USD_TICKS_PER_IMAGE,
    MODELS_PATH,
    Batch,
    BatchResult,
    ImageGenerationResult,
    ImageModel,
    ImageRequest,
    batch_request_entry,
    parse_batch_results_page,
    parse_image_response,
)
from airflow_provider_xai_image.retry import retry_policy

USER_AGENT = f"airflow-provider-xai-image/{__version__}"
DOWNLOAD_CHUNK_BYTES = 256 * 1024
#: Connection pool size: enough for the operators' highest sensible concurrency.
POOL_SIZE = 64
RESULTS_PAGE_SIZE = 100


def error_from_response(method: str, path: str, status: int, body: str, retry_after: str | None) -> XaiApiError:
    """The typed error for an HTTP error status, carrying xAI's own error text."""
    detail = _error_detail(body)
    if status in (401, 403):
        return XaiAuthError(method, path, status, detail)
    if status == 429:
        return XaiRateLimitError(method, path, status, detail, _seconds(retry_after))
    if status >= 500:
        return XaiServerError(method, path, status, detail)
    return XaiBadRequestError(method, path, status, detail)


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


def read_response(method: str, path: str, status: int, body: str, retry_after: str | None) -> dict[str, Any]:
    """The JSON object of a successful response, or the typed error of a failed one."""
    if status >= 400:
        raise error_from_response(method, path, status, body, retry_after)
    try:
        payload = json.loads(body)
    except ValueError:
        raise XaiServerError(method, path, status, f"response is not valid JSON: {body[:80]!r}") from None
    if not isinstance(payload, dict):
        raise XaiServerError(method, path, status, "response is not a JSON object")
    return payload


def _add_request_bodies(
    requests_by_id: Sequence[tuple[str, ImageRequest]], max_bytes: int | None
) -> list[dict[str, Any]]:
    """The bodies of the "add requests" calls, made whole before the first call so that an oversize
    entry fails before anything is added."""
    entries = (batch_request_entry(request_id, request) for request_id, request in requests_by_id)
    chunks = chunk_batch_requests(entries, max_bytes) if max_bytes else chunk_batch_requests(entries)
    return [{"batch_requests": chunk} for chunk in chunks]


def _pooled_session(headers: dict[str, str]) -> requests.Session:
    """A session whose connection pool fits the operators' highest sensible concurrency."""
    session = requests.Session()
    session.headers.update(headers)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _page(page_size: int, token: str | None) -> dict[str, Any]:
    return {"page_size": page_size, **({"pagination_token": token} if token else {})}


def _batches_page(payload: dict[str, Any]) -> tuple[list[Batch], str | None]:
    return [Batch.model_validate(item) for item in payload.get("batches", [])], payload.get("pagination_token") or None


class XaiHook(BaseHook):
    """
    Talks to the xAI API with the API key of an Airflow connection of type ``xai``.

    The connection's password is the API key; its host an optional base URL (default
    ``https://api.x.ai/v1``); its extras ``timeout`` (seconds, or ``[connect, read]``),
    ``max_retries`` and ``default_model``. Transient failures (429, 5xx, broken connections)
    are retried with exponential backoff and jitter, honouring ``Retry-After``.

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(xai_conn_id={self.xai_conn_id!r})"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """How the ``xai`` connection form looks in the Airflow UI."""
        return UI_FIELD_BEHAVIOUR

    # -- connection -------------------------------------------------------------------------------

    @property
    def settings(self) -> XaiConnectionSettings:
        if self._settings is None:
            try:
                conn = self.get_connection(self.xai_conn_id)
            except AirflowNotFoundException:
                raise self._missing_connection() from None
            self._settings = XaiConnectionSettings.from_connection(conn)
        return self._settings

    async def aload_settings(self) -> XaiConnectionSettings:
        """Read the connection without blocking the event loop (for triggers)."""
        if self._settings is None:
            try:
                conn = await self.aget_connection(self.xai_conn_id)
            except AirflowNotFoundException:
                raise self._missing_connection() from None
            self._settings = XaiConnectionSettings.from_connection(conn)
        return self._settings

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

    def _retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(**retry_policy(self.settings.max_retries, self.log))

    def call(
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Send one API request (retried when transient) and return its JSON object."""
        for attempt in self._retrying():
            with attempt:
                return self._call_once(method, path, json_body, params)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _call_once(self, method: str, path: str, json_body: Any, params: dict[str, Any] | None) -> dict[str, Any]:
        settings = self.settings
        try:
            response = self._session.request(
                method,
                self._url(path),
                json=json_body,
                params=params,
                timeout=(settings.connect_timeout, settings.read_timeout),
            )
        except requests.RequestException as error:
            raise XaiServerError(method, path, None, f"{type(error).__name__}: {error}") from None
        return read_response(method, path, response.status_code, response.text, response.headers.get("Retry-After"))

    # -- API -----------------------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with the free ``GET /api-key``; the message names the key, never shows it."""
        try:
            info = self.call("GET", API_KEY_PATH)
        except Exception as error:
            return False, str(error)
        label = info.get("name") or info.get("redacted_api_key") or "(unnamed key)"
        return True, f"Connected to xAI at {self.settings.base_url} with API key {label!r}."

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
        :param quality: ``low``, ``medium`` or ``high``.
        :param response_format: ``url`` (temporary URL) or ``b64_json`` (inline bytes).
        :param user: End-user id for xAI's abuse monitoring.
        :param source_images: 1..3 https URLs or ``data:image/...`` URIs; calls ``images/edits``.
        :return: The images (URL or bytes each, or marked filtered), the model used and the cost.
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

    def run_image_request(self, request: ImageRequest) -> ImageGenerationResult:
        """Send a validated request to ``images/generations`` or ``images/edits``."""
        self._warn_if_deprecated(request.model)
        payload = self.call("POST", request.path, json_body=request.body())
        return parse_image_response(payload, request.model, request.n)

    def _warn_if_deprecated(self, model: str) -> None:
        if replacement := DEPRECATED_MODELS.get(model):
            self.log.warning("Model %r is deprecated by xAI; use %r instead.", model, replacement)

    def list_image_models(self) -> list[ImageModel]:
        """The image models this key can use, with their prices (``image_price`` in 1e-10 USD)."""
        payload = self.call("GET", MODELS_PATH)
        return [ImageModel.model_validate(item) for item in payload.get("models", [])]

    def image_price_usd_ticks(self, model: str) -> int:
        """Price of one image of ``model`` from ``list_image_models``, or the documented fallback ($0.02)."""
        try:
            models = self.list_image_models()
        except XaiApiError as error:
            self.log.warning("Could not read image prices (%s); assuming $0.02 per image.", error)
            return FALLBACK_PRICE_USD_TICKS_PER_IMAGE
        for entry in models:
            if (model == entry.id or model in entry.aliases) and entry.image_price:
                return entry.image_price
        return FALLBACK_PRICE_USD_TICKS_PER_IMAGE

    def download(self, url: str, sink: IO[bytes], *, max_bytes: int = MAX_IMAGE_BYTES) -> VerifiedImage:
        """
        Stream the image at a temporary ``url`` into ``sink`` (a seekable binary file).

        A broken transfer is retried from the start; an expired URL, a body that is not an image
        (by its magic number) or one over ``max_bytes`` raises :class:`XaiImageError`.
        """
        for attempt in self._retrying():
            with attempt:
                sink.seek(0)
                sink.truncate()
                return self._download_once(url, sink, max_bytes)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _download_once(self, url: str, sink: IO[bytes], max_bytes: int) -> VerifiedImage:
        name = url.rsplit("/", 1)[-1]
        settings = self.settings
        writer = ImageWriter(sink, name, max_bytes)
        try:
            with self._download_session.get(
                url, stream=True, timeout=(settings.connect_timeout, settings.read_timeout)
            ) as response:
                if response.status_code in (403, 404, 410):
                    raise XaiImageError(f"temporary image URL {name} is expired or gone (HTTP {response.status_code})")
                if response.status_code >= 400:
                    raise error_from_response(
                        "GET", name, response.status_code, response.text, response.headers.get("Retry-After")
                    )
                for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                    writer.write(chunk)
        except requests.RequestException as error:
            raise XaiServerError("GET", name, None, f"image download broke: {type(error).__name__}") from None
        return writer.result()

    # -- batches -------------------------------------------------------------------------------------

    def create_batch(self, name: str) -> Batch:
        """Create an empty batch."""
        return Batch.model_validate(self.call("POST", BATCHES_PATH, json_body={"name": name}))

    def add_batch_requests(
        self,
        batch_id: str,
        requests_by_id: Sequence[tuple[str, ImageRequest]],
        *,
        pacer: CallPacer | None = None,
        max_bytes: int | None = None,
    ) -> int:
        """
        Add image requests to a batch, split into calls of at most 25 MB, at most 100 calls per 30 s.

        :param batch_id: The batch.
        :param requests_by_id: ``(batch_request_id, request)`` pairs; ids must be unique in the batch.
        :param pacer: The pace of add calls (default xAI's limit); share one across calls of a task.
        :param max_bytes: Largest body of one call (default xAI's 25 MB).
        :return: The number of add calls made.
        """
        pacer = pacer or CallPacer()
        chunks = _add_request_bodies(requests_by_id, max_bytes)
        for chunk in chunks:
            time.sleep(pacer.delay(time.monotonic()))
            self.call("POST", f"{BATCHES_PATH}/{batch_id}/requests", json_body=chunk)
            # Recorded once xAI has counted the call, so the window never runs ahead of the server's.
            pacer.record(time.monotonic())
        return len(chunks)

    def get_batch(self, batch_id: str) -> Batch:
        """The batch's state and cost so far."""
        return Batch.model_validate(self.call("GET", f"{BATCHES_PATH}/{batch_id}"))

    def iter_batch_results(
        self, batch_id: str, *, model: str = "", page_size: int = RESULTS_PAGE_SIZE
    ) -> Iterator[BatchResult]:
        """Every result of the batch, page by page (unordered: match by ``batch_request_id``)."""
        token: str | None = None
        while True:
            payload = self.call("GET", f"{BATCHES_PATH}/{batch_id}/results", params=_page(page_size, token))
            results, token = parse_batch_results_page(payload, model)
            yield from results
            if not token:
                return

    def cancel_batch(self, batch_id: str) -> Batch:
        """Cancel the batch's pending requests."""
        return Batch.model_validate(self.call("POST", f"{BATCHES_PATH}/{batch_id}:cancel"))

    def list_batches(self, *, page_size: int = RESULTS_PAGE_SIZE) -> Iterator[Batch]:
        """The team's batches, newest first as xAI lists them."""
        token: str | None = None
        while True:
            payload = self.call("GET", BATCHES_PATH, params=_page(page_size, token))
            batches, token = _batches_page(payload)
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
        timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        limits = httpx.Limits(max_connections=POOL_SIZE)
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
    ) -> dict[str, Any]:
        """The async :meth:`call`: same retry policy, same errors."""
        async for attempt in tenacity.AsyncRetrying(**retry_policy(self.settings.max_retries, self.log)):
            with attempt:
                return await self._acall_once(client, method, path, json_body, params)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _acall_once(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        json_body: Any,
        params: dict[str, Any] | None,
    ) -> dict[str, Any]:
        try:
            response = await client.request(method, self._url(path), json=json_body, params=params)
        except httpx.HTTPError as error:
            raise XaiServerError(method, path, None, f"{type(error).__name__}: {error}") from None
        return read_response(method, path, response.status_code, response.text, response.headers.get("Retry-After"))

    async def arun_image_request(self, client: httpx.AsyncClient, request: ImageRequest) -> ImageGenerationResult:
        """The async :meth:`run_image_request`."""
        self._warn_if_deprecated(request.model)
        payload = await self.acall(client, "POST", request.path, json_body=request.body())
        return parse_image_response(payload, request.model, request.n)

    async def aget_batch(self, client: httpx.AsyncClient, batch_id: str) -> Batch:
        """The async :meth:`get_batch`."""
        return Batch.model_validate(await self.acall(client, "GET", f"{BATCHES_PATH}/{batch_id}"))

    async def acreate_batch(self, client: httpx.AsyncClient, name: str) -> Batch:
        """The async :meth:`create_batch`."""
        return Batch.model_validate(await self.acall(client, "POST", BATCHES_PATH, json_body={"name": name}))

    async def aadd_batch_requests(
        self,
        client: httpx.AsyncClient,
        batch_id: str,
        requests_by_id: Sequence[tuple[str, ImageRequest]],
        *,
        pacer: CallPacer | None = None,
        max_bytes: int | None = None,
    ) -> int:
        """The async :meth:`add_batch_requests`: same splitting and pace."""
        pacer = pacer or CallPacer()
        chunks = _add_request_bodies(requests_by_id, max_bytes)
        for chunk in chunks:
            await asyncio.sleep(pacer.delay(time.monotonic()))
            await self.acall(client, "POST", f"{BATCHES_PATH}/{batch_id}/requests", json_body=chunk)
            pacer.record(time.monotonic())
        return len(chunks)

    async def aiter_batch_results(
        self, client: httpx.AsyncClient, batch_id: str, *, model: str = "", page_size: int = RESULTS_PAGE_SIZE
    ) -> AsyncIterator[BatchResult]:
        """The async :meth:`iter_batch_results`."""
        token: str | None = None
        while True:
            path = f"{BATCHES_PATH}/{batch_id}/results"
            payload = await self.acall(client, "GET", path, params=_page(page_size, token))
            results, token = parse_batch_results_page(payload, model)
            for result in results:
                yield result
            if not token:
                return

    async def acancel_batch(self, client: httpx.AsyncClient, batch_id: str) -> Batch:
        """The async :meth:`cancel_batch`."""
        return Batch.model_validate(await self.acall(client, "POST", f"{BATCHES_PATH}/{batch_id}:cancel"))

    async def alist_batches(
        self, client: httpx.AsyncClient, *, page_size: int = RESULTS_PAGE_SIZE
    ) -> AsyncIterator[Batch]:
        """The async :meth:`list_batches`."""
        token: str | None = None
        while True:
            batches, token = _batches_page(
                await self.acall(client, "GET", BATCHES_PATH, params=_page(page_size, token))
            )
            for batch in batches:
                yield batch
            if not token:
                return
