"""A. Wall time of XaiGenerateImagesOperator at 1 s image-generation latency vs the ideal and vs hand-written loops."""

from __future__ import annotations

from bench.harness import (
    BenchResult,
    OpenAILoop,
    PlainLoop,
    Servers,
    Target,
    fmt_seconds,
    ideal_seconds,
    measure,
    prompts,
    run_generate,
    say,
    warm_up,
)

LATENCY = 1.0
CONCURRENCY = 16


def run(servers: Servers, quick: bool) -> BenchResult:
    count = 48 if quick else 200
    loop_count = 5 if quick else 20
    title = f"Throughput: {count} prompts at {LATENCY:g} s generation latency, max_concurrency={CONCURRENCY}"
    result = BenchResult("A", title)
    warm_up(servers)
    # Each generate call takes LATENCY; the free key check and the price list answer at once, as xAI's do
    # (well under a second: the operator makes each once per task, before its first paid request).
    servers.emulator.reset(generation_latency=LATENCY)
    bucket = servers.new_bucket("bench-a")
    ideal = ideal_seconds(count, CONCURRENCY, LATENCY)

    say(f"  A: operator, {count} prompts (ideal {ideal:g} s)")
    with measure(servers) as operator_span:
        run_generate(servers, bucket, prompts(count, "A"), max_concurrency=CONCURRENCY)

    loops = {"plain": PlainLoop(servers, bucket), "openai": OpenAILoop(servers, bucket)}
    per_image: dict[str, float] = {}
    for name, loop in loops.items():
        say(f"  A: {name} sequential loop on a subset of {loop_count} prompts")
        with measure() as span:
            loop.run(prompts(loop_count, f"A-{name}"))
        per_image[name] = span.wall / loop_count

    wall = operator_span.wall
    extrapolated = {name: seconds * count for name, seconds in per_image.items()}
    speedup = {name: seconds / wall for name, seconds in extrapolated.items()}
    result.figures = {
        "prompts": count,
        "latency_s": LATENCY,
        "max_concurrency": CONCURRENCY,
        "operator_wall_s": wall,
        "operator_cpu_s": operator_span.cpu,
        "ideal_s": ideal,
        "operator_vs_ideal": wall / ideal,
        "loop_subset_prompts": loop_count,
        "loops_extrapolated": True,
        "plain_loop_per_image_s": per_image["plain"],
        "plain_loop_extrapolated_s": extrapolated["plain"],
        "openai_loop_per_image_s": per_image["openai"],
        "openai_loop_extrapolated_s": extrapolated["openai"],
        "speedup_vs_plain_loop": speedup["plain"],
        "speedup_vs_openai_loop": speedup["openai"],
        "server_cpu_s_during_operator": operator_span.server_cpu,
    }
    result.row("operator wall time", f"{wall:.2f} s (ideal ceil({count}/{CONCURRENCY}) x {LATENCY:g} s = {ideal:g} s)")
    result.row("operator / ideal", f"{wall / ideal:.3f}x")
    for name, label in (("plain", "requests+boto3 loop"), ("openai", "openai SDK loop")):
        result.row(
            f"{label} (measured on {loop_count})",
            f"{fmt_seconds(per_image[name])}/image -> EXTRAPOLATED to {count}: {extrapolated[name]:.1f} s",
        )
        result.row(f"speedup vs {label}", f"{speedup[name]:.1f}x (against the extrapolated time)")
    result.targets = [
        Target("A operator wall / ideal", wall / ideal, "<=", 1.15),
        Target("A speedup vs requests+boto3 loop", speedup["plain"], ">=", 10),
        Target("A speedup vs openai SDK loop", speedup["openai"], ">=", 10),
    ]
    result.notes.append(
        f"The sequential loops ran on {loop_count} prompts only; their {count}-prompt times are "
        f"per-image time x {count} (extrapolated, not measured)."
    )
    result.notes.append(
        "Latency applies to generate/edit calls (emulator generation_latency), not to the key check and price "
        "list the operator reads once before its first paid request, nor to image downloads."
    )
    return result
