"""The emulator's state: key, configuration, request log, billing, temporary images, files and batches.

Everything here is guarded by one lock; image rendering (the slow part) happens outside it, from
the specs kept here. Batches move on by the clock and are settled by whichever call first looks
at them after a moment has passed: a batch created from a file validates it for
``batch_validation_seconds`` (every counter 0 meanwhile), then either xAI cancels it
(``cancel_by_xai_message`` says which line is wrong) or its requests are queued. Each batch
request completes (and is billed, exactly once) ``batch_seconds`` after it was queued.
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

from airflow_provider_xai_image.testing.catalog import INPUT_IMAGE_PRICE_USD_TICKS, ModelInfo, resolve_model
from airflow_provider_xai_image.testing.config import EmulatorConfig
from airflow_provider_xai_image.testing.contract import (
    BATCH_PRICE_FACTOR,
    DEFAULT_MODEL,
    DEFAULT_RESPONSE_FORMAT,
    FILE_ID_PREFIX,
)
from airflow_provider_xai_image.testing.errors import ApiError
from airflow_provider_xai_image.testing.images import ImageSpec, pixel_size, ratio_of, source_image_size
from airflow_provider_xai_image.testing.ratelimit import SlidingWindow
from airflow_provider_xai_image.testing.records import (
    BatchRecord,
    BatchRequest,
    CompletedBatchRequest,
    Generation,
    LoggedRequest,
    OutputImage,
    PendingRequest,
    SourceImage,
    TempImage,
    UploadedFile,
)
from airflow_provider_xai_image.testing.schemas import BatchInputRequest, GenerateBody, ImageSource, parse_batch_input
from airflow_provider_xai_image.testing.uploads import FileUpload

#: A prompt containing this is moderated: its images come back filtered (and are not billed).
MODERATION_MARKER = "[[moderate]]"
#: A batch request whose prompt contains this fails with an error.
BATCH_FAILURE_MARKER = "[[fail]]"
BLOCK_REASON = "The generated image was blocked by content moderation."
BATCH_LIFETIME_SECONDS = 24 * 3600.0
BATCH_EXPIRED_MESSAGE = "Batch expired"
BATCH_FAILURE_MESSAGE = "Image generation failed (emulated failure)."
#: gRPC status codes of failed batch results (``{"code": 5, "message": ...}``).
GRPC_NOT_FOUND = 5
GRPC_INTERNAL = 13

#: A fault to inject into the next /v1 call: drop the connection, send junk, or answer with an error.
ApiFault = Literal["reset_connection", "invalid_json"] | ApiError
#: A fault to inject into the next image download: half the bytes, with or without the full length.
DownloadFault = Literal["truncated", "truncated_no_length"]


def revise_prompt(prompt: str) -> str:
    """The emulator's stand-in for xAI's prompt rewriting (served only when configured)."""
    return f"A detailed rendering of: {prompt}"


def redact_key(key: str) -> str:
    """``xa***...***abcd``: enough to recognise a key, never the key itself."""
    return f"{key[:2]}***...***{key[-4:]}" if len(key) >= 12 else "***...***"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _output_size(body: GenerateBody, sources: Sequence[SourceImage]) -> tuple[int, int]:
    """One source image of known size sets the proportions; otherwise ``aspect_ratio`` does."""
    if len(sources) == 1 and (source_size := sources[0].size) is not None:
        return pixel_size(*source_size, body.resolution)
    return pixel_size(*ratio_of(body.aspect_ratio), body.resolution)


def _completion_order(pending: PendingRequest) -> tuple[float, str]:
    """By due time; among requests due together, by a digest of the id (unrelated to submission order)."""
    return pending.due, _digest(pending.request.batch_request_id.encode())


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
        self._requests: list[LoggedRequest] = []
        self._generating = 0
        self._rate_limited = 0
        self._images_billed = 0
        self._cost_usd_ticks = 0
        self._temp_images: dict[str, TempImage] = {}
        self._files: dict[str, UploadedFile] = {}
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
        """Forget everything (log, billing, images, files, batches, limits) and restore the initial config."""
        with self._lock:
            self._config = self._initial_config.model_copy(deep=True)
            self._requests.clear()
            self._images_billed = self._cost_usd_ticks = self._rate_limited = 0
            self._temp_images.clear()
            self._files.clear()
            self._batches.clear()
            for limiter in (self._generate_limiter, self._batch_create_limiter, self._batch_add_limiter):
                limiter.clear()

    # Request log and counters --------------------------------------------------------------

    def record_request(self, record: LoggedRequest) -> None:
        with self._lock:
            self._requests.append(record)

    def generation_started(self) -> int:
        """A generate/edit call arrived; the number now being served, itself included."""
        with self._lock:
            self._generating += 1
            return self._generating

    def generation_ended(self) -> None:
        """A generate/edit call was answered (or refused, or dropped)."""
        with self._lock:
            self._generating -= 1

    def generations_in_flight(self) -> int:
        """Generate/edit calls being served now."""
        with self._lock:
            return self._generating

    @property
    def requests_log(self) -> list[LoggedRequest]:
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
                "files_uploaded": len(self._files),
                "batches_created": len(self._batches),
                "temporary_images": len(self._temp_images),
                "rate_limited": self._rate_limited,
            }

    # Faults and limits ---------------------------------------------------------------------

    def latency(self) -> float:
        """Seconds to delay this /v1 call (drawn anew for each call when a range is configured)."""
        with self._lock:
            latency = self._config.latency
        return random.uniform(*latency) if isinstance(latency, tuple) else latency

    def take_api_fault(self, generation: bool = False) -> ApiFault | None:
        """Consume the next queued fault for a /v1 call: connection reset, scripted status, bad JSON.

        :param generation: The call is a generate/edit call (``generation_status_script`` applies).
        """
        with self._lock:
            config = self._config
            if config.reset_connections:
                config.reset_connections -= 1
                return "reset_connection"
            for script in ("status_script", "generation_status_script") if generation else ("status_script",):
                if statuses := getattr(config, script):
                    status, *rest = statuses
                    setattr(config, script, rest)
                    retry_after = config.retry_after if status == 429 else None
                    return ApiError(status, f"Emulated {status} error ({script}).", retry_after=retry_after)
            if config.invalid_json:
                config.invalid_json -= 1
                return "invalid_json"
            return None

    def take_download_fault(self) -> DownloadFault | None:
        """Consume one queued truncated download, if any (those with a Content-Length first)."""
        with self._lock:
            config = self._config
            if config.truncated_images:
                config.truncated_images -= 1
                return "truncated"
            if config.truncated_images_no_length:
                config.truncated_images_no_length -= 1
                return "truncated_no_length"
            return None

    def check_rate_limit(self) -> None:
        """Count a generate/edit call against ``rate_limit_rps``; ApiError 429 past it."""
        with self._lock:
            limit = self._config.rate_limit_rps
            if limit is None:
                return
            wait = self._generate_limiter.acquire(time.monotonic(), limit, 1.0)
            retry_after = self._config.rate_limit_retry_after
            if wait is not None:
                self._rate_limited += 1
        if wait is not None:
            message = f"Rate limit exceeded: at most {limit} requests per second."
            raise ApiError(429, message, retry_after=wait if retry_after else None)

    # Generation ----------------------------------------------------------------------------

    def generate(self, body: GenerateBody) -> Generation:
        """Serve a generate or edit call and bill it (unless an ``empty_responses`` fault empties it)."""
        model = _resolve(body.model)
        with self._lock:
            sources = self._resolve_sources(body.named_sources)
            config = self._config
            if config.empty_responses:
                config.empty_responses -= 1
                return Generation(model.id, body.response_format or DEFAULT_RESPONSE_FORMAT, (), 0)
            truncated = body.response_format == "b64_json" and config.truncated_b64 > 0
            if truncated:
                config.truncated_b64 -= 1
            return self._generation(body, model, sources, 1.0, time.monotonic(), truncated)

    def _resolve_sources(self, named: Sequence[tuple[str, ImageSource]]) -> tuple[SourceImage, ...]:
        """The source images of an edit; ApiError 404 for an unknown file, 400 for one that is no image."""
        resolved = []
        for name, source in named:
            if source.file_id is None:
                resolved.append(SourceImage(_digest((source.url or "").encode()), source.pixel_size))
                continue
            data = self._file(source.file_id).data
            try:
                size = source_image_size(data)
            except ValueError as error:
                raise ApiError(400, f"{name}: {error}") from None
            resolved.append(SourceImage(_digest(data), size))
        return tuple(resolved)

    def _generation(
        self,
        body: GenerateBody,
        model: ModelInfo,
        sources: Sequence[SourceImage],
        price_factor: float,
        completed_at: float,
        truncated_b64: bool = False,
    ) -> Generation:
        """Build (and bill) a generation; its temporary images live ``image_ttl`` from ``completed_at``."""
        config = self._config
        response_format = body.response_format or DEFAULT_RESPONSE_FORMAT
        width, height = _output_size(body, sources)
        # An edit's picture depends on its sources too, so edits of different images differ.
        seed = body.prompt + "".join(source.key for source in sources)
        filtered = MODERATION_MARKER in body.prompt
        specs = [ImageSpec(seed, index, width, height, config.image_format) for index in range(body.n)]
        block_reason = BLOCK_REASON if filtered and config.moderation_style == "block_reason" else None
        images: tuple[OutputImage, ...] = ()
        if block_reason is None:
            served = response_format == "url" and not filtered
            images = tuple(
                OutputImage(spec, self._register_image(spec, completed_at) if served else None, filtered)
                for spec in specs
            )
        billed = 0 if filtered else body.n
        price = model.price_per_image(body.quality, body.resolution)
        cost = round((billed * price + len(sources) * INPUT_IMAGE_PRICE_USD_TICKS) * price_factor)
        self._images_billed += billed
        self._cost_usd_ticks += cost
        revised_prompt = {"absent": None, "empty": "", "text": revise_prompt(body.prompt)}[config.revised_prompt]
        return Generation(
            model=model.id,
            response_format=response_format,
            images=images,
            cost_usd_ticks=cost,
            revised_prompt=revised_prompt,
            block_reason=block_reason,
            truncated_b64=truncated_b64,
        )

    # Temporary images ----------------------------------------------------------------------

    def _register_image(self, spec: ImageSpec, created_at: float) -> str:
        filename = f"xai-tmp-imgen-{uuid.uuid4()}.{spec.image_format}"
        self._temp_images[filename] = TempImage(spec, expires_at=created_at + self._config.image_ttl)
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
            self._settle_all(now)
            for image in self._temp_images.values():
                image.expires_at = min(image.expires_at, now)

    # Files ---------------------------------------------------------------------------------

    def upload_file(self, upload: FileUpload) -> dict[str, Any]:
        """Keep an uploaded file; its file object."""
        created = int(time.time())
        expires_at = None if upload.expires_after is None else created + upload.expires_after
        file = UploadedFile(
            f"{FILE_ID_PREFIX}{uuid.uuid4()}", upload.filename, upload.purpose, upload.data, created, expires_at
        )
        with self._lock:
            self._files[file.file_id] = file
        return file.to_json()

    def _file(self, file_id: str) -> UploadedFile:
        file = self._files.get(file_id)
        if file is None or (file.expires_at is not None and file.expires_at <= time.time()):
            raise ApiError(404, f"File {file_id} not found.")
        return file

    # Batches -------------------------------------------------------------------------------

    def create_batch(self, name: str, input_file_id: str | None = None) -> dict[str, Any]:
        """A new batch: empty (requests are added later), or validating the input file ``input_file_id``."""
        lines: list[BatchInputRequest] = []
        refusal = None
        if input_file_id is not None:
            with self._lock:
                data = self._file(input_file_id).data
            try:
                lines = parse_batch_input(data)
            except ValueError as error:
                refusal = str(error)
        with self._lock:
            config = self._config
            limit = config.batch_create_per_second
            if limit is not None:
                wait = self._batch_create_limiter.acquire(time.monotonic(), limit, 1.0)
                if wait is not None:
                    raise ApiError(429, f"Too many batches created: at most {limit} per second.", retry_after=wait)
            staged = []
            for line in lines:
                try:
                    sources = self._resolve_sources(line.body.named_sources)
                except ApiError as error:
                    refusal = f"line {line.line}: {error.message}"
                    break
                staged.append(BatchRequest(line.custom_id, line.body, sources))
            created = time.time()
            batch = BatchRecord(
                batch_id=f"batch_{uuid.uuid4()}",
                name=name,
                create_time=created,
                expire_time=created + BATCH_LIFETIME_SECONDS,
                input_file_id=input_file_id,
            )
            if input_file_id is not None:
                batch.validation_due = time.monotonic() + config.batch_validation_seconds
                batch.refusal = refusal
                batch.staged = staged if refusal is None else []
            self._batches[batch.batch_id] = batch
            return batch.to_json(config.expire_time_format)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            return self._settled_batch(batch_id).to_json(self._config.expire_time_format)

    def list_batches(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        """Batches in creation order from ``offset``; also the next offset, None on the last page."""
        with self._lock:
            now = time.monotonic()
            batches = list(self._batches.values())[offset : offset + limit]
            for batch in batches:
                self._settle(batch, now)
            end = offset + len(batches)
            page = [batch.to_json(self._config.expire_time_format) for batch in batches]
            return page, end if end < len(self._batches) else None

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
        """Add ``(batch_request_id, body)`` pairs; ApiError 400 on a duplicate id or a closed/file batch."""
        with self._lock:
            batch = self._settled_batch(batch_id)
            if batch.cancel_time is not None:
                raise ApiError(400, f"Batch {batch_id} is cancelled; no requests can be added to it.")
            if batch.input_file_id is not None:
                raise ApiError(400, f"Batch {batch_id} was created from a file; no requests can be added to it.")
            counts = Counter(request_id for request_id, _ in entries)
            duplicates = sorted(
                {request_id for request_id, count in counts.items() if count > 1} | (counts.keys() & batch.request_ids)
            )
            if duplicates:
                raise ApiError(400, f"Duplicate batch_request_id in batch {batch_id}: {', '.join(duplicates)}")
            self._enqueue(batch, [BatchRequest(request_id, body) for request_id, body in entries], time.monotonic())

    def batch_results(self, batch_id: str, offset: int, limit: int) -> tuple[list[CompletedBatchRequest], int | None]:
        """Completed requests from ``offset`` (in completion order); also the next offset or None."""
        with self._lock:
            batch = self._settled_batch(batch_id)
            outcomes = batch.completed[offset : offset + limit]
            end = offset + len(outcomes)
            return outcomes, end if end < len(batch.completed) else None

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Cancel the requests still pending (or the validation still under way)."""
        with self._lock:
            batch = self._settled_batch(batch_id)
            self._cancel_pending(batch, time.time())
            return batch.to_json(self._config.expire_time_format)

    def refuse_batch(self, batch_id: str, message: str) -> dict[str, Any]:
        """Let xAI refuse a batch: what is pending is cancelled and ``cancel_by_xai_message`` set."""
        with self._lock:
            batch = self._settled_batch(batch_id)
            self._cancel_pending(batch, time.time())
            batch.cancel_by_xai_message = message
            return batch.to_json(self._config.expire_time_format)

    def expire_batch(self, batch_id: str, message: str | None = None) -> dict[str, Any]:
        """Let xAI give up on a batch: like a refusal, and ``expire_time`` becomes now."""
        with self._lock:
            batch = self._settled_batch(batch_id)
            now = time.time()
            self._cancel_pending(batch, now)
            batch.cancel_by_xai_message = message or BATCH_EXPIRED_MESSAGE
            batch.expire_time = now
            return batch.to_json(self._config.expire_time_format)

    def _enqueue(self, batch: BatchRecord, requests: Sequence[BatchRequest], queued_at: float) -> None:
        due = queued_at + self._config.batch_seconds
        for request in requests:
            batch.request_ids.add(request.batch_request_id)
            batch.pending.append(PendingRequest(request, due))

    def _cancel_pending(self, batch: BatchRecord, now: float) -> None:
        batch.validation_due, batch.staged, batch.refusal = None, [], None
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
        """End the validation of the input file, then complete (and bill) the requests due by ``now``."""
        if batch.validation_due is not None and batch.validation_due <= now:
            self._end_validation(batch, batch.validation_due, now)
        due = [pending for pending in batch.pending if pending.due <= now]
        if not due:
            return
        batch.pending = [pending for pending in batch.pending if pending.due > now]
        # Results are unordered: match them by id, not by position.
        for pending in sorted(
            due, key=lambda pending: (pending.due, _digest(pending.request.batch_request_id.encode()))
        ):
            outcome = self._complete(pending, batch.num_error)
            batch.completed.append(outcome)
            if outcome.generation is None:
                batch.num_error += 1
            else:
                batch.num_success += 1

    def _end_validation(self, batch: BatchRecord, ended: float, now: float) -> None:
        """xAI has read the input file: it cancels the batch, or queues the file's requests."""
        staged, refusal = batch.staged, batch.refusal
        batch.validation_due, batch.staged, batch.refusal = None, [], None
        if refusal is None:
            self._enqueue(batch, staged, ended)
            return
        batch.cancel_time = time.time() - (now - ended)
        batch.cancel_by_xai_message = f"Invalid input file: {refusal}"

    def _complete(self, pending: PendingRequest, error_number: int) -> CompletedBatchRequest:
        request = pending.request
        body = request.body
        if BATCH_FAILURE_MARKER in body.prompt:
            return CompletedBatchRequest(
                request.batch_request_id, None, BATCH_FAILURE_MESSAGE, GRPC_INTERNAL, error_number
            )
        try:
            model = _resolve(body.model)
        except ApiError as error:
            return CompletedBatchRequest(request.batch_request_id, None, error.message, GRPC_NOT_FOUND, error_number)
        generation = self._generation(body, model, request.sources, BATCH_PRICE_FACTOR, pending.due)
        return CompletedBatchRequest(request.batch_request_id, generation=generation)

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
