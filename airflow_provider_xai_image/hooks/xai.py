"""XaiHook: the ``xai`` connection and every call to the xAI API (one HTTP core: ``http_core``, ``transport``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cached_property, partial
from typing import IO, TYPE_CHECKING, Any, Unpack

import httpx
import requests
import tenacity
from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook, mask_secret

from airflow_provider_xai_image.api.images import (
    API_KEY_PATH,
    DEPRECATED_MODELS,
    ImageGenerationResult,
    ImageOptions,
    ImageRequest,
    parse_image_response,
)
from airflow_provider_xai_image.connection import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
    UI_FIELD_BEHAVIOUR,
    XaiConnectionSettings,
    how_to_create,
)
from airflow_provider_xai_image.exceptions import XaiApiError, XaiConnectionConfigError
from airflow_provider_xai_image.hooks.batch_api import XaiBatchApi
from airflow_provider_xai_image.hooks.http_core import ApiRequest, retrying
from airflow_provider_xai_image.hooks.models_api import XaiModelsApi
from airflow_provider_xai_image.hooks.redaction import KeyScrubber
from airflow_provider_xai_image.hooks.retry import AmbiguousAttempts
from airflow_provider_xai_image.hooks.transport import (
    USER_AGENT,
    asend,
    async_session,
    download_once,
    pooled_session,
    send,
)
from airflow_provider_xai_image.storage.image_checks import MAX_IMAGE_BYTES, VerifiedImage

if TYPE_CHECKING:
    from airflow_provider_xai_image.engine.ratelimit import AsyncRateLimiter, RateLimiter


class XaiHook(XaiBatchApi, XaiModelsApi, BaseHook):
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
        return pooled_session(self._headers())

    @cached_property
    def _download_session(self) -> requests.Session:
        """Temporary image URLs need no key, and must never be sent it."""
        return pooled_session({"User-Agent": USER_AGENT})

    def get_conn(self) -> requests.Session:
        """The hook's ``requests.Session``, carrying the API key and User-Agent."""
        return self._session

    # -- one call, retried --------------------------------------------------------------------------

    def _retrying(
        self, retry_rate_limits: bool = True, ambiguous: AmbiguousAttempts | None = None
    ) -> tenacity.Retrying:
        return tenacity.Retrying(**retrying(self.settings, self.log, retry_rate_limits, ambiguous))

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
        request = ApiRequest(method, path, json_body, params, files, data, paid)
        timeout = request.timeout(self.settings)
        for attempt in self._retrying(retry_rate_limits, ambiguous):
            with attempt:
                status, text, retry_after = send(self._session, self._url(path), request, timeout)
                return request.answer(status, self._scrub_key(text), retry_after)
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

    def build_request(self, prompt: str, **options: Unpack[ImageOptions]) -> ImageRequest:
        """Validate one image request (no request is sent); a ``model`` not given takes the connection's default.

        :param prompt: The prompt.
        :param options: The request's other parameters (see :class:`.ImageOptions`).
        """
        given: dict[str, Any] = {name: value for name, value in options.items() if value is not None}
        given.setdefault("model", self.settings.default_model)
        if given.get("source_images") is not None:
            given["source_images"] = tuple(given["source_images"])
        return ImageRequest.build(prompt=prompt, **given)

    def generate_images(self, prompt: str, **options: Unpack[ImageOptions]) -> ImageGenerationResult:
        """
        Generate images from a prompt, or edit ``source_images`` when given.

        :param prompt: What to draw, or how to change the source images.
        :param options: ``model``, ``n``, ``aspect_ratio``, ``resolution``, ``quality``, ``response_format``,
            ``user``, ``source_images`` (see :class:`~airflow_provider_xai_image.api.images.ImageOptions`).
        :return: The images (URL or bytes each, or marked filtered), the model used and the cost.
        :raises XaiPossiblyBilledError: the request may have been billed, and was not re-sent.
        """
        if unknown := sorted(options.keys() - ImageOptions.__optional_keys__):
            allowed = ", ".join(sorted(ImageOptions.__optional_keys__))
            raise TypeError(f"generate_images() got unexpected parameter(s) {', '.join(unknown)}; allowed: {allowed}")
        return self.run_image_request(self.build_request(prompt, **options))

    def run_image_request(self, request: ImageRequest, limiter: RateLimiter | None = None) -> ImageGenerationResult:
        """Send a validated request to ``images/generations`` or ``images/edits`` (paid: see :meth:`call`).

        :param request: The request.
        :param limiter: The task's rate limiter, shared by its requests: a 429 slows them all down and the
            refused request is sent again when the limiter allows, never counting against ``max_retries``.
            Without one, a 429 is retried like a 503.
        :raises XaiPossiblyBilledError: also when a send may have reached xAI and a later error (a 429)
            ended the request.
        """
        ambiguous, image_call = self._image_call(request, limiter is not None)
        send = partial(self.call, **image_call)
        try:
            payload = send() if limiter is None else limiter.send(send)
        except XaiApiError as error:
            raise ambiguous.ending(error) from None
        return self._image_result(payload, request, ambiguous)

    def _image_call(self, request: ImageRequest, limited: bool) -> tuple[AmbiguousAttempts, dict[str, Any]]:
        """The arguments of :meth:`call` (or :meth:`acall`) for an image request, and the count of its sends
        that may have reached xAI (shared by every send, a rate limiter's re-sends too)."""
        if replacement := DEPRECATED_MODELS.get(request.model):
            self.log.warning("Model %r is deprecated by xAI; use %r instead.", request.model, replacement)
        ambiguous = AmbiguousAttempts()
        arguments = {"method": "POST", "path": request.path, "json_body": request.body(), "paid": True}
        return ambiguous, {**arguments, "retry_rate_limits": not limited, "ambiguous": ambiguous}

    def _image_result(
        self, payload: dict[str, Any], request: ImageRequest, ambiguous: AmbiguousAttempts
    ) -> ImageGenerationResult:
        """The answer of an image request, with the earlier sends that may have been billed besides."""
        result = parse_image_response(payload, request.model, request.n)
        if not ambiguous.count:
            return result
        self.log.warning(
            "%s answered after %d earlier attempt(s) that may have reached xAI: recorded as possibly billed.",
            request.path,
            ambiguous.count,
        )
        return result.model_copy(update={"possibly_billed_attempts": ambiguous.count})

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
                return download_once(
                    self._download_session,
                    url,
                    sink,
                    max_bytes=max_bytes,
                    timeout=self.settings.timeout(),
                    scrub=self._scrub_key,
                )
        raise AssertionError("unreachable: tenacity reraises the last error")

    # -- async (triggers) ---------------------------------------------------------------------------

    @asynccontextmanager
    async def async_client(self) -> AsyncIterator[httpx.AsyncClient]:
        """An ``httpx.AsyncClient`` carrying the key, for the ``a*`` methods."""
        settings = await self.aload_settings()
        async with async_session(self._headers(), settings.timeout()) as client:
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
        request = ApiRequest(method, path, json_body, params, paid=paid)
        timeout = request.timeout(self.settings)
        async for attempt in tenacity.AsyncRetrying(**retrying(self.settings, self.log, retry_rate_limits, ambiguous)):
            with attempt:
                status, text, retry_after = await asend(client, self._url(path), request, timeout)
                return request.answer(status, self._scrub_key(text), retry_after)
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
        ambiguous, image_call = self._image_call(request, limiter is not None)
        send = partial(self.acall, client, **image_call)
        try:
            payload = await (send() if limiter is None else limiter.send(send))
        except XaiApiError as error:
            raise ambiguous.ending(error) from None
        return self._image_result(payload, request, ambiguous)
