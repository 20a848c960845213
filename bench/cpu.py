"""B. CPU time per image of this process at zero latency: the operator vs the requests+boto3 loop.

When the operator misses the target (or with ``--profile``) B also says where the time goes: a cProfile
of every thread (CPU clock) of one operator run and one loop run, by library.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from bench.harness import (
    RESULTS_DIR,
    BenchResult,
    PlainLoop,
    Servers,
    Target,
    execute,
    generate_operator,
    make_context,
    measure,
    median,
    profile_all_threads,
    prompts,
    run_generate,
    say,
    warm_up,
)

REPEATS = 3
LIMIT = 1.25


def operator_cpu_per_image(
    servers: Servers, bucket: str, count: int, tag: str, concurrency: int = 16
) -> tuple[float, float, float]:
    """(CPU s/image, wall s, servers' CPU s/image) of one operator run of ``count`` prompts."""
    gc.collect()
    with measure(servers) as span:
        run_generate(servers, bucket, prompts(count, tag), max_concurrency=concurrency)
    return span.cpu / count, span.wall, sum(span.server_cpu.values()) / count


def loop_cpu_per_image(servers: Servers, plain: PlainLoop, count: int, tag: str) -> tuple[float, float, float]:
    gc.collect()
    with measure(servers) as span:
        plain.run(prompts(count, tag))
    return span.cpu / count, span.wall, sum(span.server_cpu.values()) / count


def run(servers: Servers, quick: bool, profile: bool = False) -> BenchResult:
    count = 50 if quick else 200
    result = BenchResult("B", f"CPU per image at 0 latency, {count} images, median of {REPEATS}")
    warm_up(servers)
    servers.emulator.reset(latency=0.0)
    bucket = servers.new_bucket("bench-b")
    plain = PlainLoop(servers, bucket)
    plain.run(prompts(3, "B-warm"))  # its connections and boto3's first-call costs, outside the measurement

    runs: dict[str, list[tuple[float, float, float]]] = {"operator": [], "plain": []}
    for repeat in range(REPEATS):
        say(f"  B: repeat {repeat + 1}/{REPEATS}: operator, then plain loop ({count} images each)")
        runs["operator"].append(operator_cpu_per_image(servers, bucket, count, f"B-op{repeat}"))
        runs["plain"].append(loop_cpu_per_image(servers, plain, count, f"B-plain{repeat}"))
    operator_cpu = [cpu for cpu, _, _ in runs["operator"]]
    plain_cpu = [cpu for cpu, _, _ in runs["plain"]]
    ratio = median(operator_cpu) / median(plain_cpu)
    result.figures = {
        "images": count,
        "repeats": REPEATS,
        "operator_cpu_per_image_s": median(operator_cpu),
        "plain_loop_cpu_per_image_s": median(plain_cpu),
        "cpu_ratio_operator_vs_plain": ratio,
        "operator_cpu_per_image_all_s": operator_cpu,
        "plain_loop_cpu_per_image_all_s": plain_cpu,
        "operator_wall_s_all": [wall for _, wall, _ in runs["operator"]],
        "plain_loop_wall_s_all": [wall for _, wall, _ in runs["plain"]],
        "servers_cpu_per_image_s": {name: median([s for _, _, s in items]) for name, items in runs.items()},
        "s3_puts_per_image": {"operator": 2, "plain_loop": 1},
    }
    result.row("operator CPU / image", f"{median(operator_cpu) * 1000:.2f} ms (runs: {_ms(operator_cpu)})")
    result.row("requests+boto3 loop CPU / image", f"{median(plain_cpu) * 1000:.2f} ms (runs: {_ms(plain_cpu)})")
    result.row("operator / loop CPU", f"{ratio:.2f}x")
    result.row(
        "wall (median) operator | loop",
        f"{median(result.figures['operator_wall_s_all']):.2f} s | "
        f"{median(result.figures['plain_loop_wall_s_all']):.2f} s for {count} images",
    )
    result.targets = [Target("B operator CPU per image / plain loop", ratio, "<=", LIMIT)]
    result.notes.append(
        "CPU is time.process_time() of the benchmark process only (all its threads), not the emulator's or "
        "moto's. The loop reuses one requests Session and one boto3 client (created before measuring). "
        "The operator also checks the key and reads prices (two GETs per task), writes and removes a probe "
        "object, streams each download to a spool file with a SHA-256 and checks it is whole, saves request "
        "records (one S3 PUT per 16 requests) and the manifest, and logs at INFO (to bench/results/bench.log) "
        "as a task does."
    )
    if profile or ratio > LIMIT:
        say("  B: operator at max_concurrency=1 (is it thread contention?)")
        serial = median([operator_cpu_per_image(servers, bucket, count, f"B-serial{i}", 1)[0] for i in range(2)])
        result.figures["operator_max_concurrency_1_cpu_per_image_s"] = serial
        result.row(
            "operator at max_concurrency=1, CPU / image",
            f"{serial * 1000:.2f} ms = {serial / median(plain_cpu):.2f}x the loop (so not thread contention)"
            if serial / median(plain_cpu) > LIMIT
            else f"{serial * 1000:.2f} ms = {serial / median(plain_cpu):.2f}x the loop",
        )
        profile_where_time_goes(servers, bucket, plain, count, result)
    return result


# -- where the time goes -------------------------------------------------------------------------


def profile_where_time_goes(servers: Servers, bucket: str, plain: PlainLoop, count: int, result: BenchResult) -> None:
    say(f"  B: profiling one operator run and one loop run (every thread, CPU clock) -> {RESULTS_DIR}")
    operator = generate_operator(servers, bucket, prompts(count, "B-profile"), max_concurrency=16)
    calls: dict[str, Callable[[], Any]] = {
        "operator": lambda: execute(operator, make_context(operator.task_id)),
        "plain_loop": lambda: plain.run(prompts(count, "B-profile-plain")),
    }
    per_image: dict[str, dict[str, float]] = {}
    profiles: dict[str, Any] = {}
    for name, call in calls.items():
        gc.collect()
        with profile_all_threads() as profiled:
            call()
        path = RESULTS_DIR / f"profile_B_{name}.txt"
        profiled.write(path)
        per_image[name] = {area: seconds / count for area, seconds in profiled.by_area().items()}
        profiles[name] = {
            "file": f"bench/results/{path.name}",
            "threads": profiled.threads,
            "top_functions_by_own_cpu": profiled.top(10),
        }
    areas = sorted(
        set(per_image["operator"]) | set(per_image["plain_loop"]),
        key=lambda area: -per_image["operator"].get(area, 0.0),
    )
    table = {
        area: {
            "operator": per_image["operator"].get(area, 0.0),
            "plain_loop": per_image["plain_loop"].get(area, 0.0),
            "extra": per_image["operator"].get(area, 0.0) - per_image["plain_loop"].get(area, 0.0),
        }
        for area in areas
    }
    profiles["own_cpu_per_image_by_area_s"] = table
    result.figures["profile"] = profiles
    totals = {name: sum(values.values()) for name, values in per_image.items()}
    result.row(
        "profiled CPU/image (cProfile inflates it)",
        f"operator {totals['operator'] * 1000:.1f} ms, loop {totals['plain_loop'] * 1000:.1f} ms "
        f"({totals['operator'] / totals['plain_loop']:.2f}x)",
    )
    s3_stack = ("botocore", "aiobotocore", "aiohttp", "asyncio", "s3fs", "fsspec")
    s3_extra = sum(table.get(area, {}).get("extra", 0.0) for area in s3_stack)
    extra_total = totals["operator"] - totals["plain_loop"]
    result.row(
        "profile: operator's extra CPU in the S3 stack",
        f"{s3_extra * 1000:.1f} of {extra_total * 1000:.1f} ms/image ({s3_extra / extra_total:.0%}; "
        + "/".join(s3_stack)
        + ")",
    )
    biggest = sorted(table.items(), key=lambda item: -item[1]["extra"])[:5]
    result.row("profile: largest extra areas", ", ".join(f"{a} +{v['extra'] * 1000:.1f} ms" for a, v in biggest))


# -- what if: the proposed changes, simulated in this process --------------------------------------


def _ms(values: list[float]) -> str:
    return " ".join(f"{value * 1000:.2f}" for value in values)
