"""F. Throughput under xAI's rate limit: 300 prompts against the emulator limited to 5 generate calls a
second, ``max_concurrency=16`` at 1 s generation latency (so the task asks for 16 a second), with the
task's rate limiter vs without it (each request retrying its own 429s, as the hook does for other callers)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from bench.harness import BenchResult, Servers, Target, measure, prompts, run_generate, say, warm_up

LATENCY = 1.0
CONCURRENCY = 16
RATE_LIMIT_RPS = 5
TARGET_RATIO = 0.80
#: A stored image's object name (records and the manifest are not images).
IMAGE_KEY = re.compile(r"/p\d{5}-i\d{2}-[0-9a-f]{12}\.(jpg|png)$")


@contextlib.contextmanager
def limiter_off() -> Iterator[None]:
    """The operator as it was: the hook without a limiter, each request retrying 429s within ``max_retries``."""
    from airflow_provider_xai_image.hooks.xai import XaiHook

    original = XaiHook.run_image_request

    def without_limiter(self: XaiHook, request: Any, limiter: Any = None) -> Any:
        return original(self, request)

    XaiHook.run_image_request = without_limiter  # type: ignore[method-assign]
    try:
        yield
    finally:
        XaiHook.run_image_request = original  # type: ignore[method-assign]


def stored_images(servers: Servers, bucket: str) -> int:
    """Images under ``bucket`` (not records or manifests)."""
    pages = servers.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sum(1 for page in pages for item in page.get("Contents", []) if IMAGE_KEY.search(item["Key"]))


def one_run(servers: Servers, name: str, count: int) -> dict[str, Any]:
    """One operator run of ``count`` prompts against the rate-limited emulator; what it stored and was billed."""
    servers.emulator.reset(generation_latency=LATENCY, rate_limit_rps=RATE_LIMIT_RPS)
    bucket = servers.new_bucket(f"bench-f-{name}")
    error = None
    with measure(servers) as span:
        try:
            run_generate(servers, bucket, prompts(count, f"F-{name}"), max_concurrency=CONCURRENCY, task_id=name)
        except Exception as failure:  # the baseline's task fails once a request runs out of retries
            error = f"{type(failure).__name__}: {failure}"
    stats = servers.emulator.stats()
    stored = stored_images(servers, bucket)
    return {
        "wall_s": span.wall,
        "stored": stored,
        "lost": count - stored,
        "billed": stats["images_billed"],
        "refused_429": stats["rate_limited"],
        "refused_429_per_image": stats["rate_limited"] / max(stored, 1),
        "images_per_s": stored / span.wall,
        "ratio_of_limit": stored / span.wall / RATE_LIMIT_RPS,
        "task_error": error,
    }


def run(servers: Servers, quick: bool) -> BenchResult:
    count = 60 if quick else 300
    title = (
        f"Rate limit: {count} prompts, emulator limited to {RATE_LIMIT_RPS} generate calls/s, "
        f"{LATENCY:g} s generation latency, max_concurrency={CONCURRENCY}"
    )
    result = BenchResult("F", title)
    warm_up(servers)
    say(f"  F: operator with its rate limiter, {count} prompts (ideal {count / RATE_LIMIT_RPS:g} s at the limit)")
    limited = one_run(servers, "limiter", count)
    say("  F: baseline, limiter off (each request retries its own 429s, default max_retries=5)")
    with limiter_off():
        baseline = one_run(servers, "baseline", count)
    servers.emulator.reset()

    result.figures = {
        "prompts": count,
        "rate_limit_rps": RATE_LIMIT_RPS,
        "latency_s": LATENCY,
        "max_concurrency": CONCURRENCY,
        "limiter": limited,
        "baseline_limiter_off": baseline,
    }
    for label, figures in (("with the limiter", limited), ("baseline: limiter off", baseline)):
        error = figures["task_error"]
        outcome = "completed" if error is None else f"failed with {error.split(':', 1)[0]}"
        result.row(f"{label}: task", f"{outcome} after {figures['wall_s']:.1f} s")
        result.row(
            f"{label}: images/s",
            f"{figures['images_per_s']:.2f} = {figures['ratio_of_limit']:.3f}x the limit of {RATE_LIMIT_RPS}/s",
        )
        result.row(
            f"{label}: images",
            f"{figures['stored']} stored, {figures['lost']} lost, {figures['billed']} billed; "
            f"{figures['refused_429']} requests refused with 429 ({figures['refused_429_per_image']:.2f} per image)",
        )
    result.targets = [
        Target("F images/s / rate limit", limited["ratio_of_limit"], ">=", TARGET_RATIO),
        Target("F images lost", limited["lost"], "<=", 0, unit=""),
        Target("F images billed - prompts (each billed once)", limited["billed"] - count, "<=", 0, unit=""),
    ]
    result.notes.append(
        f"Latency {LATENCY:g} s applies to generate calls only; a rate-limited call is refused at once, before it. "
        "The emulator's 429s carry Retry-After (whole seconds), which the limiter honours; images/s counts images "
        "stored to moto S3 over the operator's wall time (key check, prices, storage and manifest included)."
    )
    result.notes.append(
        "The baseline is the same operator with the hook's per-request retries (429 counted against max_retries, "
        "default 5): it fails the task once a request runs out of retries; a task retry would resume it later."
    )
    return result
