"""C. Peak RSS growth while storing 10 vs 100 images of 2k resolution, each run in a fresh process."""

from __future__ import annotations

import gc
from typing import Any

from bench.harness import (
    BenchResult,
    Servers,
    Target,
    fmt_mib,
    maxrss_bytes,
    measure,
    median,
    prompts,
    rss_bytes,
    run_child,
    run_generate,
    say,
)

SIZES = (10, 100)
#: Below the smaller run's image count, so both runs hold the same number of requests in flight and
#: the comparison measures what the number of images costs, not what concurrency costs.
CONCURRENCY = 8
LIMIT = 1.2
REPEATS = 2


def child(servers: Servers, images: int, max_concurrency: int) -> dict[str, Any]:
    """In a fresh process: warm up (imports, connections, S3 filesystem), then store ``images`` 2k images."""
    bucket = servers.new_bucket("bench-c")
    run_generate(servers, bucket, prompts(2, "C-warm"), max_concurrency=2, resolution="2k", aspect_ratio="1:1")
    gc.collect()
    baseline = maxrss_bytes()
    rss_before = rss_bytes()
    with measure() as span:
        run_generate(
            servers,
            bucket,
            prompts(images, "C"),
            max_concurrency=max_concurrency,
            resolution="2k",
            aspect_ratio="1:1",
        )
    peak = maxrss_bytes()
    stored = servers.count_objects(bucket, "run/")
    sizes = [
        head["Size"]
        for head in servers.s3().list_objects_v2(Bucket=bucket, Prefix="run/")["Contents"]
        if head["Key"].endswith(".jpg")
    ]
    return {
        "images": images,
        "max_concurrency": max_concurrency,
        "baseline_maxrss_bytes": baseline,
        "rss_before_bytes": rss_before,
        "peak_maxrss_bytes": peak,
        "growth_bytes": peak - baseline,
        "rss_after_bytes": rss_bytes(),
        "wall_s": span.wall,
        "objects_in_bucket": stored,
        "image_bytes_mean": sum(sizes) / max(len(sizes), 1),
    }


def run(servers: Servers, quick: bool) -> BenchResult:
    small, large = SIZES
    result = BenchResult("C", f"Peak RSS growth storing {small} vs {large} 2k images (fresh process each)")
    servers.emulator.reset(latency=0.0)
    repeats = 1 if quick else REPEATS
    cases = [
        ("small", small, CONCURRENCY, repeats),
        ("large", large, CONCURRENCY, repeats),
    ]
    if not quick:
        cases.append(("scale_1000", 1000, CONCURRENCY, 1))
    runs: dict[str, list[dict[str, Any]]] = {}
    for name, images, concurrency, count in cases:
        for attempt in range(count):
            say(f"  C: child process {attempt + 1}/{count}: {images} 2k images, max_concurrency={concurrency}")
            runs.setdefault(name, []).append(
                run_child("bench.memory:child", {"images": images, "max_concurrency": concurrency})
            )
    growth = {name: median([float(run_["growth_bytes"]) for run_ in items]) for name, items in runs.items()}
    ratio = growth["large"] / max(growth["small"], 1.0)
    result.figures = {
        "resolution": "2k",
        "aspect_ratio": "1:1",
        "image_bytes_approx": runs["large"][0]["image_bytes_mean"],
        "median_growth_bytes": growth,
        "growth_ratio_large_vs_small": ratio,
        "max_concurrency": CONCURRENCY,
        "runs": runs,
    }
    labels = {
        "small": f"{small} images, max_concurrency={CONCURRENCY}",
        "large": f"{large} images, max_concurrency={CONCURRENCY}",
        "scale_1000": f"1000 images, max_concurrency={CONCURRENCY}",
    }
    for name, items in runs.items():
        result.row(
            f"{labels[name]}: max RSS growth",
            f"{fmt_mib(growth[name])} (median of {len(items)}: "
            + ", ".join(fmt_mib(run_["growth_bytes"]) for run_ in items)
            + f"; baseline {fmt_mib(items[0]['baseline_maxrss_bytes'])})",
        )
    result.row(f"growth {large} / growth {small} (both max_concurrency={CONCURRENCY})", f"{ratio:.2f}x")
    if "scale_1000" in growth:
        slope = (growth["scale_1000"] - growth["large"]) / (1000 - large)
        result.figures["growth_per_image_beyond_100_bytes"] = slope
        result.row(
            "growth per extra image (100 -> 1000 images)",
            f"{slope / 1024:.1f} KiB/image (a 2k image is ~{runs['large'][0]['image_bytes_mean'] / 1024:.0f} KiB)",
        )
    retained, manifest_peak = manifest_memory_per_image(1000)
    result.figures["tracemalloc_per_image_bytes"] = {"records_kept": retained, "manifest_build_peak": manifest_peak}
    result.row(
        "tracemalloc: per-image state the operator keeps",
        f"records {retained / 1024:.1f} KiB + manifest build peak {manifest_peak / 1024:.1f} KiB "
        "(Manifest.model_dump_json + encode, as ImageStore.write_manifest does)",
    )
    result.targets = [Target(f"C max-RSS growth {large} images / {small} images", ratio, "<=", LIMIT)]
    result.notes.append(
        "Growth = ru_maxrss after the run - ru_maxrss after imports and a 2-image warm-up, in a fresh process per "
        "run (started through /bin/sh so it does not inherit the parent's peak RSS). "
        f"Both runs use max_concurrency={CONCURRENCY}, below {small}, so they hold the same number of requests "
        "in flight and the ratio measures what the number of images costs, not what concurrency costs."
    )
    return result


def manifest_memory_per_image(count: int) -> tuple[float, float]:
    """Bytes per image that the operator holds for the whole run (its records) and the extra peak of building
    and serializing the manifest at the end, measured with tracemalloc on records shaped like this run's."""
    import tracemalloc

    from airflow_provider_xai_image.records import ImageRecord, Manifest, RequestRecord

    texts = prompts(count, "C")

    def record(index: int) -> RequestRecord:
        prompt = texts[index]
        fingerprint = f"{index:012x}"
        image = ImageRecord(
            uri=f"s3://aws_bench@bench-c-0123456789/run/bench-0123456789ab/generate/p{index:05d}-i00-{fingerprint}.jpg",
            prompt_index=index,
            image_index=0,
            prompt=prompt,
            revised_prompt=None,  # xAI no longer sends one
            model="grok-imagine-image-quality",
            mime_type="image/jpeg",
            bytes=76_000,
            sha256="0" * 64,
            cost_usd_ticks=500_000_000,
        )
        return RequestRecord(
            prompt_index=index,
            prompt=prompt,
            model=image.model,
            fingerprint=fingerprint,
            cost_usd_ticks=image.cost_usd_ticks,
            images=[image],
        )

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        records = {index: record(index) for index in range(count)}
        kept = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        manifest = Manifest.from_records(records.values(), elapsed_seconds=1.0, parameters={})
        data = manifest.model_dump_json().encode()
        peak = tracemalloc.get_traced_memory()[1]
        del manifest, data
    finally:
        tracemalloc.stop()
    return (kept - before) / count, (peak - kept) / count
