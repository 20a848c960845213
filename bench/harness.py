"""Shared set-up of the benchmarks: servers in their own processes, env, the task context stand-in,
the hand-written baselines, measurement helpers, child processes and the result format.

Nothing here imports Airflow at module level: ``prepare_process_env`` must set ``AIRFLOW_HOME`` (and the
connections) before the first Airflow import, in the parent and in every child process.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

PYTHON = sys.executable
BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LOG_PATH = RESULTS_DIR / "bench.log"
MODEL = "grok-imagine-image-quality"
REGION = "us-east-1"
AWS_CONN_ID = "aws_bench"
#: The ``xai`` connection with default settings (``xai_default`` paces far above what any benchmark sends:
#: the emulator has no rate limit but in F, which alone measures pacing by rate, through this one).
DEFAULT_SETTINGS_CONN_ID = "xai_default_settings"
UNPACED_REQUESTS_PER_SECOND = 10_000
#: Env vars through which child processes find the servers the parent started.
ENV_EMULATOR_URL = "BENCH_EMULATOR_URL"
ENV_EMULATOR_PID = "BENCH_EMULATOR_PID"
ENV_MOTO_URL = "BENCH_MOTO_URL"
ENV_MOTO_PID = "BENCH_MOTO_PID"
SERVER_START_TIMEOUT = 60.0

# -- console and logs ----------------------------------------------------------------------------
# Airflow's task logging stays on (INFO, as in a real task: its cost is part of the operator's),
# but while a benchmark runs fds 1 and 2 go to bench/results/bench.log; progress goes to the console.

_console = None


def console() -> Any:
    global _console
    if _console is None:
        _console = os.fdopen(os.dup(1), "w", buffering=1)
    return _console


def say(message: str) -> None:
    print(message, file=console(), flush=True)


@contextlib.contextmanager
def output_to_log(path: Path = LOG_PATH) -> Iterator[None]:
    """Send this process's stdout and stderr (fd level, so also C code and children) to ``path``."""
    console()
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


# -- measurement ---------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """CPU time (user + system) of this process, all its threads, not its children."""
    return time.process_time()


def maxrss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of another process, from ``/proc/<pid>/stat``; NaN when unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Span:
    """Wall and CPU time of one measured block (this process), plus the servers' CPU in it."""

    wall: float = 0.0
    cpu: float = 0.0
    server_cpu: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def measure(servers: Servers | None = None) -> Iterator[Span]:
    span = Span()
    pids = servers.pids() if servers else {}
    before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    try:
        yield span
    finally:
        span.wall = time.perf_counter() - wall0
        span.cpu = cpu_seconds() - cpu0
        span.server_cpu = {name: process_cpu_seconds(pid) - before[name] for name, pid in pids.items()}


def median(values: list[float]) -> float:
    return statistics.median(values)


def ideal_seconds(requests_count: int, concurrency: int, latency: float) -> float:
    return math.ceil(requests_count / concurrency) * latency


# -- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_http(url: str, process: subprocess.Popen[Any] | None, what: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}; see {LOG_PATH}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url} within {SERVER_START_TIMEOUT:g} s")


class Emulator:
    """The xAI emulator CLI in its own process (its CPU and memory are not the measured process's)."""

    def __init__(self, url: str, pid: int, env: dict[str, str], process: subprocess.Popen[str] | None = None):
        self.url = url  # server root: http://127.0.0.1:PORT
        self.pid = pid
        self.env = env  # XAI_BASE_URL, XAI_API_KEY, AIRFLOW_CONN_XAI_DEFAULT
        self.process = process

    @classmethod
    def start(cls, log: Any, *, batch_seconds: float = 2.0) -> Emulator:
        command = [PYTHON, "-m", "airflow_provider_xai_image.testing", "--port", "0", "--latency", "0"]
        process = subprocess.Popen(
            [*command, "--batch-seconds", str(batch_seconds)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert process.stdout is not None
        env: dict[str, str] = {}
        while len(env) < 3:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"the xAI emulator exited before printing its settings; see {LOG_PATH}")
            name, _, value = line.strip().partition("=")
            env[name] = value
        url = env["XAI_BASE_URL"].rsplit("/v1", 1)[0]
        emulator = cls(url, process.pid, env, process)
        _wait_for_http(f"{url}/_emulator/stats", process, "the xAI emulator")
        return emulator

    @property
    def base_url(self) -> str:
        return self.env["XAI_BASE_URL"]

    @property
    def api_key(self) -> str:
        return self.env["XAI_API_KEY"]

    def configure(self, **fields: Any) -> dict[str, Any]:
        response = requests.post(f"{self.url}/_emulator/config", json=fields, timeout=10)
        response.raise_for_status()
        return response.json()

    def reset(self, **fields: Any) -> None:
        """Forget all state (images, batches, limits); then apply ``fields``."""
        requests.post(f"{self.url}/_emulator/reset", timeout=10).raise_for_status()
        if fields:
            self.configure(**fields)

    def stats(self) -> dict[str, int]:
        response = requests.get(f"{self.url}/_emulator/stats", timeout=10)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            if self.process.stdout:
                self.process.stdout.close()


class Moto:
    """moto's S3 in server mode (``python -m moto.server``) in its own process."""

    def __init__(self, url: str, pid: int, process: subprocess.Popen[bytes] | None = None):
        self.url = url
        self.pid = pid
        self.process = process

    @classmethod
    def start(cls, log: Any) -> Moto:
        port = free_port()
        process = subprocess.Popen(
            [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
        )
        url = f"http://127.0.0.1:{port}"
        _wait_for_http(f"{url}/moto-api/", process, "moto server")
        return cls(url, process.pid, process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


class Servers:
    """Both servers plus the environment that points Airflow, boto3 and the baselines at them."""

    def __init__(self, emulator: Emulator, moto: Moto):
        self.emulator = emulator
        self.moto = moto

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[Servers]:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        with open(LOG_PATH, "ab") as log:
            moto = Moto.start(log)
            try:
                emulator = Emulator.start(log)
                try:
                    servers = cls(emulator, moto)
                    os.environ.update(servers.env())
                    yield servers
                finally:
                    emulator.stop()
            finally:
                moto.stop()

    @classmethod
    def from_env(cls) -> Servers:
        """In a child process: the servers the parent started (found through the inherited env)."""
        env = {name: os.environ[name] for name in ("XAI_BASE_URL", "XAI_API_KEY", "AIRFLOW_CONN_XAI_DEFAULT")}
        emulator = Emulator(os.environ[ENV_EMULATOR_URL], int(os.environ[ENV_EMULATOR_PID]), env)
        return cls(emulator, Moto(os.environ[ENV_MOTO_URL], int(os.environ[ENV_MOTO_PID])))

    def env(self) -> dict[str, str]:
        aws_conn = {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": self.moto.url, "region_name": REGION},
        }
        xai_conn = {
            name: value
            for name, value in json.loads(self.emulator.env["AIRFLOW_CONN_XAI_DEFAULT"]).items()
            if name != "extra"
        }
        unpaced = {**xai_conn, "extra": {"requests_per_second": UNPACED_REQUESTS_PER_SECOND}}
        return {
            **self.emulator.env,
            "AIRFLOW_CONN_XAI_DEFAULT": json.dumps(unpaced),
            f"AIRFLOW_CONN_{DEFAULT_SETTINGS_CONN_ID.upper()}": json.dumps(xai_conn),
            "AIRFLOW_CONN_AWS_BENCH": json.dumps(aws_conn),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.moto.url,  # a client that ignores the connection still stays local
            ENV_EMULATOR_URL: self.emulator.url,
            ENV_EMULATOR_PID: str(self.emulator.pid),
            ENV_MOTO_URL: self.moto.url,
            ENV_MOTO_PID: str(self.moto.pid),
        }

    def pids(self) -> dict[str, int]:
        return {"emulator": self.emulator.pid, "moto": self.moto.pid}

    def s3(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.moto.url, region_name=REGION)

    def new_bucket(self, prefix: str) -> str:
        """A fresh bucket (benchmarks never share one)."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.s3().create_bucket(Bucket=name)
        return name

    def output_uri(self, bucket: str, prefix: str = "run") -> str:
        return f"s3://{AWS_CONN_ID}@{bucket}/{prefix}/"

    def count_objects(self, bucket: str, prefix: str = "") -> int:
        paginator = self.s3().get_paginator("list_objects_v2")
        return sum(page.get("KeyCount", 0) for page in paginator.paginate(Bucket=bucket, Prefix=prefix))


def prepare_process_env() -> str | None:
    """Before any Airflow import: a throwaway AIRFLOW_HOME, no example DAGs, fake AWS creds, nothing AWS-remote.

    Returns the Airflow home it created (the caller removes it), or None in a child that inherited one.
    """
    created = None
    if "BENCH_AIRFLOW_HOME" not in os.environ:
        created = os.environ["BENCH_AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="xai-bench-airflow-")
    os.environ["AIRFLOW_HOME"] = os.environ["BENCH_AIRFLOW_HOME"]
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    return created


def verify_object_storage(servers: Servers) -> str:
    """Check once that ``ObjectStoragePath("s3://aws_bench@bucket/x")`` writes land in the moto server."""
    from airflow.sdk import ObjectStoragePath

    bucket = servers.new_bucket("bench-verify")
    payload = f"written through ObjectStoragePath {uuid.uuid4()}".encode()
    ObjectStoragePath(f"s3://{AWS_CONN_ID}@{bucket}/x").write_bytes(payload)
    got = servers.s3().get_object(Bucket=bucket, Key="x")["Body"].read()
    if got != payload:
        raise RuntimeError(f"ObjectStoragePath write did not reach moto at {servers.moto.url}: got {got!r}")
    return f"ObjectStoragePath('s3://{AWS_CONN_ID}@{bucket}/x') -> moto at {servers.moto.url}: OK"


# -- the task context stand-in -------------------------------------------------------------------


class StandInTI:
    """The little of a TaskInstance the operators use."""

    def __init__(self, task_id: str, dag_id: str = "bench", map_index: int = -1) -> None:
        self.task_id = task_id
        self.dag_id = dag_id
        self.map_index = map_index
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


class OutletEvent:
    """The accessor of one outlet: ``.extra`` for an Asset; ``.add(asset, extra)`` for an AssetAlias."""

    def __init__(self) -> None:
        self.extra: dict[str, Any] | None = None
        self.added: list[tuple[Any, dict[str, Any] | None]] = []

    def add(self, asset: Any, extra: dict[str, Any] | None = None) -> None:
        self.added.append((asset, extra))


def make_context(task_id: str, run_id: str | None = None) -> dict[str, Any]:
    """A minimal context: ``ti``, a fresh ``run_id`` (so no run resumes another) and ``outlet_events``."""
    return {
        "ti": StandInTI(task_id),
        "run_id": run_id or f"bench-{uuid.uuid4().hex[:12]}",
        "outlet_events": collections.defaultdict(OutletEvent),
    }


def execute(operator: Any, context: dict[str, Any]) -> Any:
    """``operator.execute(context)`` as the Task Runner calls it (with its sentinel, so no 'outside' warning)."""
    from airflow.sdk.bases.operator import ExecutorSafeguard

    sentinel = {f"{type(operator).__name__}__sentinel": ExecutorSafeguard.sentinel_value}
    return operator.execute(context, **sentinel)


def generate_operator(servers: Servers, bucket: str, prompts: list[str], **kwargs: Any) -> Any:
    from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator

    kwargs.setdefault("max_concurrency", 16)
    kwargs.setdefault("deferrable", False)
    return XaiGenerateImagesOperator(
        task_id=kwargs.pop("task_id", "generate"), prompt=prompts, output_uri=servers.output_uri(bucket), **kwargs
    )


def run_generate(servers: Servers, bucket: str, prompts: list[str], **kwargs: Any) -> list[str]:
    """Construct the generate operator and execute it in a fresh context; return the image URIs."""
    operator = generate_operator(servers, bucket, prompts, **kwargs)
    uris = execute(operator, make_context(operator.task_id))
    if len(uris) != len(prompts) * kwargs.get("n", 1):
        raise RuntimeError(f"expected {len(prompts)} images, the operator stored {len(uris)}")
    return uris


def prompts(count: int, tag: str) -> list[str]:
    return [f"{tag} benchmark image {index}: a lighthouse at dusk, style {index % 7}" for index in range(count)]


# -- the hand-written baselines ------------------------------------------------------------------


class PlainLoop:
    """The baseline: one image at a time with requests (one keep-alive Session) and boto3."""

    def __init__(self, servers: Servers, bucket: str) -> None:
        self.base_url = servers.emulator.base_url
        self.bucket = bucket
        self.api = requests.Session()
        self.api.headers["Authorization"] = f"Bearer {servers.emulator.api_key}"
        self.download = requests.Session()
        self.s3 = servers.s3()

    def store(self, index: int, prompt: str, prefix: str) -> None:
        response = self.api.post(
            f"{self.base_url}/images/generations",
            json={"model": MODEL, "prompt": prompt, "n": 1, "response_format": "url"},
            timeout=120,
        )
        response.raise_for_status()
        url = response.json()["data"][0]["url"]
        self.put(index, url, prefix)

    def put(self, index: int, url: str, prefix: str) -> None:
        image = self.download.get(url, timeout=120)
        image.raise_for_status()
        self.s3.put_object(
            Bucket=self.bucket, Key=f"{prefix}/p{index:05d}.jpg", Body=image.content, ContentType="image/jpeg"
        )

    def run(self, prompts_: list[str], prefix: str | None = None) -> None:
        prefix = prefix or f"plain-{uuid.uuid4().hex[:8]}"
        for index, prompt in enumerate(prompts_):
            self.store(index, prompt, prefix)


class OpenAILoop(PlainLoop):
    """The official openai SDK in a loop: ``images.generate(response_format="url")``, download, boto3 put."""

    def __init__(self, servers: Servers, bucket: str) -> None:
        super().__init__(servers, bucket)
        from openai import OpenAI

        self.client = OpenAI(base_url=self.base_url, api_key=servers.emulator.api_key)

    def store(self, index: int, prompt: str, prefix: str) -> None:
        result = self.client.images.generate(model=MODEL, prompt=prompt, response_format="url")
        url = result.data[0].url if result.data else None
        if not url:
            raise RuntimeError(f"the openai SDK returned no image URL: {result!r}")
        self.put(index, url, prefix)


# -- warm-up -------------------------------------------------------------------------------------

_warmed = False


def warm_up(servers: Servers) -> None:
    """Once per process: pay imports, connection look-ups, the S3 filesystem and pools before measuring."""
    global _warmed
    if _warmed:
        return
    servers.emulator.configure(latency=0.0)
    bucket = servers.new_bucket("bench-warmup")
    run_generate(servers, bucket, prompts(4, "warm-up"), max_concurrency=4)
    PlainLoop(servers, bucket).run(prompts(2, "warm-up"))
    _warmed = True


# -- child processes -----------------------------------------------------------------------------


#: Start children through a shell that forks them. A process exec'd straight from this one inherits this
#: process's peak RSS into its own ru_maxrss (the kernel carries the old memory map's high-water mark
#: across exec), which would hide the child's own peak; a child forked by a small shell starts from ~0.
CLEAN_MAXRSS_SPAWN = ["/bin/sh", "-c", '"$@"; exit $?', "sh"]


def run_child(target: str, payload: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    """Run ``module:function(**payload)`` in a fresh Python process against the same servers; its dict result."""
    with tempfile.NamedTemporaryFile(prefix="bench-child-", suffix=".json", delete=False) as handle:
        result_path = handle.name
    try:
        with open(LOG_PATH, "ab") as log:
            completed = subprocess.run(
                [*CLEAN_MAXRSS_SPAWN, PYTHON, "-m", "bench._child", target, json.dumps(payload), result_path],
                cwd=BENCH_DIR.parent,
                env=os.environ.copy(),
                stdout=log,
                stderr=log,
                timeout=timeout,
                check=False,
            )
        if completed.returncode != 0:
            raise RuntimeError(f"child {target} {payload} failed with exit {completed.returncode}; see {LOG_PATH}")
        with open(result_path) as result:
            return dict(json.load(result))
    finally:
        os.unlink(result_path)


def child_main(argv: list[str]) -> None:
    maxrss_at_start = maxrss_bytes()
    target, payload, result_path = argv
    prepare_process_env()
    module_name, _, function_name = target.partition(":")
    module = __import__(module_name, fromlist=[function_name])
    function: Callable[..., dict[str, Any]] = getattr(module, function_name)
    result = function(Servers.from_env(), **json.loads(payload))
    result["maxrss_at_child_start_bytes"] = maxrss_at_start
    with open(result_path, "w") as out:
        json.dump(result, out)


# -- results -------------------------------------------------------------------------------------

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda value, limit: value <= limit,
    "<": lambda value, limit: value < limit,
    ">=": lambda value, limit: value >= limit,
    ">": lambda value, limit: value > limit,
}


@dataclass
class Target:
    name: str
    value: float
    op: str
    limit: float
    unit: str = "x"

    @property
    def passed(self) -> bool:
        return bool(_COMPARE[self.op](self.value, self.limit))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": round(self.value, 4),
            "target": f"{self.op} {self.limit:g}{self.unit}",
            "passed": self.passed,
        }


@dataclass
class BenchResult:
    key: str
    title: str
    figures: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[str, str]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def row(self, label: str, value: str) -> None:
        self.rows.append((label, value))

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "figures": _rounded(self.figures),
            "targets": [target.to_json() for target in self.targets],
            "notes": self.notes,
            "benchmark_seconds": round(self.seconds, 1),
        }


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(item) for item in value]
    return value


def fmt_seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def fmt_mib(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


# -- profiling (every thread) ---------------------------------------------------------------------


@dataclass
class ThreadProfile:
    """cProfile data merged over the threads that ran in a :func:`profile_all_threads` block."""

    stats: Any = None
    threads: int = 0

    def by_area(self) -> dict[str, float]:
        """Own CPU time (tottime) per library, from the file each function lives in."""
        areas: dict[str, float] = collections.defaultdict(float)
        for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in self.stats.stats.items():
            areas[_area(filename)] += tottime
        return dict(sorted(areas.items(), key=lambda item: -item[1]))

    def top(self, count: int = 15) -> list[dict[str, Any]]:
        rows = sorted(self.stats.stats.items(), key=lambda item: -item[1][2])[:count]
        return [
            {"function": f"{_short(filename)}:{line}({name})", "tottime_s": tottime, "calls": calls}
            for (filename, line, name), (_cc, calls, tottime, _ct, _callers) in rows
        ]

    def write(self, path: Path, count: int = 45) -> None:
        import io

        buffer = io.StringIO()
        buffer.write(f"cProfile of {self.threads} thread(s), merged\n\nOwn time by area:\n")
        for area, seconds in self.by_area().items():
            buffer.write(f"  {area:<28} {seconds:8.3f} s\n")
        stats = self.stats
        stats.stream = buffer
        for key in ("tottime", "cumulative"):
            buffer.write(f"\n===== sorted by {key} =====\n")
            stats.sort_stats(key).print_stats(count)
        path.write_text(buffer.getvalue())


_AREAS = (
    ("airflow_provider_xai_image", "provider (this package)"),
    ("/botocore/", "botocore"),
    ("/aiobotocore/", "aiobotocore"),
    ("/s3fs/", "s3fs"),
    ("/fsspec/", "fsspec"),
    ("/upath/", "universal_pathlib"),
    ("/airflow/sdk/io/", "airflow ObjectStoragePath"),
    ("/airflow/", "airflow (other)"),
    ("/aiohttp/", "aiohttp"),
    ("/urllib3/", "urllib3"),
    ("/requests/", "requests"),
    ("/pydantic", "pydantic"),
    ("/tenacity/", "tenacity"),
    ("/structlog/", "structlog"),
    ("/asyncio/", "asyncio"),
    ("/concurrent/", "concurrent.futures"),
    ("threading.py", "threading"),
    ("/http/", "http.client"),
    ("/email/", "email (http headers)"),
    ("/json/", "json"),
    ("/logging/", "logging"),
    ("tempfile.py", "tempfile"),
)


def _area(filename: str) -> str:
    if filename == "~":
        return "builtins / C calls"
    return next((area for marker, area in _AREAS if marker in filename), "other python")


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in filename:
            return filename.rpartition(marker)[2]
    return filename


@contextlib.contextmanager
def profile_all_threads() -> Iterator[ThreadProfile]:
    """cProfile this thread, every thread started in the block (worker pools) and fsspec's IO loop thread.

    cProfile sees one thread only, so each new thread starts its own profiler (``threading.setprofile``)
    and the IO loop thread (where s3fs/aiobotocore run) gets one through ``call_soon_threadsafe``.
    The timer is each thread's CPU clock, so waiting (locks, sockets) does not count: times are CPU.
    """
    import cProfile
    import pstats
    import threading

    import fsspec.asyn

    result = ThreadProfile()
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_in_new_thread(*_args: Any) -> None:
        sys.setprofile(None)
        profile = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(profile)
        profile.enable()

    loop = fsspec.asyn.get_loop()
    loop_profile = cProfile.Profile(time.thread_time)

    def in_loop_thread(switch: Callable[[], None]) -> None:
        done = threading.Event()

        def call() -> None:
            switch()
            done.set()

        loop.call_soon_threadsafe(call)
        done.wait(10)

    in_loop_thread(loop_profile.enable)
    main = cProfile.Profile(time.thread_time)
    threading.setprofile(start_in_new_thread)
    main.enable()
    try:
        yield result
    finally:
        main.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
        in_loop_thread(loop_profile.disable)
        stats = pstats.Stats(main)
        stats.add(loop_profile)
        for profile in profiles:
            profile.create_stats()
            stats.add(profile)
        result.stats = stats
        result.threads = 2 + len(profiles)
