"""Batch input files: one JSON line per request, split so that no file passes the size xAI takes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from airflow_provider_xai_image.api.batches import BATCH_FILE_MAX_BYTES
from airflow_provider_xai_image.api.images import ImageRequest


def batch_files(
    requests: Iterable[tuple[str, ImageRequest]], max_bytes: int = BATCH_FILE_MAX_BYTES
) -> Iterator[tuple[bytes, int]]:
    """The JSON Lines input files for ``(custom_id, request)`` pairs, each under ``max_bytes``, with the
    number of requests in each (a job over the limit becomes several batches)."""
    lines: list[bytes] = []
    size = 0
    for custom_id, request in requests:
        line = json.dumps(request.batch_line(custom_id), separators=(",", ":")).encode() + b"\n"
        if len(line) > max_bytes:
            raise ValueError(f"batch request {custom_id!r} is {len(line)} bytes, over the {max_bytes}-byte file limit")
        if lines and size + len(line) > max_bytes:
            yield b"".join(lines), len(lines)
            lines, size = [], 0
        lines.append(line)
        size += len(line)
    if lines:
        yield b"".join(lines), len(lines)
