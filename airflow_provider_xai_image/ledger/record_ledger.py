"""The request records of a task instance on local disk (a private SQLite database, sorted by prompt index).

A task's memory does not grow with its image count. Records go to storage a few at a time and into a
:class:`RecordLedger`, which keeps a few bytes per prompt in memory
(:class:`~airflow_provider_xai_image.ledger.progress.Progress`: images done, next image index, flags) for
resuming and checking; ``manifest.json`` is streamed from the ledger at the end, images in prompt order
(:mod:`~airflow_provider_xai_image.ledger.manifest`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator

from airflow_provider_xai_image.ledger.local_db import rows_in_batches
from airflow_provider_xai_image.ledger.progress import Progress
from airflow_provider_xai_image.ledger.records import RequestRecord, merge_records

#: temporary file.
LEDGER_CACHE_KIB = 256
_LEDGER_SCHEMA = f"""
PRAGMA cache_size = -{LEDGER_CACHE_KIB};
PRAGMA temp_store = FILE;
CREATE TABLE records (prompt_index INTEGER NOT NULL, fingerprint TEXT, seq INTEGER NOT NULL, record TEXT NOT NULL);
CREATE INDEX records_by_prompt ON records (prompt_index, fingerprint, seq);
CREATE TABLE uris (uri TEXT PRIMARY KEY) WITHOUT ROWID;
"""
#: Rows read from the ledger at a time while it is streamed.
_ROWS_PER_READ = 128
#: Where the order of records added without one starts (after any a caller orders itself).
_ADDED_SEQ = 1 << 48


class RecordLedger:
    """
    The request records of a task instance on local disk, by prompt index: a private temporary SQLite
    database (deleted when closed; its page cache bounded by :data:`LEDGER_CACHE_KIB`). Records are
    merged per prompt and request fingerprint (in the order given, else the order added), streamed in
    prompt order into the manifest and looked up there, never held in memory. Records of the current
    requests also update :attr:`progress`; the others are superseded. Thread-safe.

    :param fingerprint_of: The fingerprint of the current request of a prompt index (None for none).
    """

    def __init__(self, fingerprint_of: Callable[[int], str | None]) -> None:
        self.fingerprint_of = fingerprint_of
        self.progress = Progress()
        self._lock = threading.Lock()
        self._next_seq = _ADDED_SEQ
        self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        self._db.executescript(_LEDGER_SCHEMA)

    def is_current(self, record: RequestRecord) -> bool:
        """The record is of its prompt's current request (not superseded).

        :param record: A record, or several of one prompt and fingerprint merged.
        """
        return (
            record.fingerprint is not None
            and record.prompt_index >= 0
            and self.fingerprint_of(record.prompt_index) == record.fingerprint
        )

    def add(self, record: RequestRecord, seq: int | None = None) -> None:
        """Keep ``record`` (on disk) and count it in :attr:`progress` when it is current.

        :param record: A record, saved to storage or about to be.
        :param seq: Its place among the records of its prompt when merged (below ``2**48``; those read
            concurrently from storage come in any order); None: after every record added so far.
        """
        current = self.is_current(record)
        data = record.model_dump_json()
        uris = [(image.uri,) for image in record.images if image.uri]
        with self._lock:
            if seq is None:
                seq, self._next_seq = self._next_seq, self._next_seq + 1
            self._db.execute(
                "INSERT INTO records (prompt_index, fingerprint, seq, record) VALUES (?, ?, ?, ?)",
                (record.prompt_index, record.fingerprint, seq, data),
            )
            self._db.executemany("INSERT OR IGNORE INTO uris (uri) VALUES (?)", uris)
            if current:
                recorded = self.progress.recorded(record.prompt_index)
                merged = self._merged(record.prompt_index, record.fingerprint) if recorded else None
                self.progress.update(merged or record)
                self.progress.spent_usd_ticks += record.spent_usd_ticks

    def _merged(self, prompt_index: int, fingerprint: str | None) -> RequestRecord | None:
        merged = None
        rows = self._db.execute(
            "SELECT record FROM records WHERE prompt_index = ? AND fingerprint IS ? ORDER BY seq",
            (prompt_index, fingerprint),
        )
        for (data,) in rows:
            merged = merge_records(merged, RequestRecord.model_validate_json(data))
        return merged

    def current_record(self, prompt_index: int) -> RequestRecord | None:
        """The current records of a prompt, merged (None when it has none).

        :param prompt_index: The prompt.
        """
        fingerprint = self.fingerprint_of(prompt_index)
        if fingerprint is None:
            return None
        with self._lock:
            return self._merged(prompt_index, fingerprint)

    def has_uri(self, uri: str) -> bool:
        """A record names the image at ``uri``.

        :param uri: An image's URI.
        """
        with self._lock:
            return self._db.execute("SELECT 1 FROM uris WHERE uri = ?", (uri,)).fetchone() is not None

    def groups(self) -> Iterator[RequestRecord]:
        """Every prompt's records merged per request fingerprint, by prompt index (then fingerprint),
        read from disk a few rows at a time. For when no more records are being added."""
        query = "SELECT record FROM records ORDER BY prompt_index, fingerprint, seq"
        group: RequestRecord | None = None
        for (data,) in rows_in_batches(self._db, self._lock, query, size=_ROWS_PER_READ):
            record = RequestRecord.model_validate_json(data)
            if (
                group is not None
                and group.fingerprint == record.fingerprint
                and group.prompt_index == record.prompt_index
            ):
                group = merge_records(group, record)
                continue
            if group is not None:
                yield group
            group = record
        if group is not None:
            yield group

    def image_uris(self) -> list[str]:
        """The URIs of the current requests' stored images, in prompt and image order."""
        return [
            image.uri for group in self.groups() if self.is_current(group) for image in group.done_images if image.uri
        ]

    def close(self) -> None:
        """Close the database (its file goes with it)."""
        with self._lock:
            self._db.close()
