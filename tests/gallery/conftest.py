"""Fixture of the gallery tests: a real API server with the plugin, and a run of each gallery test DAG.

The server starts first and boots while ``airflow dags test`` runs ``gallery_dag.py`` against the xAI
emulator (sending revised prompts), writing to a ``file://`` folder, then ``gallery_open_dag.py``; the
tests then ask the server over HTTP. The server may read only that folder
(``[xai_image] gallery_allowed_roots``), manifests of at most :data:`MAX_MANIFEST_MIB`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from gallery_support import (
    GALLERY_TESTS,
    MAX_MANIFEST_MIB,
    OPEN_DAG_ID,
    ROLES,
    SECRET,
    SECRET_NAME,
    USERS,
    GalleryRun,
)
from support.api_server import ApiServer
from support.auth_manager import DENIED_DAG_ID
from support.browser import find_chromium

from airflow_provider_xai_image.testing import XaiEmulator


@pytest.fixture(scope="package")
def gallery(dag_runner: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GalleryRun]:
    """The API server (always stopped at the end) and one run of each gallery test DAG."""
    workdir = tmp_path_factory.mktemp("gallery")
    output = workdir / "output"
    output.mkdir()
    (output / SECRET_NAME).write_bytes(SECRET)
    config = {
        "AIRFLOW__XAI_IMAGE__GALLERY_ALLOWED_ROOTS": f"file:///nowhere/,{output.as_uri()}/",
        "AIRFLOW__XAI_IMAGE__GALLERY_MAX_MANIFEST_MIB": str(MAX_MANIFEST_MIB),
    }
    server = ApiServer.start(workdir, ROLES, config)
    try:
        with XaiEmulator(revised_prompt="text") as emulator:
            result = dag_runner.run(
                GALLERY_TESTS / "gallery_dag.py",
                dag_id=DENIED_DAG_ID,
                env={"AIRFLOW_CONN_XAI_DEFAULT": emulator.connection_uri(), "XAI_GALLERY_OUTPUT_URI": output.as_uri()},
            )
        open_result = dag_runner.run(GALLERY_TESTS / "gallery_open_dag.py", dag_id=OPEN_DAG_ID)
        server.wait_ready()
        yield GalleryRun(server, result, open_result, output, {user: server.token(user) for user in USERS})
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Chromium's executable (`make browser` installs it); the test is skipped without one."""
    found, why_not = find_chromium()
    if found is None:
        pytest.skip(why_not)
    return found
