"""Each example DAG with ``airflow dags test`` against a fresh emulator, storing into a local folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from compat_support import EXAMPLE_DAGS, IN_COMPAT_VENV, dags_test

from airflow_provider_xai_image.testing import XaiEmulator

pytestmark = [
    pytest.mark.dag,
    pytest.mark.skipif(
        not IN_COMPAT_VENV,
        reason="on the dev venv's Airflow tests/operators/test_example_dags.py runs every example DAG (into moto "
        "S3); `make test-compat` runs these on the oldest supported Airflow",
    ),
]

#: Modules of example_dags/ that are no DAG (its .airflowignore lists them).
HELPERS = {line.strip().replace("\\", "") for line in (EXAMPLE_DAGS / ".airflowignore").read_text().splitlines()}
#: Each example DAG file; its dag id is its name.
DAG_FILES = sorted(path for path in EXAMPLE_DAGS.glob("*.py") if path.name not in HELPERS)
assert DAG_FILES, f"no example DAG in {EXAMPLE_DAGS}"
#: Example DAGs that wait for a person, so no unattended run: why, and where they are tested instead.
WAITS_FOR_A_PERSON = {
    "xai_review_images": "its review waits for a person (and Airflow 3.1's `airflow dags test` cannot run the "
    "Human-in-the-loop trigger); tests/review runs it with Airflow's services",
}


def example_dag_param(path: Path) -> Any:
    """One example DAG file as a test parameter, skipped when it waits for a person."""
    reason = WAITS_FOR_A_PERSON.get(path.stem)
    return pytest.param(path, id=path.stem, marks=[pytest.mark.skip(reason=reason)] if reason else [])


@pytest.mark.parametrize("dag_file", [example_dag_param(path) for path in DAG_FILES])
def test_example_dag_runs(dag_file: Path, airflow_home: Path, tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    for path in (dag_file, *(EXAMPLE_DAGS / name for name in HELPERS), EXAMPLE_DAGS / ".airflowignore"):
        shutil.copy2(path, dags / path.name)
    output = tmp_path / "images"

    with XaiEmulator() as emulator:
        run = dags_test(
            airflow_home,
            dags,
            dag_file.stem,
            {
                "AIRFLOW_CONN_XAI_DEFAULT": emulator.connection_uri(),
                "XAI_EXAMPLE_OUTPUT_URI": output.as_uri() + "/",
                "XAI_EXAMPLE_POLL_INTERVAL": "1",
            },
        )
        billed = emulator.images_billed

    assert run.returncode == 0, run.describe()
    assert run.task_states, run.describe()
    assert set(run.task_states.values()) == {"success"}, run.describe()
    images = [path for path in output.rglob("*") if path.suffix in (".jpg", ".png")]
    assert billed > 0
    assert len(images) == billed, run.describe()  # every image paid for is stored, once
    assert emulator.api_key not in run.output
