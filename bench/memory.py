"""C. Flat memory: RSS growth while a task stores 1,000 vs 20,000 small images, each run in a fresh process.

Two tasks: XaiGenerateImagesOperator (one request per image, zero latency) and XaiStoreBatchResultsOperator
(a finished batch job's results, base64 in the result pages). Images are the emulator's smallest (1k,
2:1: 1024x512 JPEGs of ~13 kB) and go to a ``file://`` folder on local disk, so that the figure is the
task's own memory, not an S3 client's connection pools or moto's.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    BenchResult,
    Servers,
    Target,
    execute,
    fmt_mib,
    make_context,
    maxrss_bytes,
    measure,
    median,
    prompts,
    rss_bytes,
    run_child,
    say,
)

SIZES = (1_000, 20_000)
QUICK_SIZES = (200, 2_000)
#: Below the smaller run's image count: both runs hold the same number of requests in flight.
CONCURRENCY = 8
#: Images of the run that warms a child process up (every worker thread of the pool used).
WARM_UP_IMAGES = 2 * CONCURRENCY
RATIO_LIMIT = 1.2
GROWTH_LIMIT_MIB = 32.0
IMAGE: dict[str, Any] = {"resolution": "1k", "aspect_ratio": "2:1"}
KINDS = {"generate": "XaiGenerateImagesOperator", "store": "XaiStoreBatchResultsOperator"}


def child(
    servers: Servers, kind: str, images: int, xcom: bool, batch_ids: tuple[str, str] | None = None
) -> dict[str, Any]:
    """In a fresh process: import, run the task on a few prompts (its one-time costs: thread pool, HTTP and
    storage clients, the ledger), then on ``images`` prompts into a local folder. Peak RSS growth over the
    imported process, and over the warmed-up one.

    The prompts (the task's input, which Airflow hands it rendered) are made before the baselines.

    :param kind: ``generate`` or ``store``.
    :param images: How many images the measured run stores.
    :param xcom: Return the image URIs (the XCom value), as by default; False: ``do_xcom_push=False``.
    :param batch_ids: For ``store``: the finished batch jobs of the warm-up and of the measured run.
    """
    import airflow_provider_xai_image.hooks.xai  # noqa: F401  (module code is not the task's memory)
    from airflow_provider_xai_image.operators.batch import XaiStoreBatchResultsOperator
    from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
    from airflow_provider_xai_image.storage.layout import safe_segment

    output_uri = f"file://{tempfile.mkdtemp(prefix=f'bench-c-{kind}-')}/"
    texts = prompts(images, f"C-{kind}")
    warm_texts = prompts(WARM_UP_IMAGES, "C-warm")

    def operator(task_prompts: list[str], task_id: str) -> Any:
        if kind == "generate":
            return XaiGenerateImagesOperator(
                task_id=task_id,
                prompt=task_prompts,
                output_uri=output_uri,
                max_concurrency=CONCURRENCY,
                deferrable=False,
                do_xcom_push=xcom,
                **IMAGE,
            )
        assert batch_ids is not None
        return XaiStoreBatchResultsOperator(
            task_id=task_id,
            batch_id=batch_ids[0] if task_id == "warm" else batch_ids[1],
            prompts=task_prompts,
            output_uri=output_uri,
            max_concurrency=CONCURRENCY,
            do_xcom_push=xcom,
        )

    gc.collect()
    imported = maxrss_bytes()
    execute(operator(warm_texts, "warm"), make_context("warm"))
    gc.collect()
    warmed = maxrss_bytes()
    task, task_context = operator(texts, kind), make_context(kind)
    with measure() as span:
        uris = execute(task, task_context)
    peak = maxrss_bytes()
    folder = Path(output_uri.removeprefix("file://")) / safe_segment(task_context["run_id"]) / kind
    stored = sum(name.endswith(".jpg") for name in os.listdir(folder))
    if stored != images or len(uris) != (images if xcom else 0):
        raise RuntimeError(f"expected {images} images, the task stored {stored} and returned {len(uris)} URIs")
    return {
        "kind": kind,
        "images": images,
        "xcom": xcom,
        "imported_maxrss_bytes": imported,
        "warmed_maxrss_bytes": warmed,
        "peak_maxrss_bytes": peak,
        "growth_bytes": peak - imported,
        "growth_after_warm_up_bytes": peak - warmed,
        "rss_after_bytes": rss_bytes(),
        "wall_s": span.wall,
        "cpu_s": span.cpu,
    }


def submit_batch(texts: list[str]) -> str:
    """A batch job of ``texts`` (1k 2:1 base64 images), submitted as the operator does, and finished."""
    from airflow_provider_xai_image.api.batch_files import batch_files
    from airflow_provider_xai_image.hooks.xai import XaiHook

    hook = XaiHook()
    lines = [
        (str(index), hook.build_request(text, response_format="b64_json", **IMAGE)) for index, text in enumerate(texts)
    ]
    [(content, _count)] = list(batch_files(lines))
    batch_id = hook.create_batch(f"bench-c-{len(texts)}", hook.upload_batch_file("c.jsonl", content)).batch_id
    while (batch := hook.get_batch(batch_id)).is_validating or batch.state.num_pending:
        time.sleep(0.2)
    return batch_id


def run(servers: Servers, quick: bool) -> BenchResult:
    small, large = QUICK_SIZES if quick else SIZES
    result = BenchResult(
        "C", f"RSS growth storing {small:,} vs {large:,} small images (1k 2:1 JPEG, zero latency, file://)"
    )
    servers.emulator.reset(latency=0.0, batch_seconds=1.0)
    warm_batch = submit_batch(prompts(WARM_UP_IMAGES, "C-warm"))
    runs: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        for xcom in (True, False):
            for images, repeats in ((small, 2 if xcom else 1), (large, 1)):
                batch_ids = (warm_batch, submit_batch(prompts(images, f"C-{kind}"))) if kind == "store" else None
                for attempt in range(repeats):
                    say(
                        f"  C: {kind}{'' if xcom else ' (do_xcom_push=False)'}, run {attempt + 1}/{repeats}: {images:,}"
                    )
                    payload = {"kind": kind, "images": images, "xcom": xcom, "batch_ids": batch_ids}
                    runs.setdefault(f"{kind}/{xcom}/{images}", []).append(
                        run_child("bench.memory:child", payload, timeout=1800.0)
                    )
    result.figures = {"image": IMAGE, "max_concurrency": CONCURRENCY, "output": "file://", "runs": runs}

    def growth(kind: str, xcom: bool, images: int, name: str = "growth_bytes") -> float:
        return median([float(item[name]) for item in runs[f"{kind}/{xcom}/{images}"]])

    for kind, operator in KINDS.items():
        for xcom in (True, False):
            label = operator if xcom else f"{operator}(do_xcom_push=False)"
            ratio = growth(kind, xcom, large) / max(growth(kind, xcom, small), 1.0)
            warmed = {images: growth(kind, xcom, images, "growth_after_warm_up_bytes") for images in (small, large)}
            slope = (warmed[large] - warmed[small]) / (large - small)
            result.figures[f"{kind}{'' if xcom else '_no_xcom'}_ratio"] = ratio
            result.row(
                f"{label}: max RSS growth",
                f"{fmt_mib(growth(kind, xcom, small))} at {small:,} images, {fmt_mib(growth(kind, xcom, large))} at "
                f"{large:,} = {ratio:.2f}x (after the warm-up: {fmt_mib(warmed[small])}, {fmt_mib(warmed[large])}: "
                f"{slope:.0f} bytes/image; {large / runs[f'{kind}/{xcom}/{large}'][0]['wall_s']:.0f} images/s)",
            )
            name = f"C {kind}{'' if xcom else ' without XCom value'}"
            result.targets.append(
                Target(f"{name}: max-RSS growth {large:,} / {small:,} images", ratio, "<=", RATIO_LIMIT)
            )
            if xcom:
                result.targets.append(
                    Target(
                        f"{name}: max-RSS growth at {large:,} images",
                        growth(kind, xcom, large) / 2**20,
                        "<",
                        GROWTH_LIMIT_MIB,
                        " MiB",
                    )
                )
    result.notes.append(
        "Growth = ru_maxrss at the end of the run - ru_maxrss of the fresh process once the provider is imported "
        f"(a {WARM_UP_IMAGES}-image run of the same task first pays the one-time costs: thread pool, HTTP and "
        "storage clients, the ledger); 'after the warm-up' takes the baseline after that run. Each child is "
        f"started through /bin/sh (no inherited peak RSS); max_concurrency={CONCURRENCY} for both sizes; median of "
        "2 runs at the small size. The prompts (the task's input) exist before the baselines."
    )
    from airflow_provider_xai_image.ledger.record_ledger import LEDGER_CACHE_KIB

    result.notes.append(
        "What a task holds per image: a few bytes of progress per prompt; records go to a temporary SQLite file "
        f"(page cache {LEDGER_CACHE_KIB} KiB) and manifest.json is streamed from it into a spool file. What still "
        "grows: the returned URI list (the XCom value, ~150 bytes an image here; do_xcom_push=False builds none) "
        "and the allocator's fragmentation over a longer run (glibc arenas of 8 threads)."
    )
    return result
