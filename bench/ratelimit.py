"""F. Throughput under xAI's rate limit: the generate operator with DEFAULT settings (paced by rate, starting at
the connection's default 5 requests/s) against the emulator limited to 5 generate calls a second, at several
prompt counts and latencies, and 3 tasks started together on the one limit; each beside a baseline run of the
fixed concurrency of earlier releases (``max_concurrency=4``, their default).

The best possible time of one task is ``prompts / 5 + latency``: the share of it a run reaches is the figure.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from bench.harness import (
    DEFAULT_SETTINGS_CONN_ID,
    BenchResult,
    Servers,
    Target,
    prompts,
    run_generate,
    say,
    warm_up,
)

RATE_LIMIT_RPS = 5
#: ``(prompts, generation latency in seconds)`` of the one-task runs.
CASES = ((60, 0.5), (100, 2.0), (100, 5.0), (300, 1.0))
QUICK_CASES = ((30, 0.5),)
#: Tasks started together on one limit, prompts each, latency.
SHARED = (3, 200, 2.0)
QUICK_SHARED = (3, 20, 0.5)
#: The fixed concurrency of earlier releases' default: the baseline.
BASELINE_CONCURRENCY = 4
TARGET_SHARE = 0.85
TARGET_SHARED_COMBINED = 0.80
TARGET_SHARED_FAIRNESS = 0.5
#: A stored image's object name (records and the manifest are not images).
IMAGE_KEY = re.compile(r"/p\d{5}-i\d{2}-[0-9a-f]{12}\.(jpg|png)$")


@dataclass(frozen=True)
class Setting:
    """What a run sets: ``max_concurrency`` None is the default (paced by rate)."""

    label: str
    max_concurrency: int | None


DEFAULT = Setting("default", None)
BASELINE = Setting(f"max_concurrency={BASELINE_CONCURRENCY}", BASELINE_CONCURRENCY)


def stored_images(servers: Servers, bucket: str) -> int:
    """Images under ``bucket`` (not records or manifests)."""
    pages = servers.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sum(1 for page in pages for item in page.get("Contents", []) if IMAGE_KEY.search(item["Key"]))


def best_seconds(count: int, latency: float) -> float:
    return count / RATE_LIMIT_RPS + latency


def run_tasks(servers: Servers, setting: Setting, tasks: int, count: int, latency: float) -> dict[str, Any]:
    """``tasks`` operator runs of ``count`` prompts each, started together against the rate-limited emulator
    (reset first); each task's wall time and images, and what the emulator billed and refused."""
    servers.emulator.reset(generation_latency=latency, rate_limit_rps=RATE_LIMIT_RPS)
    tag = f"{setting.max_concurrency or 'd'}-{count}-{latency:g}".replace(".", "_")
    buckets = [servers.new_bucket(f"bench-f-{tag}-{task}") for task in range(tasks)]
    walls: list[float] = [0.0] * tasks
    errors: list[str | None] = [None] * tasks
    start = threading.Barrier(tasks + 1)

    def one_task(task: int) -> None:
        start.wait()
        began = time.perf_counter()
        try:
            run_generate(
                servers,
                buckets[task],
                prompts(count, f"F-{tag}-{task}"),
                max_concurrency=setting.max_concurrency,
                task_id=f"f_{task}",
                xai_conn_id=DEFAULT_SETTINGS_CONN_ID,
            )
        except Exception as failure:
            errors[task] = f"{type(failure).__name__}: {failure}"
        walls[task] = time.perf_counter() - began

    threads = [threading.Thread(target=one_task, args=(task,)) for task in range(tasks)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    stats = servers.emulator.stats()
    stored = [stored_images(servers, bucket) for bucket in buckets]
    per_task = [images / seconds for images, seconds in zip(stored, walls, strict=True)]
    return {
        "wall_s": wall,
        "task_wall_s": walls,
        "stored": sum(stored),
        "lost": tasks * count - sum(stored),
        "billed": stats["images_billed"],
        "refused_429": stats["rate_limited"],
        "task_images_per_s": per_task,
        "share_of_limit": sum(stored) / wall / RATE_LIMIT_RPS,
        "fairness": min(per_task) / max(per_task),
        "task_errors": [error for error in errors if error],
    }


def one_task_case(servers: Servers, count: int, latency: float) -> dict[str, Any]:
    """One task of ``count`` prompts at ``latency``, default settings and baseline, side by side."""
    figures: dict[str, Any] = {"prompts": count, "latency_s": latency, "best_s": best_seconds(count, latency)}
    for setting in (DEFAULT, BASELINE):
        say(f"  F: {count} prompts @ {latency:g} s, {setting.label}")
        run = run_tasks(servers, setting, 1, count, latency)
        run["share_of_best"] = figures["best_s"] / run["wall_s"]
        figures[setting.label] = run
    figures["default_vs_baseline"] = figures[DEFAULT.label]["share_of_best"] / figures[BASELINE.label]["share_of_best"]
    return figures


def describe(run: dict[str, Any], count: int) -> str:
    failed = f"; FAILED: {run['task_errors'][0][:120]}" if run["task_errors"] else ""
    return (
        f"{run['wall_s']:.1f} s, {run['stored']} stored, {run['lost']} lost, {run['billed']} billed "
        f"(of {count}), {run['refused_429']} 429s{failed}"
    )


def run(servers: Servers, quick: bool) -> BenchResult:
    cases = QUICK_CASES if quick else CASES
    tasks, shared_count, shared_latency = QUICK_SHARED if quick else SHARED
    title = (
        f"Rate limit: emulator limited to {RATE_LIMIT_RPS} generate calls/s, default settings vs "
        f"max_concurrency={BASELINE_CONCURRENCY} (earlier releases' default)"
    )
    result = BenchResult("F", title)
    warm_up(servers)
    singles = [one_task_case(servers, count, latency) for count, latency in cases]
    say(f"  F: {tasks} tasks x {shared_count} prompts @ {shared_latency:g} s started together")
    shared = {
        setting.label: run_tasks(servers, setting, tasks, shared_count, shared_latency)
        for setting in (DEFAULT, BASELINE)
    }
    servers.emulator.reset()

    result.figures = {"rate_limit_rps": RATE_LIMIT_RPS, "one_task": singles, "shared": {"tasks": tasks, **shared}}
    for case in singles:
        count, latency = case["prompts"], case["latency_s"]
        default, baseline = case[DEFAULT.label], case[BASELINE.label]
        result.row(
            f"{count} @ {latency:g} s: share of best ({case['best_s']:g} s)",
            f"default {default['share_of_best']:.3f}, baseline {baseline['share_of_best']:.3f}: "
            f"{case['default_vs_baseline']:.2f}x",
        )
        result.row(f"{count} @ {latency:g} s: default", describe(default, count))
        result.row(f"{count} @ {latency:g} s: baseline", describe(baseline, count))
        result.targets += [
            Target(f"F {count} @ {latency:g} s share of best", default["share_of_best"], ">=", TARGET_SHARE),
            Target(f"F {count} @ {latency:g} s lost", default["lost"], "<=", 0, unit=""),
            Target(f"F {count} @ {latency:g} s billed - prompts", default["billed"] - count, "<=", 0, unit=""),
        ]
    total = tasks * shared_count
    for setting in (DEFAULT, BASELINE):
        figures = shared[setting.label]
        rates = ", ".join(f"{rate:.2f}" for rate in figures["task_images_per_s"])
        result.row(
            f"{tasks} tasks x {shared_count} @ {shared_latency:g} s: {setting.label}",
            f"{figures['share_of_limit']:.3f}x the limit combined; per task {rates} images/s "
            f"(slowest/fastest {figures['fairness']:.2f}); {describe(figures, total)}",
        )
    default = shared[DEFAULT.label]
    result.targets += [
        Target(f"F {tasks} tasks combined / limit", default["share_of_limit"], ">=", TARGET_SHARED_COMBINED),
        Target(f"F {tasks} tasks slowest / fastest", default["fairness"], ">=", TARGET_SHARED_FAIRNESS),
        Target(f"F {tasks} tasks lost", default["lost"], "<=", 0, unit=""),
        Target(f"F {tasks} tasks billed - prompts", default["billed"] - total, "<=", 0, unit=""),
    ]
    result.notes.append(
        "Best possible time = prompts / 5 + latency; the share is best / wall time of the operator (key check, "
        "prices, storage to moto S3 and manifest included). Latency applies to generate calls only; a "
        "rate-limited call is refused at once, with Retry-After (whole seconds), which the pacing honours."
    )
    if quick:
        result.notes.append(
            "--quick: the 3 tasks send 20 prompts each, too few for their shares to settle after the 429s of "
            "their start (each starts at the full limit); the full run sends 200 each."
        )
    result.notes.append(
        f"Baseline: the same operator with max_concurrency={BASELINE_CONCURRENCY} (earlier releases' default, "
        "which capped requests in flight); tasks started together run in threads of one process, each with "
        "its own hook and pacing (no shared state)."
    )
    return result
