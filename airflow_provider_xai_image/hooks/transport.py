"""The hook's two transports, which only move bytes: ``requests`` on workers, ``httpx`` on the triggerer.

What a request is, its timeout and how its answer is classified are
:mod:`~airflow_provider_xai_image.hooks.http_core`'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import IO

import httpx
import requests
import urllib3
from requests.adapters import HTTPAdapter

from airflow_provider_xai_image import __version__
from airflow_provider_xai_image.exceptions import XaiImageError, XaiServerError
from airflow_provider_xai_image.hooks.http_core import ApiRequest, error_from_response
from airflow_provider_xai_image.storage.image_checks import ImageWriter, VerifiedImage

USER_AGENT = f"airflow-provider-xai-image/{__version__}"
DOWNLOAD_CHUNK_BYTES = 256 * 1024
#: Connection pool size: the generate operator's default cap of requests in flight (``engine.ratelimit.IN_FLIGHT_CAP``).
POOL_SIZE = 128
#: What an answer is to the core: status, text and ``Retry-After``.
RawAnswer = tuple[int, str, str | None]
#: httpx errors raised before any byte of the request could reach xAI.
_UNSENT_BY_HTTPX = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.LocalProtocolError)


def pooled_session(headers: dict[str, str]) -> requests.Session:
    """A session whose connection pool fits the operators' highest sensible concurrency.

    :param headers: Sent with every request.
    """
    session = requests.Session()
    session.headers.update(headers)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


@asynccontextmanager
async def async_session(headers: dict[str, str], timeout: tuple[float, float]) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` with the same pool size as :func:`pooled_session`.

    :param headers: Sent with every request.
    :param timeout: ``(connect, read)`` seconds, unless a request says otherwise.
    """
    connect, read = timeout
    limits = httpx.Limits(max_connections=POOL_SIZE)
    async with httpx.AsyncClient(
        headers=headers, timeout=httpx.Timeout(read, connect=connect), limits=limits
    ) as client:
        yield client


def send(session: requests.Session, url: str, request: ApiRequest, timeout: tuple[float, float]) -> RawAnswer:
    """Send ``request`` once with ``requests``.

    :param session: From :func:`pooled_session`.
    :param url: The request's URL.
    :param request: What to send.
    :param timeout: ``(connect, read)`` seconds.
    """
    try:
        response = session.request(
            request.method,
            url,
            json=request.json_body,
            params=request.params,
            files=request.files,
            data=request.data,
            timeout=timeout,
        )
    except requests.RequestException as error:
        raise request.no_answer(error, unsent=_unsent_by_requests(error)) from None
    return response.status_code, response.text, response.headers.get("Retry-After")


async def asend(client: httpx.AsyncClient, url: str, request: ApiRequest, timeout: tuple[float, float]) -> RawAnswer:
    """Send ``request`` once with ``httpx`` (no multipart: the triggers send none).

    :param client: From :func:`async_session`.
    :param url: The request's URL.
    :param request: What to send.
    :param timeout: ``(connect, read)`` seconds.
    """
    connect, read = timeout
    try:
        response = await client.request(
            request.method,
            url,
            json=request.json_body,
            params=request.params,
            timeout=httpx.Timeout(read, connect=connect),
        )
    except httpx.HTTPError as error:
        unsent = isinstance(
            error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.LocalProtocolError
        )
        raise request.no_answer(error, unsent=unsent) from None
    return response.status_code, response.text, response.headers.get("Retry-After")


def _unsent_by_requests(error: requests.RequestException) -> bool:
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(error, requests.ConnectTimeout | ValueError) or isinstance(  # ValueError: a bad header
        reason, urllib3.exceptions.NewConnectionError
    )


def download_once(
    session: requests.Session,
    url: str,
    sink: IO[bytes],
    *,
    max_bytes: int,
    timeout: tuple[float, float],
    scrub: Callable[[str], str],
) -> VerifiedImage:
    """Stream the image at a temporary ``url`` into ``sink`` once, verifying it on the way.

    :param session: A session that carries no key.
    :param url: The temporary URL.
    :param sink: A seekable binary file, empty.
    :param max_bytes: The largest image accepted.
    :param timeout: ``(connect, read)`` seconds.
    :param scrub: Removes the key from an answer's text.
    """
    name = url.rsplit("/", 1)[-1]
    request = ApiRequest("GET", name)
    writer = ImageWriter(sink, name, max_bytes)
    try:
        with session.get(url, stream=True, timeout=timeout) as response:
            if response.status_code in (403, 404, 410):
                raise XaiImageError(f"temporary image URL {name} is expired or gone (HTTP {response.status_code})")
            if response.status_code >= 400:
                body = scrub(response.text)
                raise error_from_response("GET", name, response.status_code, body, response.headers.get("Retry-After"))
            for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                writer.write(chunk)
            length = response.headers.get("Content-Length")
    except requests.RequestException as error:
        raise request.no_answer(error, unsent=_unsent_by_requests(error)) from None
    try:
        return writer.result(expected_size=int(length) if length and length.isdigit() else None)
    except XaiImageError as error:
        raise XaiServerError("GET", name, 200, f"image download incomplete: {error}") from None
