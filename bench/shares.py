"""G. A batch job of 20,000 requests stored by 1 task vs 4 mapped tasks (``share``/``shares``) plus the task that
assembles the job's manifest, run by Airflow's LocalExecutor: ``airflow dags test --use-executor`` against an
``airflow api-server`` (execution API), each task in its own process, images to moto S3.

Both runs store the same finished batch (results as URLs: each share downloads only its own images, where
base64 result pages would carry every image to every share). Times are the task instances' own, from
Airflow's metadata database: the 4-task figure runs from the first share's start to the manifest's end.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from bench.harness import (
    LOG_PATH,
    PYTHON,
    BenchResult,
    Servers,
    Target,
    free_port,
    process_cpu_seconds,
    prompts,
    say,
)

REQUESTS = 20_000
QUICK_REQUESTS = 2_000
SHARES = 4
#: Images in flight: in the one task, and over the shares together (each share CONCURRENCY // SHARES).
CONCURRENCY = 16
#: What 4 tasks on this machine should at least give over one (a floor: 2 cores are shared with the
#: emulator, moto, Airflow's own processes and the task supervisors).
SPEEDUP_LIMIT = 1.0
IMAGE: dict[str, Any] = {"resolution": "1k", "aspect_ratio": "2:1"}
AIRFLOW = str(Path(PYTHON).with_name("airflow"))
DAG_FILE = '''
"""Benchmark G: one batch job stored by one task, or by {shares} mapped tasks and an assembling task."""
from datetime import datetime

from airflow.sdk import DAG, XComArg

from airflow_provider_xai_image.operators.batch import XaiAssembleManifestOperator, XaiStoreBatchResultsOperator

BATCH_ID = "{{{{ dag_run.conf['batch_id'] }}}}"
OUTPUT = "{{{{ dag_run.conf['output_uri'] }}}}"

with DAG(dag_id="bench_g_one_task", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    XaiStoreBatchResultsOperator(task_id="store", batch_id=BATCH_ID, output_uri=OUTPUT, max_concurrency={concurrency})

with DAG(dag_id="bench_g_shares", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    store = XaiStoreBatchResultsOperator.partial(
        task_id="store", batch_id=BATCH_ID, output_uri=OUTPUT, max_concurrency={share_concurrency}, shares={shares}
    ).expand(share=list(range({shares})))
    XaiAssembleManifestOperator(
        task_id="manifest", batch_id=BATCH_ID, output_uri=OUTPUT, share_manifests=XComArg(store, key="manifest")
    )
'''


def airflow_env(home: Path, api_port: int) -> dict[str, str]:
    """A LocalExecutor Airflow on sqlite under ``home``, its tasks reporting to the API server on ``api_port``."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(2 * SHARES),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(16).hex(),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }


@contextmanager
def api_server(env: dict[str, str], port: int, log: Any) -> Any:
    """``airflow api-server --apps execution`` (what task processes talk to), until the block ends."""
    process = subprocess.Popen(
        [AIRFLOW, "api-server", "--apps", "execution", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"airflow api-server exited with {process.returncode}; see {LOG_PATH}")
            try:
                requests.get(f"http://127.0.0.1:{port}/execution/health", timeout=2)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise RuntimeError("airflow api-server did not start within 120 s") from None
                time.sleep(0.5)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def submit_job(count: int) -> str:
    """A finished batch job of ``count`` requests (1k 2:1 images as URLs), submitted as the operator does."""
    from airflow_provider_xai_image.api.batch_files import batch_files
    from airflow_provider_xai_image.hooks.xai import XaiHook

    hook = XaiHook()
    lines = [
        (str(index), hook.build_request(text, response_format="url", **IMAGE))
        for index, text in enumerate(prompts(count, "G"))
    ]
    [(content, _count)] = list(batch_files(lines))
    batch_id = hook.create_batch(f"bench-g-{count}", hook.upload_batch_file("g.jsonl", content)).batch_id
    while (batch := hook.get_batch(batch_id)).is_validating or batch.state.num_pending:
        time.sleep(0.5)
    return batch_id


def task_times(home: Path, dag_id: str) -> list[dict[str, Any]]:
    """The task instances of the DAG's (one) run: id, map index, state, start and end (seconds since epoch)."""
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, map_index, state, start_date, end_date FROM task_instance WHERE dag_id = ?", (dag_id,)
        ).fetchall()
    return [
        {
            "task_id": task_id,
            "map_index": map_index,
            "state": state,
            "start": _seconds(start),
            "end": _seconds(end),
        }
        for task_id, map_index, state, start, end in rows
    ]


def _seconds(value: str | None) -> float:
    if not value:
        return float("nan")
    return datetime.fromisoformat(value.replace(" ", "T")).timestamp()


def children_cpu_seconds() -> float:
    """CPU of this process's finished children and their descendants (``airflow dags test``, its executor's
    workers, their task processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_dag(
    pids: dict[str, int], env: dict[str, str], home: Path, dag_id: str, conf: dict[str, str], log: Any
) -> dict[str, Any]:
    """``airflow dags test --use-executor`` of one DAG; its tasks' times, the command's wall time, and the CPU
    of Airflow's processes (the command and its descendants) and of the processes in ``pids`` meanwhile."""
    servers_cpu = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    airflow_cpu = children_cpu_seconds()
    started = time.perf_counter()
    completed = subprocess.run(
        [AIRFLOW, "dags", "test", dag_id, "-c", json.dumps(conf), "--use-executor"],
        env=env,
        stdout=log,
        stderr=log,
        timeout=3600,
        check=False,
    )
    wall = time.perf_counter() - started
    cpu = {"airflow": children_cpu_seconds() - airflow_cpu}
    cpu.update({name: process_cpu_seconds(pid) - servers_cpu[name] for name, pid in pids.items()})
    tasks = task_times(home, dag_id)
    failed = [task for task in tasks if task["state"] != "success"]
    if completed.returncode != 0 or failed:
        raise RuntimeError(f"{dag_id}: exit {completed.returncode}, tasks not successful: {failed}; see {LOG_PATH}")
    return {
        "command_wall_s": wall,
        "cpu_s": cpu,
        "cores_busy": sum(cpu.values()) / wall,
        "tasks": tasks,
        "wall_s": max(task["end"] for task in tasks) - min(task["start"] for task in tasks),
    }


def stored(servers: Servers, bucket: str) -> dict[str, int]:
    """Images and manifests in the bucket."""
    paginator = servers.s3().get_paginator("list_objects_v2")
    keys = [item["Key"] for page in paginator.paginate(Bucket=bucket) for item in page.get("Contents", [])]
    return {
        "images": sum(key.endswith(".jpg") for key in keys),
        "manifests": sum(key.endswith("/manifest.json") for key in keys),
    }


def job_manifest_totals(servers: Servers, bucket: str, task_id: str) -> dict[str, Any]:
    paginator = servers.s3().get_paginator("list_objects_v2")
    [key] = [
        item["Key"]
        for page in paginator.paginate(Bucket=bucket)
        for item in page.get("Contents", [])
        if item["Key"].endswith(f"/{task_id}/manifest.json")
    ]
    manifest = json.loads(servers.s3().get_object(Bucket=bucket, Key=key)["Body"].read())
    return dict(manifest["totals"])


def run(servers: Servers, quick: bool) -> BenchResult:
    count = QUICK_REQUESTS if quick else REQUESTS
    result = BenchResult("G", f"Batch of {count:,} requests stored by 1 task vs {SHARES} mapped tasks (LocalExecutor)")
    servers.emulator.reset(latency=0.0, batch_seconds=2.0, batch_create_per_second=None)
    home = Path(tempfile.mkdtemp(prefix="xai-bench-g-airflow-"))
    (home / "dags").mkdir()
    (home / "dags" / "bench_g.py").write_text(
        DAG_FILE.format(shares=SHARES, concurrency=CONCURRENCY, share_concurrency=CONCURRENCY // SHARES)
    )
    port = free_port()
    env = airflow_env(home, port)
    runs: dict[str, dict[str, Any]] = {}
    with open(LOG_PATH, "ab") as log:
        say("  G: airflow db migrate")
        subprocess.run([AIRFLOW, "db", "migrate"], env=env, stdout=log, stderr=log, check=True)
        say(f"  G: submitting a batch of {count:,} requests")
        batch_id = submit_job(count)
        with api_server(env, port, log) as api:
            for dag_id, store_task in (("bench_g_one_task", "store"), ("bench_g_shares", "manifest")):
                bucket = servers.new_bucket("bench-g")
                say(f"  G: airflow dags test {dag_id} --use-executor")
                runs[dag_id] = run_dag(
                    {**servers.pids(), "api-server": api.pid},
                    env,
                    home,
                    dag_id,
                    {"batch_id": batch_id, "output_uri": servers.output_uri(bucket)},
                    log,
                )
                runs[dag_id]["stored"] = stored(servers, bucket)
                runs[dag_id]["totals"] = job_manifest_totals(servers, bucket, store_task)
                if runs[dag_id]["stored"]["images"] != count or runs[dag_id]["totals"]["images"] != count:
                    raise RuntimeError(f"{dag_id}: expected {count} images once, got {runs[dag_id]}")
    one, shares = runs["bench_g_one_task"], runs["bench_g_shares"]
    share_tasks = [task for task in shares["tasks"] if task["task_id"] == "store"]
    [manifest_task] = [task for task in shares["tasks"] if task["task_id"] == "manifest"]
    speedup = one["wall_s"] / shares["wall_s"]
    result.figures = {
        "requests": count,
        "shares": SHARES,
        "max_concurrency": {"one_task": CONCURRENCY, "each_share": CONCURRENCY // SHARES},
        "image": IMAGE,
        "results_format": "url",
        "speedup": speedup,
        "runs": runs,
        "cores_usable": len(os.sched_getaffinity(0)),
    }
    result.row(
        "1 task",
        f"{one['wall_s']:.1f} s = {count / one['wall_s']:.0f} images/s "
        f"(`dags test` command {one['command_wall_s']:.0f} s)",
    )
    result.row(
        f"{SHARES} mapped tasks + manifest",
        f"{shares['wall_s']:.1f} s = {count / shares['wall_s']:.0f} images/s; shares "
        + ", ".join(
            f"{task['end'] - task['start']:.1f} s" for task in sorted(share_tasks, key=lambda t: t["map_index"])
        )
        + f"; manifest {manifest_task['end'] - manifest_task['start']:.1f} s "
        f"(`dags test` command {shares['command_wall_s']:.0f} s)",
    )
    result.row(f"speedup 1 task / {SHARES} tasks", f"{speedup:.2f}x")
    for name, run_ in (("1 task", one), (f"{SHARES} tasks", shares)):
        cpu = run_["cpu_s"]
        result.row(
            f"CPU, {name} (whole `dags test` command)",
            f"Airflow's `dags test`, executor and task processes {cpu['airflow']:.0f} s, API server "
            f"{cpu['api-server']:.0f} s, emulator {cpu['emulator']:.0f} s, moto {cpu['moto']:.0f} s: "
            f"{run_['cores_busy']:.2f} cores busy on average; {1000 * sum(cpu.values()) / count:.1f} ms per image",
        )
    result.row(
        "stored",
        f"{one['stored']['images']:,} images and {one['stored']['manifests']} manifest vs "
        f"{shares['stored']['images']:,} images and {shares['stored']['manifests']} manifests ({SHARES} shares + job)",
    )
    result.targets = [Target(f"G speedup of {SHARES} mapped store tasks over 1", speedup, ">=", SPEEDUP_LIMIT)]
    result.notes.append(
        f"Both runs keep {CONCURRENCY} images in flight in total ({CONCURRENCY // SHARES} per share). On "
        f"{len(os.sched_getaffinity(0))} cores the task processes share the CPU with the emulator (result pages, a "
        "JPEG rendered per download), moto (every PUT) and Airflow's supervisors: one task already keeps about 1.6 "
        "cores busy (its GIL-bound process about one), so shares can only add the rest; each share also starts its "
        "own task process and reads every results page (xAI has no per-id listing). With a worker per share on a "
        "deployment, the shares run side by side."
    )
    return result
