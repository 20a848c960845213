"""A manifest as the gallery reads it: parsed once, streamed (never whole in memory) into an index on
local disk, and kept for the next requests while the manifest stays the same.

:func:`build_index` streams ``manifest.json`` with ijson: each image is validated as an
:class:`~airflow_provider_xai_image.ledger.records.ImageRecord` and goes, with errors and superseded entries,
into a private temporary SQLite database; only the task instance, the output URI and the numbers of
the totals stay in memory. The page reads one page of cards from it, an image request looks one name
up, the manifest answer is streamed back from it (only what was validated). :class:`ManifestCache`
keeps the last few indexes, keyed by the manifest's URI, size and modification time (or ETag), so a
rewritten manifest is read again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Protocol, get_origin

import ijson
from pydantic import ValidationError
from pydantic_core import to_json

from airflow_provider_xai_image.ledger.local_db import rows_in_batches
from airflow_provider_xai_image.ledger.manifest import Manifest
from airflow_provider_xai_image.ledger.records import ImageRecord, TaskInstanceId
from airflow_provider_xai_image.storage.layout import name_in_folder

#: The totals the page shows, each a number.
TOTALS_SHOWN = (
    "images",
    "filtered",
    "failed_requests",
    "cost_usd_ticks",
    "possibly_billed_usd_ticks",
    "elapsed_seconds",
)
#: The index's page cache, in KiB (beyond it pages go to its temporary file).
INDEX_CACHE_KIB = 512
#: Rows read or written at a time.
_ROWS = 256
_SCHEMA = f"""
PRAGMA cache_size = -{INDEX_CACHE_KIB};
PRAGMA temp_store = FILE;
CREATE TABLE images (seq INTEGER PRIMARY KEY, card INTEGER, name TEXT, record TEXT NOT NULL);
CREATE INDEX images_by_card ON images (card) WHERE card IS NOT NULL;
CREATE INDEX images_by_name ON images (name) WHERE name IS NOT NULL;
CREATE TABLE entries (section TEXT NOT NULL, seq INTEGER NOT NULL, item TEXT NOT NULL, PRIMARY KEY (section, seq));
"""
#: The manifest's top-level keys the index keeps, and the order the manifest answer gives them in.
_ARRAYS = tuple(name for name, field in Manifest.model_fields.items() if get_origin(field.annotation) is list)
_VALUES = tuple(name for name in Manifest.model_fields if name not in _ARRAYS)


class BinaryReader(Protocol):
    """What a manifest is read from: a binary file, or anything with its ``read``."""

    def read(self, size: int = -1, /) -> bytes: ...


class ManifestError(ValueError):
    """The manifest cannot be read as a manifest (not JSON, or an image that is no image record)."""


class ManifestIndex:
    """One manifest, indexed on local disk. Thread-safe; its database goes when it is garbage-collected.

    :param uri: The manifest's URI (``<task instance folder>/manifest.json``).
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        #: The manifest's folder: its images are the ones listed directly in it.
        self.folder = uri.rpartition("/")[0]
        self.task_instance: TaskInstanceId | None = None
        #: ``parameters.output_uri``, when it is a string.
        self.output_uri: str | None = None
        #: The totals of :data:`TOTALS_SHOWN` that are numbers.
        self.totals: dict[str, int | float] = {}
        #: Images shown on the page: stored in :attr:`folder`, or filtered by moderation.
        self.cards = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self._values: dict[str, bytes] = {}
        self._pending_images: list[tuple[int, int | None, str | None, str]] = []
        self._pending_entries: list[tuple[str, int, str]] = []

    def image_uri(self, name: str) -> str | None:
        """The URI of the image called ``name`` directly in :attr:`folder`, or None when the manifest
        lists none.

        :param name: A file name.
        """
        with self._lock:
            row = self._db.execute("SELECT name FROM images WHERE name = ? LIMIT 1", (name,)).fetchone()
        return None if row is None else f"{self.folder}/{row[0]}"

    def page(self, first: int, count: int) -> list[tuple[str | None, ImageRecord]]:
        """Cards ``first .. first + count - 1`` (0-based): the image's name (None when it was filtered)
        and its record, in manifest order.

        :param first: The first card.
        :param count: How many cards at most.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT name, record FROM images WHERE card >= ? AND card < ? ORDER BY card", (first, first + count)
            ).fetchall()
        return [(name, ImageRecord.model_validate_json(record)) for name, record in rows]

    def first_errors(self, count: int) -> list[dict[str, Any]]:
        """The first ``count`` entries of the manifest's errors.

        :param count: How many at most.
        """
        return [json.loads(item) for item in self._items("errors", limit=count)]

    def json_chunks(self) -> Iterator[bytes]:
        """The manifest as JSON, as it was validated (keys in the writer's order), a few rows at a time."""
        for position, (name, field) in enumerate(Manifest.model_fields.items()):
            yield (b"{" if position == 0 else b",") + to_json(name) + b":"
            if name in _ARRAYS:
                yield b"["
                for count, item in enumerate(self._items(name)):
                    yield b"," + item if count else item
                yield b"]"
            else:
                yield self._values.get(name, b"{}" if field.is_required() else to_json(field.default))
        yield b"}"

    def _items(self, section: str, limit: int = -1) -> Iterator[bytes]:
        parameters: tuple[object, ...]
        if section == "images":
            sql, parameters = "SELECT record FROM images ORDER BY seq LIMIT ?", (limit,)
        else:
            sql, parameters = "SELECT item FROM entries WHERE section = ? ORDER BY seq LIMIT ?", (section, limit)
        for (item,) in rows_in_batches(self._db, self._lock, sql, parameters, _ROWS):
            yield item.encode()

    # -- building ------------------------------------------------------------------------------------

    def _add_image(self, seq: int, value: Any) -> None:
        image = ImageRecord.model_validate(value)
        name_here = name_in_folder(image.uri, self.folder)
        card = None
        if name_here is not None or image.moderation == "filtered":
            card, self.cards = self.cards, self.cards + 1
        self._pending_images.append((seq, card, name_here, image.model_dump_json()))

    def _add_value(self, key: str, value: Any) -> None:
        if key == "task_instance":
            self.task_instance = TaskInstanceId.model_validate(value) if value is not None else None
        elif key == "totals" and isinstance(value, dict):
            self.totals = {name: value[name] for name in TOTALS_SHOWN if type(value.get(name)) in (int, float)}
        elif key == "parameters" and isinstance(value, dict):
            output_uri = value.get("output_uri")
            self.output_uri = output_uri if isinstance(output_uri, str) else None
        self._values[key] = to_json(value)

    def _flush(self) -> None:
        self._db.executemany("INSERT INTO images (seq, card, name, record) VALUES (?, ?, ?, ?)", self._pending_images)
        self._db.executemany("INSERT INTO entries (section, seq, item) VALUES (?, ?, ?)", self._pending_entries)
        self._pending_images.clear()
        self._pending_entries.clear()

    def load(self, stream: BinaryReader) -> None:
        """Read the manifest from ``stream`` into the index (once, before any other use).

        :param stream: The manifest's bytes.
        :raises ManifestError: It is no manifest.
        """
        seqs = dict.fromkeys(_ARRAYS, 0)
        try:
            self._db.execute("BEGIN")
            for prefix, value in _top_level_values(stream):
                array = prefix.removesuffix(".item")
                if array == "images":
                    self._add_image(seqs[array], value)
                elif array in _ARRAYS:
                    self._pending_entries.append((array, seqs[array], to_json(value).decode()))
                    self.errors += array == "errors"
                else:
                    self._add_value(prefix, value)
                    continue
                seqs[array] += 1
                if len(self._pending_images) + len(self._pending_entries) >= _ROWS:
                    self._flush()
            self._flush()
            self._db.execute("COMMIT")
        except (ijson.JSONError, ValidationError, ValueError) as error:
            raise ManifestError(f"not a manifest: {type(error).__name__}: {str(error)[:300]}") from error


def _top_level_values(stream: BinaryReader) -> Iterator[tuple[str, Any]]:
    """The values the index keeps, one at a time, with their prefix: each item of :data:`_ARRAYS`
    (``images.item``, ...) and each of :data:`_VALUES`; anything else is skipped without being built."""
    wanted = {*(f"{name}.item" for name in _ARRAYS), *_VALUES}
    builder: ijson.ObjectBuilder | None = None
    depth = 0
    building = ""
    for prefix, event, value in ijson.parse(stream, use_float=True):
        if builder is None:
            if prefix not in wanted or event in ("map_key", "end_map", "end_array"):
                continue
            builder, building, depth = ijson.ObjectBuilder(), prefix, 0
        builder.event(event, value)
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
        if depth == 0:
            yield building, builder.value
            builder = None


class ManifestCache:
    """The last few :class:`ManifestIndex` built, by key (least recently used goes first). One index is
    built at a time: requests for a manifest being read wait for it instead of reading it again.

    :param max_entries: How many indexes to keep.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, ManifestIndex] = OrderedDict()
        self._lock = threading.Lock()
        self._building = threading.Lock()

    def _cached(self, key: Hashable) -> ManifestIndex | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def get(self, key: Hashable, build: Callable[[], ManifestIndex]) -> ManifestIndex:
        """The index of ``key``, built with ``build`` when not kept (an evicted index stays usable by the
        requests holding it; it goes with the last of them).

        :param key: What identifies the manifest's content (URI, size, modification time or ETag).
        :param build: Reads the manifest into a new index.
        """
        found = self._cached(key)
        if found is not None:
            return found
        with self._building:
            found = self._cached(key)
            if found is not None:
                return found
            index = build()
            with self._lock:
                self._entries[key] = index
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return index
