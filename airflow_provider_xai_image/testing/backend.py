"""The emulator's state: key, configuration, request log, billing, temporary images and batches.

Everything here is guarded by one lock; image rendering (the slow part) happens outside it, from
the specs kept here. Batch requests complete by the clock: each is due ``batch_seconds`` after it
was added and is settled (completed, and billed exactly once) by whichever call first looks at
its batch after that moment.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from airflow_provider_xai_image.models import DEFAULT_MODEL
from airflow_provider_xai_image.testing.catalog import (
    BATCH_PRICE_FACTOR,
    INPUT_IMAGE_PRICE_USD_TICKS,
    ModelInfo,
    resolve_model,
)
from airflow_provider_xai_image.testing.config import EmulatorConfig
from airflow_provider_xai_image.testing.errors import ApiError
from airflow_provider_xai_image.testing.images import ImageSpec, pixel_size, ratio_of
from airflow_provider_xai_image.testing.ratelimit import SlidingWindow
from airflow_provider_xai_image.testing.records import (
    BatchOutcome,
    BatchRecord,
    BatchRequestRecord,
    Generation,
    OutputImage,
    RequestRecord,
    TempImage,
)
from airflow_provider_xai_image.testing.schemas import GenerateBody, ImageUrl

#: A prompt containing this is moderated: its images come back filtered (and are not billed).
MODERATION_MARKER = "[[moderate]]"
#: A batch request whose prompt contains this fails with an error message.
BATCH_FAILURE_MARKER = "[[fail]]"
BLOCK_REASON = "The generated image was blocked by content moderation."
BATCH_LIFETIME_SECONDS = 24 * 3600.0
BATCH_EXPIRED_MESSAGE = "Batch expired"

#: A fault to inject into the next /v1 call: drop the connection, send junk, or answer with an error.
ApiFault = Literal["reset_connection", "invalid_json"] | ApiError


def revise_prompt(prompt: str) -> str:
    """The emulator's stand-in for xAI's prompt rewriting."""
    return f"A detailed rendering of: {prompt}"


def redact_key(key: str) -> str:
    """``xa***...***abcd``: enough to recognise a key, never the key itself."""
    return f"{key[:2]}***...***{key[-4:]}" if len(key) >= 12 else "***...***"


def _output_size(body: GenerateBody, sources: Sequence[ImageUrl]) -> tuple[int, int]:
    """One source image of known size sets the proportions; otherwise ``aspect_ratio`` does."""
    if len(sources) == 1 and (source_size := sources[0].pixel_size) is not None:
        return pixel_size(*source_size, body.resolution)
    return pixel_size(*ratio_of(body.aspect_ratio), body.resolution)


def _resolve(name: str | None) -> ModelInfo:
    model = resolve_model(name or DEFAULT_MODEL)
    if model is None:
        raise ApiError(404, f"The model {name} does not exist or your team does not have access to it.")
    return model


class EmulatorBackend:
    """All state of one emulator; every public method is thread-safe."""

    def __init__(self, api_key: str, config: EmulatorConfig | None = None) -> None:
        self.api_key = api_key
        self._initial_config = config or EmulatorConfig()
        self._lock = threading.Lock()
        self._config = self._initial_config.model_copy(deep=True)
        self._requests: list[RequestRecord] = []
        self._images_billed = 0
        self._cost_usd_ticks = 0
        self._temp_images: dict[str, TempImage] = {}
        self._batches: dict[str, BatchRecord] = {}
        self._generate_limiter = SlidingWindow()
        self._batch_create_limiter = SlidingWindow()
        self._batch_add_limiter = SlidingWindow()

    # Configuration -------------------------------------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        """A copy of the current configuration (one-shot faults show what is still queued)."""
        with self._lock:
            return self._config.model_copy(deep=True)

    def configure(self, **fields: Any) -> EmulatorConfig:
        """Change some settings/faults (validated; pydantic.ValidationError when invalid)."""
        with self._lock:
            self._config = EmulatorConfig.model_validate({**self._config.model_dump(), **fields})
            return self._config.model_copy(deep=True)

    def reset(self) -> None:
        """Forget everything (log, billing, images, batches, limits) and restore the initial config."""
        with self._lock:
            self._config = self._initial_config.model_copy(deep=True)
            self._requests.clear()
            self._images_billed = self._cost_usd_ticks = 0
            self._temp_images.clear()
            self._batches.clear()
            for limiter in (self._generate_limiter, self._batch_create_limiter, self._batch_add_limiter):
                limiter.clear()

    # Request log and counters --------------------------------------------------------------

    def record_request(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    @property
    def requests_log(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    @property
    def images_billed(self) -> int:
        """Images billed so far (filtered images are not; batch images once they complete)."""
        return self.stats()["images_billed"]

    @property
    def cost_usd_ticks(self) -> int:
        return self.stats()["cost_usd_ticks"]

    def stats(self) -> dict[str, int]:
        """Counters for tests and ``GET /_emulator/stats``; settles batches that are due first."""
        with self._lock:
            self._settle_all(time.monotonic())
            return {
                "images_billed": self._images_billed,
                "cost_usd_ticks": self._cost_usd_ticks,
                "requests": len(self._requests),
                "batches_created": len(self._batches),
                "temporary_images": len(self._temp_images),
            }

    # Faults and limits ---------------------------------------------------------------------

    def latency(self) -> float:
        """Seconds to delay this /v1 call (drawn anew for each call when a range is configured)."""
        with self._lock:
            latency = self._config.latency
        return random.uniform(*latency) if isinstance(latency, tuple) else latency

    def take_api_fault(self) -> ApiFault | None:
        """Consume the next queued fault for a /v1 call: connection reset, scripted status, bad JSON."""
        with self._lock:
            config = self._config
            if config.reset_connections:
                config.reset_connections -= 1
                return "reset_connection"
            if config.status_script:
                status, *config.status_script = config.status_script
                retry_after = config.retry_after if status == 429 else None
                return ApiError(status, f"Emulated {status} error (status_script).", retry_after=retry_after)
            if config.invalid_json:
                config.invalid_json -= 1
                return "invalid_json"
            return None

    def take_truncated_image(self) -> bool:
        """Consume one queued truncated download, if any."""
        with self._lock:
            if self._config.truncated_images:
                self._config.truncated_images -= 1
                return True
            return False

    def check_rate_limit(self) -> None:
        """Count a generate/edit call against ``rate_limit_rps``; ApiError 429 past it."""
        with self._lock:
            limit = self._config.rate_limit_rps
            if limit is None:
                return
            wait = self._generate_limiter.acquire(time.monotonic(), limit, 1.0)
        if wait is not None:
            raise ApiError(429, f"Rate limit exceeded: at most {limit} requests per second.", retry_after=wait)

    # Generation ----------------------------------------------------------------------------

    def generate(self, body: GenerateBody, sources: Sequence[ImageUrl] = ()) -> Generation:
        """Serve a generate call, or an edit when ``sources`` are given; bill it."""
        model = _resolve(body.model)
        width, height = _output_size(body, sources)
        # An edit's picture depends on its sources too, so edits of different images differ.
        seed = body.prompt + "".join(hashlib.sha256(source.url.encode()).hexdigest() for source in sources)
        with self._lock:
            return self._generation(body, model, width, height, len(sources), 1.0, time.monotonic(), seed)

    def _generation(
        self,
        body: GenerateBody,
        model: ModelInfo,
        width: int,
        height: int,
        input_images: int,
        price_factor: float,
        now: float,
        seed: str | None = None,
    ) -> Generation:
        """Build (and bill) a generation; registers temporary images for ``url`` responses."""
        config = self._config
        response_format = body.response_format or "url"
        filtered = MODERATION_MARKER in body.prompt
        specs = [ImageSpec(seed or body.prompt, index, width, height, config.image_format) for index in range(body.n)]
        block_reason = BLOCK_REASON if filtered and config.moderation_style == "block_reason" else None
        images: tuple[OutputImage, ...] = ()
        if block_reason is None:
            served = response_format == "url" and not filtered
            images = tuple(
                OutputImage(spec, self._register_image(spec, now) if served else None, filtered) for spec in specs
            )
        billed = 0 if filtered else body.n
        cost = round((billed * model.image_price + input_images * INPUT_IMAGE_PRICE_USD_TICKS) * price_factor)
        self._images_billed += billed
        self._cost_usd_ticks += cost
        return Generation(
            model=model.id,
            revised_prompt=revise_prompt(body.prompt),
            response_format=response_format,
            images=images,
            cost_usd_ticks=cost,
            block_reason=block_reason,
        )

    # Temporary images ----------------------------------------------------------------------

    def _register_image(self, spec: ImageSpec, now: float) -> str:
        filename = f"xai-tmp-imgen-{uuid.uuid4()}.{spec.image_format}"
        self._temp_images[filename] = TempImage(spec, expires_at=now + self._config.image_ttl)
        return filename

    def temp_image(self, filename: str) -> ImageSpec:
        """The spec of a temporary image; ApiError 404 when unknown, 403 once expired."""
        with self._lock:
            image = self._temp_images.get(filename)
            if image is None:
                raise ApiError(404, f"No temporary image named {filename}.")
            if image.expires_at <= time.monotonic():
                raise ApiError(403, f"The temporary image URL for {filename} has expired.")
            return image.spec

    def expire_images(self) -> None:
        """Make every temporary image URL issued so far expire now."""
        with self._lock:
            now = time.monotonic()
            for image in self._temp_images.values():
                image.expires_at = min(image.expires_at, now)

    # Batches -------------------------------------------------------------------------------

    def create_batch(self, name: str) -> dict[str, Any]:
        with self._lock:
            limit = self._config.batch_create_per_second
            if limit is not None:
                wait = self._batch_create_limiter.acquire(time.monotonic(), limit, 1.0)
                if wait is not None:
                    raise ApiError(429, f"Too many batches created: at most {limit} per second.", retry_after=wait)
            created = time.time()
            batch = BatchRecord(
                batch_id=f"batch_{uuid.uuid4()}",
                name=name,
                create_time=created,
                expire_time=created + BATCH_LIFETIME_SECONDS,
            )
            self._batches[batch.batch_id] = batch
            return batch.to_json()

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            return self._settled_batch(batch_id).to_json()

    def list_batches(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        """Batches in creation order from ``offset``; also the next offset, None on the last page."""
        with self._lock:
            now = time.monotonic()
            batches = list(self._batches.values())[offset : offset + limit]
            for batch in batches:
                self._settle(batch, now)
            end = offset + len(batches)
            return [batch.to_json() for batch in batches], end if end < len(self._batches) else None

    def admit_batch_add(self, body_size: int) -> None:
        """Apply the per-call size limit and the add-calls-per-window limit to an "add requests" call."""
        with self._lock:
            config = self._config
            if body_size > config.batch_add_max_bytes:
                raise ApiError(413, f"Request body of {body_size} bytes exceeds {config.batch_add_max_bytes} bytes.")
            wait = self._batch_add_limiter.acquire(
                time.monotonic(), config.batch_add_max_calls, config.batch_add_window_seconds
            )
        if wait is not None:
            raise ApiError(
                429,
                f"Too many add-requests calls: at most {config.batch_add_max_calls} "
                f"per {config.batch_add_window_seconds:g} seconds.",
                retry_after=wait,
            )

    def add_batch_requests(self, batch_id: str, entries: Sequence[tuple[str, GenerateBody]]) -> None:
        """Add ``(batch_request_id, body)`` pairs; ApiError 400 on a duplicate id or a cancelled batch."""
        with self._lock:
            now = time.monotonic()
            batch = self._settled_batch(batch_id)
            if batch.cancel_time is not None:
                raise ApiError(400, f"Batch {batch_id} is cancelled; no requests can be added to it.")
            counts = Counter(request_id for request_id, _ in entries)
            duplicates = sorted(
                {request_id for request_id, count in counts.items() if count > 1} | (counts.keys() & batch.request_ids)
            )
            if duplicates:
                raise ApiError(400, f"Duplicate batch_request_id in batch {batch_id}: {', '.join(duplicates)}")
            due = now + self._config.batch_seconds
            for request_id, body in entries:
                batch.request_ids.add(request_id)
                batch.pending.append(BatchRequestRecord(request_id, body, due))

    def batch_results(self, batch_id: str, offset: int, limit: int) -> tuple[list[BatchOutcome], int | None]:
        """Completed requests from ``offset`` (in completion order); also the next offset or None."""
        with self._lock:
            batch = self._settled_batch(batch_id)
            outcomes = batch.completed[offset : offset + limit]
            end = offset + len(outcomes)
            return outcomes, end if end < len(batch.completed) else None

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Cancel the requests still pending."""
        with self._lock:
            batch = self._settled_batch(batch_id)
            self._cancel_pending(batch, time.time())
            return batch.to_json()

    def expire_batch(self, batch_id: str, message: str | None = None) -> dict[str, Any]:
        """Let xAI give up on a batch: pending requests are cancelled with ``cancel_by_xai_message``."""
        with self._lock:
            batch = self._settled_batch(batch_id)
            now = time.time()
            self._cancel_pending(batch, now)
            batch.cancel_by_xai_message = message or BATCH_EXPIRED_MESSAGE
            batch.expire_time = now
            return batch.to_json()

    def _cancel_pending(self, batch: BatchRecord, now: float) -> None:
        batch.num_cancelled += len(batch.pending)
        batch.pending.clear()
        if batch.cancel_time is None:
            batch.cancel_time = now

    def _settled_batch(self, batch_id: str) -> BatchRecord:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"Batch {batch_id} not found.")
        self._settle(batch, time.monotonic())
        return batch

    def _settle_all(self, now: float) -> None:
        for batch in self._batches.values():
            self._settle(batch, now)

    def _settle(self, batch: BatchRecord, now: float) -> None:
        """Complete (and bill) the pending requests that are due by ``now``."""
        due = [request for request in batch.pending if request.due <= now]
        if not due:
            return
        batch.pending = [request for request in batch.pending if request.due > now]
        for request in sorted(due, key=lambda request: request.due):
            outcome = self._complete(request, now)
            batch.completed.append(outcome)
            if outcome.generation is None:
                batch.num_error += 1
            else:
                batch.num_success += 1
                batch.cost_usd_ticks += outcome.generation.cost_usd_ticks

    def _complete(self, request: BatchRequestRecord, now: float) -> BatchOutcome:
        body = request.body
        if BATCH_FAILURE_MARKER in body.prompt:
            return BatchOutcome(request.batch_request_id, error="Image generation failed (emulated failure).")
        try:
            model = _resolve(body.model)
        except ApiError as error:
            return BatchOutcome(request.batch_request_id, error=error.message)
        width, height = _output_size(body, ())
        generation = self._generation(body, model, width, height, 0, BATCH_PRICE_FACTOR, now)
        return BatchOutcome(request.batch_request_id, generation=generation)

    # The key -------------------------------------------------------------------------------

    def api_key_info(self) -> dict[str, Any]:
        """Body of ``GET /v1/api-key``."""
        return {
            "redacted_api_key": redact_key(self.api_key),
            "user_id": "emulator-user",
            "name": "xAI emulator key",
            "create_time": "2025-01-01T00:00:00Z",
            "modify_time": "2025-01-01T00:00:00Z",
            "modified_by": "emulator-user",
            "team_id": "emulator-team",
            "acls": ["api-key:model:*", "api-key:endpoint:*"],
            "api_key_id": "emulator-key",
            "team_blocked": False,
            "api_key_blocked": False,
            "api_key_disabled": False,
        }
