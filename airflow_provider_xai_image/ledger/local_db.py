"""What the private SQLite databases on local disk (the record ledger, the gallery's manifest index) share."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from typing import Any


def rows_in_batches(
    db: sqlite3.Connection, lock: threading.Lock, sql: str, parameters: tuple[Any, ...] = (), size: int = 256
) -> Iterator[Any]:
    """The rows of a query, fetched ``size`` at a time, each fetch under ``lock`` (the connection is shared
    by threads); nothing is held but one batch.

    :param db: The connection.
    :param lock: The lock every use of ``db`` takes.
    :param sql: The query.
    :param parameters: Its parameters.
    :param size: Rows per fetch.
    """
    with lock:
        cursor = db.execute(sql, parameters)
    while True:
        with lock:
            rows = cursor.fetchmany(size)
        if not rows:
            return
        yield from rows
