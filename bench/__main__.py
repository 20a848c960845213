"""``python -m bench [A B C D E F G H] [--quick] [--profile]``: run the benchmarks, print a table and JSON.

A throughput at 1 s generation latency, B CPU per image, C RSS growth at 1,000 vs 20,000 images, D deferrable
worker time, E a large batch end to end, F throughput under a rate limit of 5 requests/s, G a 20,000-request
batch stored by 1 vs 4 mapped tasks (LocalExecutor), H DAG parsing (import time) vs ``import airflow.sdk``.
The JSON also goes to bench/results/latest.json (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import time
import traceback
from importlib import metadata
from typing import Any

from bench import harness
from bench.harness import RESULTS_DIR, BenchResult, Servers, say

BENCHMARKS = {
    "A": "bench.throughput",
    "B": "bench.cpu",
    "C": "bench.memory",
    "D": "bench.deferrable",
    "E": "bench.batch",
    "F": "bench.ratelimit",
    "G": "bench.shares",
    "H": "bench.imports",
}
PACKAGES = (
    "apache-airflow",
    "apache-airflow-task-sdk",
    "apache-airflow-providers-amazon",
    "airflow-provider-xai-image",
    "requests",
    "httpx",
    "openai",
    "boto3",
    "botocore",
    "s3fs",
    "aiobotocore",
    "fsspec",
    "universal-pathlib",
    "pydantic",
    "tenacity",
    "moto",
    "werkzeug",
    "pillow",
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="*", metavar="BENCH", help="any of A B C D E F G H (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and latencies (a smoke run)")
    parser.add_argument("--profile", action="store_true", help="always profile B (it does when B misses its target)")
    args = parser.parse_args(argv)
    chosen = [name.upper() for name in args.benchmarks] or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {' '.join(BENCHMARKS)}")
    args.benchmarks = sorted(set(chosen), key=list(BENCHMARKS).index)
    return args


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu_model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "versions": versions,
    }


def render_table(results: list[BenchResult]) -> str:
    width = max([len(label) for result in results for label, _ in result.rows] + [30])
    lines = []
    for result in results:
        lines.append(f"\n{result.key}. {result.title}  [{result.seconds:.0f} s]")
        lines.append("-" * (width + 60))
        lines.extend(f"  {label:<{width}}  {value}" for label, value in result.rows)
        for target in result.targets:
            verdict = "PASS" if target.passed else "MISS"
            lines.append(
                f"  {'target: ' + target.name:<{width}}  {target.value:.3f} vs {target.op} "
                f"{target.limit:g}{target.unit.strip()}  -> {verdict}"
            )
        lines.extend(f"  note: {note}" for note in result.notes)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    airflow_home = harness.prepare_process_env()
    try:
        return run(args, argv)
    finally:
        if airflow_home:
            shutil.rmtree(airflow_home, ignore_errors=True)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    harness.LOG_PATH.write_text("")
    started = time.perf_counter()
    say(f"Benchmarks {' '.join(args.benchmarks)}{' (quick)' if args.quick else ''}; logs in {harness.LOG_PATH}")
    results: list[BenchResult] = []
    failures: list[str] = []
    with Servers.running() as servers:
        say(
            f"xAI emulator {servers.emulator.url} (pid {servers.emulator.pid}), moto {servers.moto.url} "
            f"(pid {servers.moto.pid})"
        )
        with harness.output_to_log():
            check = harness.verify_object_storage(servers)
        say(check)
        for key in args.benchmarks:
            module = __import__(BENCHMARKS[key], fromlist=["run"])
            say(f"{key}: running")
            begun = time.perf_counter()
            try:
                with harness.output_to_log():
                    if key == "B":
                        result = module.run(servers, args.quick, profile=args.profile)
                    else:
                        result = module.run(servers, args.quick)
            except Exception as error:  # report it and go on with the other benchmarks
                with harness.output_to_log():
                    traceback.print_exc()
                say(f"{key}: FAILED: {type(error).__name__}: {error} (traceback in {harness.LOG_PATH})")
                result = BenchResult(key, "FAILED", notes=[f"FAILED: {type(error).__name__}: {error}"])
                failures.append(key)
            result.seconds = time.perf_counter() - begun
            say(f"{key}: done in {result.seconds:.0f} s")
            results.append(result)

    targets = [target.to_json() for result in results for target in result.targets]
    document = {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), "-m", "bench", *argv]),
        "quick": args.quick,
        "benchmarks_run": args.benchmarks,
        "total_seconds": round(time.perf_counter() - started, 1),
        "machine": machine_info(),
        "object_storage_check": check,
        "results": {result.key: result.to_json() for result in results},
        "targets": targets,
        "all_targets_passed": all(target["passed"] for target in targets),
        "benchmarks_failed": failures,
    }
    print(render_table(results))
    print(
        f"\nTotal {document['total_seconds']:.0f} s. Targets passed: "
        f"{sum(t['passed'] for t in targets)}/{len(targets)}\n"
    )
    text = json.dumps(document, indent=2)
    print(text)
    (RESULTS_DIR / "latest.json").write_text(text + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
