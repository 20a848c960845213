"""
``make demo``: run the ``xai_generate_images`` example DAG end to end with ``airflow dags test``.

It uses a throwaway AIRFLOW_HOME, starts the xAI emulator on loopback (set ``XAI_API_KEY`` and
``XAI_DEMO_REAL_API=1`` to call the real xAI API instead, at real prices), stores the images under
``./demo-output/`` (or ``XAI_EXAMPLE_OUTPUT_URI``) and prints the path of the ``index.html`` gallery.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from airflow_provider_xai_image.testing import XaiEmulator

DAG_ID = "xai_generate_images"
EXAMPLE_DAGS = Path(__file__).resolve().parent


def xai_connection(stack: ExitStack) -> str:
    """The ``xai_default`` connection: the real API when asked for, else a fresh emulator."""
    api_key = os.environ.get("XAI_API_KEY")
    if api_key and os.environ.get("XAI_DEMO_REAL_API") == "1":
        print("Using the real xAI API (XAI_DEMO_REAL_API=1): this costs money.")
        return json.dumps({"conn_type": "xai", "password": api_key})
    emulator = stack.enter_context(XaiEmulator())
    print(f"Started the xAI emulator at {emulator.base_url}")
    return emulator.connection_uri()


def main() -> int:
    output_uri = os.environ.get("XAI_EXAMPLE_OUTPUT_URI") or (Path.cwd() / "demo-output").as_uri() + "/"
    airflow = str(Path(sys.executable).with_name("airflow"))
    with ExitStack() as stack:
        airflow_home = stack.enter_context(tempfile.TemporaryDirectory(prefix="xai-demo-airflow-"))
        env = {
            **os.environ,
            "AIRFLOW_HOME": airflow_home,
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_XAI_DEFAULT": xai_connection(stack),
            "XAI_EXAMPLE_OUTPUT_URI": output_uri,
        }
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        result = subprocess.run([airflow, "dags", "test", DAG_ID], env=env, check=False)
        if result.returncode != 0:
            print(f"`airflow dags test {DAG_ID}` failed (exit {result.returncode}); see its log above.")
            return result.returncode
    gallery = output_uri.rstrip("/") + "/index.html"
    print(f"\nDone. Images are under {output_uri}\nGallery: {gallery}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
