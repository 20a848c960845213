"""H. DAG parsing stays cheap: a DAG file that imports every operator and the sensor of this provider, against
``import airflow.sdk`` alone. Measured twice, 5 fresh processes each, alternating: with ``python -X importtime``
(the import time Python reports) and as whole processes (wall time, interpreter start included).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.harness import PYTHON, BenchResult, Servers, Target, say

RUNS = 5
LIMIT = 1.10
DAG_FILE = """
import airflow.sdk

from airflow_provider_xai_image.operators.batch import (
    XaiAssembleManifestOperator,
    XaiBatchGenerateImagesOperator,
    XaiStoreBatchResultsOperator,
)
from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.sensors.batch import XaiBatchSensor
"""
#: ``import time: <self us> | <cumulative us> | <indent><module>`` lines of ``-X importtime``.
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)$")


def import_microseconds(stderr: str) -> tuple[int, int]:
    """From ``-X importtime`` output: the microseconds of every import (interpreter start-up's included),
    and of those after ``airflow.sdk`` (a DAG file's own)."""
    total = after_sdk = 0
    seen_sdk = False
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match is None or match[3]:  # nested imports are inside their top-level one's cumulative time
            continue
        total += int(match[2])
        after_sdk += int(match[2]) if seen_sdk else 0
        seen_sdk = seen_sdk or match[4] == "airflow.sdk"
    return total, after_sdk


def run(servers: Servers, quick: bool) -> BenchResult:
    result = BenchResult("H", "DAG parsing: a DAG file importing every operator and the sensor vs `import airflow.sdk`")
    folder = Path(tempfile.mkdtemp(prefix="xai-bench-h-"))
    dag_file = folder / "xai_dag.py"
    dag_file.write_text(DAG_FILE)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}
    commands = {"sdk": [PYTHON, "-c", "import airflow.sdk"], "dag": [PYTHON, str(dag_file)]}
    subprocess.run(commands["dag"], env=env, check=True, capture_output=True)  # bytecode compiled, caches warm
    walls: dict[str, list[float]] = {"sdk": [], "dag": []}
    imports: dict[str, list[tuple[int, int]]] = {"sdk": [], "dag": []}
    for attempt in range(RUNS):
        say(f"  H: run {attempt + 1}/{RUNS}")
        for name, command in commands.items():
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True)
            walls[name].append(time.perf_counter() - started)
            timed = subprocess.run([PYTHON, "-X", "importtime", *command[1:]], env=env, check=True, capture_output=True)
            imports[name].append(import_microseconds(timed.stderr.decode()))
    wall = {name: statistics.median(values) for name, values in walls.items()}
    sdk_us = statistics.median(total for total, _ in imports["sdk"])
    dag_us = statistics.median(total for total, _ in imports["dag"])
    added_us = statistics.median(after_sdk for _, after_sdk in imports["dag"])
    import_ratio = dag_us / sdk_us
    wall_ratio = wall["dag"] / wall["sdk"]
    result.figures = {
        "runs": RUNS,
        "wall_s": walls,
        "importtime_us": {name: [list(pair) for pair in pairs] for name, pairs in imports.items()},
        "import_ratio": import_ratio,
        "wall_ratio": wall_ratio,
        "provider_import_ms": added_us / 1000,
    }
    result.row(
        "-X importtime (median of 5)",
        f"DAG file {dag_us / 1000:.0f} ms vs import airflow.sdk {sdk_us / 1000:.0f} ms = {import_ratio:.3f}x "
        f"(the provider's imports: {added_us / 1000:.1f} ms)",
    )
    result.row(
        "whole processes (median of 5)",
        f"DAG file {wall['dag']:.2f} s vs import airflow.sdk {wall['sdk']:.2f} s = {wall_ratio:.3f}x",
    )
    result.targets = [Target("H -X importtime: DAG file / import airflow.sdk", import_ratio, "<=", LIMIT)]
    result.notes.append(
        "The hook (requests, httpx clients) and the triggers are imported when a task runs, not when a DAG file is "
        "parsed; the DAG file imports the operators and the sensor as a DAG would. Runs alternate, so both sides "
        "see the same machine load."
    )
    return result
