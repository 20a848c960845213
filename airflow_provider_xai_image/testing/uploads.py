"""Reading ``POST /v1/files``: a multipart/form-data body whose parts are taken in the order sent.

The optional form fields (``purpose``, ``expires_after``) must come before the part ``file``; a
field after it, an unknown or repeated field, no ``file`` part or an ``expires_after`` out of range
is a 400.
"""

from __future__ import annotations

from dataclasses import dataclass

from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder

from airflow_provider_xai_image.testing.contract import (
    FILE_EXPIRES_AFTER_MAX_SECONDS,
    FILE_EXPIRES_AFTER_MIN_SECONDS,
    FILE_FIELDS,
    FILE_PART,
)
from airflow_provider_xai_image.testing.errors import ApiError

#: ``purpose`` when the upload names none.
DEFAULT_PURPOSE = "batch"


@dataclass(frozen=True)
class FileUpload:
    """What an upload sent: the file, its purpose and how many seconds it should live (None: no expiry)."""

    filename: str
    data: bytes
    purpose: str
    expires_after: int | None


def _parts(content_type: str, body: bytes) -> list[tuple[str, str | None, bytes]]:
    """``(name, filename or None, data)`` of each part, in order; ApiError 400 when not multipart."""
    mimetype, options = parse_options_header(content_type)
    if mimetype != "multipart/form-data" or not options.get("boundary"):
        raise ApiError(400, "Upload the file as multipart/form-data (with a boundary).")
    decoder = MultipartDecoder(options["boundary"].encode("latin-1"))
    decoder.receive_data(body)
    decoder.receive_data(None)
    parts: list[tuple[str, str | None, bytearray]] = []
    while True:
        try:
            event = decoder.next_event()
        except ValueError:  # the decoder's word for a body that does not parse, or ends early
            raise ApiError(400, "The multipart body is malformed or ends before its closing boundary.") from None
        if isinstance(event, File):
            parts.append((event.name, event.filename, bytearray()))
        elif isinstance(event, Field):
            parts.append((event.name, None, bytearray()))
        elif isinstance(event, Data) and parts:
            parts[-1][2].extend(event.data)
        elif isinstance(event, Epilogue):
            return [(name, filename, bytes(data)) for name, filename, data in parts]


def _expires_after(raw: str | None) -> int | None:
    if raw is None:
        return None
    low, high = FILE_EXPIRES_AFTER_MIN_SECONDS, FILE_EXPIRES_AFTER_MAX_SECONDS
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(400, f"expires_after must be seconds from {low} to {high}, got {raw!r}.")
    return int(raw)


def parse_file_upload(content_type: str, body: bytes) -> FileUpload:
    """The upload in ``body``; ApiError 400 naming what is wrong with it."""
    fields: dict[str, str] = {}
    upload: tuple[str, bytes] | None = None
    for name, filename, data in _parts(content_type, body):
        if upload is not None:
            raise ApiError(400, f"The form field {name!r} comes after the {FILE_PART!r} part; send it first.")
        if name == FILE_PART:
            if not filename:
                raise ApiError(400, f"The {FILE_PART!r} part must be a file (with a filename).")
            upload = (filename, data)
        elif name not in FILE_FIELDS:
            raise ApiError(400, f"Unknown form field {name!r}; expected {', '.join(FILE_FIELDS)} and {FILE_PART!r}.")
        elif name in fields:
            raise ApiError(400, f"The form field {name!r} is sent twice.")
        else:
            fields[name] = data.decode("utf-8", errors="replace")
    if upload is None:
        raise ApiError(400, f"No {FILE_PART!r} part in the upload.")
    purpose = fields.get("purpose", DEFAULT_PURPOSE)
    if not purpose:
        raise ApiError(400, "purpose must not be empty.")
    return FileUpload(upload[0], upload[1], purpose, _expires_after(fields.get("expires_after")))
