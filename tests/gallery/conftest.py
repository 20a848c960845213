"""Fixture of the gallery tests: a real API server with the plugin, and a run of the gallery test DAG.

The server starts first and boots while ``airflow dags test`` runs ``gallery_dag.py`` against the xAI
emulator (sending revised prompts), writing to a ``file://`` folder; the tests then ask the server
over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from gallery_auth import DENIED_DAG_ID
from gallery_support import GALLERY_TESTS, SECRET, SECRET_NAME, USERS, ApiServer, GalleryRun

from airflow_provider_xai_image.testing import XaiEmulator


@pytest.fixture(scope="module")
def gallery(dag_runner: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GalleryRun]:
    """The API server (always stopped at the end) and one run of ``gallery_dag.py``."""
    workdir = tmp_path_factory.mktemp("gallery")
    output = workdir / "output"
    output.mkdir()
    (output / SECRET_NAME).write_bytes(SECRET)
    server = ApiServer.start(workdir)
    try:
        with XaiEmulator(revised_prompt="text") as emulator:
            result = dag_runner.run(
                GALLERY_TESTS / "gallery_dag.py",
                dag_id=DENIED_DAG_ID,
                env={"AIRFLOW_CONN_XAI_DEFAULT": emulator.connection_uri(), "XAI_GALLERY_OUTPUT_URI": output.as_uri()},
            )
        server.wait_ready()
        yield GalleryRun(server, result, output, {user: server.token(user) for user in USERS})
    finally:
        server.stop()
