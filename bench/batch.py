"""E. A large Batch API run end to end with XaiBatchGenerateImagesOperator, stored to S3: the prompts go up as
one JSONL input file (``POST /v1/files``), one batch is created from it, the worker polls it, then stores
every image (base64 results by default)."""

from __future__ import annotations

import gc
import time
from typing import Any

from bench.harness import (
    BenchResult,
    Servers,
    Target,
    execute,
    fmt_mib,
    make_context,
    maxrss_bytes,
    process_cpu_seconds,
    prompts,
    rss_bytes,
    run_child,
    run_generate,
    say,
)

BATCH_SECONDS = 2.0
POLL_INTERVAL = 0.5
CONCURRENCY = 16
LIMIT = 30.0


def timed_batch_operator(servers: Servers, **kwargs: Any) -> Any:
    """The batch operator, unchanged, with the start and end of its submit, wait and store phases recorded."""
    from airflow_provider_xai_image.operators.batch import XaiBatchGenerateImagesOperator

    pids = servers.pids()

    class TimedBatchOperator(XaiBatchGenerateImagesOperator):
        phases: dict[str, dict[str, Any]]

        def _timed(self, phase: str, method: Any, *args: Any) -> Any:
            started = time.perf_counter(), time.process_time(), {n: process_cpu_seconds(p) for n, p in pids.items()}
            try:
                return method(*args)
            finally:
                wall, cpu, servers_cpu = started
                self.phases[phase] = {
                    "wall_s": time.perf_counter() - wall,
                    "cpu_s": time.process_time() - cpu,
                    "server_cpu_s": {n: process_cpu_seconds(p) - servers_cpu[n] for n, p in pids.items()},
                }

        def submit(self, context: Any, requests: Any) -> Any:
            return self._timed("submit", super().submit, context, requests)

        def wait(self, batches: Any, counts: Any) -> Any:
            return self._timed("wait", super().wait, batches, counts)

        def store(self, context: Any, batches: Any) -> Any:
            return self._timed("store", super().store, context, batches)

    operator = TimedBatchOperator(**kwargs)
    operator.phases = {}
    return operator


def input_files(operator: Any, texts: list[str]) -> list[int]:
    """The size of each JSONL input file the operator uploads for ``texts`` (built again, outside the timing)."""
    from airflow_provider_xai_image.api.batch_files import batch_files

    requests = operator.build_requests(texts)
    return [len(content) for content, _ in batch_files((str(index), request) for index, request in requests.items())]


def child(servers: Servers, requests: int) -> dict[str, Any]:
    """In a fresh process: warm up, then run the batch operator on ``requests`` prompts and time its phases."""
    bucket = servers.new_bucket("bench-e")
    run_generate(servers, bucket, prompts(4, "E-warm"), max_concurrency=4)
    gc.collect()
    baseline = maxrss_bytes()
    before = servers.emulator.stats()
    operator = timed_batch_operator(
        servers,
        task_id="batch",
        prompts=prompts(requests, "E"),
        output_uri=servers.output_uri(bucket),
        wait_for_completion=True,
        deferrable=False,
        poll_interval=POLL_INTERVAL,
        max_concurrency=CONCURRENCY,
    )
    context = make_context("batch")
    started = time.perf_counter()
    uris = execute(operator, context)
    total = time.perf_counter() - started
    if len(uris) != requests:
        raise RuntimeError(f"expected {requests} images from the batch, got {len(uris)}")
    after = servers.emulator.stats()
    uploaded = {name: after[name] - before[name] for name in ("files_uploaded", "batches_created")}
    if uploaded != {"files_uploaded": 1, "batches_created": 1}:
        raise RuntimeError(f"expected one input file and one batch, the emulator counted {uploaded}")
    return {
        "requests": requests,
        "images_stored": len(uris),
        **uploaded,
        "input_file_bytes": input_files(operator, prompts(requests, "E")),
        "batch_ids": operator.submitted_batch_ids,
        "objects_in_bucket": servers.count_objects(bucket, "run/"),
        "end_to_end_s": total,
        "phases": operator.phases,
        "baseline_maxrss_bytes": baseline,
        "peak_maxrss_bytes": maxrss_bytes(),
        "rss_after_bytes": rss_bytes(),
    }


def run(servers: Servers, quick: bool) -> BenchResult:
    count = 300 if quick else 2000
    title = f"Batch: {count} requests end to end (JSONL file, poll {POLL_INTERVAL:g} s, batch {BATCH_SECONDS:g} s)"
    result = BenchResult("E", title)
    # The emulator's defaults otherwise: 1 batch creation/s, and the input file is validated
    # (batch_validation_seconds, every counter 0) before its requests are queued.
    servers.emulator.reset(latency=0.0, batch_seconds=BATCH_SECONDS)
    say(f"  E: child process: batch of {count} requests, store to moto S3 with max_concurrency={CONCURRENCY}")
    run_ = run_child("bench.batch:child", {"requests": count})
    phases = run_["phases"]
    images = run_["images_stored"]
    store_rate = images / phases["store"]["wall_s"]
    total_rate = images / run_["end_to_end_s"]
    growth = run_["peak_maxrss_bytes"] - run_["baseline_maxrss_bytes"]
    store = phases["store"]
    result.figures = {
        **run_,
        "batch_seconds": BATCH_SECONDS,
        "poll_interval_s": POLL_INTERVAL,
        "max_concurrency": CONCURRENCY,
        "store_images_per_s": store_rate,
        "end_to_end_images_per_s": total_rate,
        "maxrss_growth_bytes": growth,
        "store_cpu_per_image_s": {
            "operator_process": store["cpu_s"] / images,
            **{name: seconds / images for name, seconds in store["server_cpu_s"].items()},
        },
    }
    result.row(
        "phases",
        "submit {:.2f} s, wait {:.2f} s, store {:.2f} s; end to end {:.2f} s".format(
            phases["submit"]["wall_s"], phases["wait"]["wall_s"], store["wall_s"], run_["end_to_end_s"]
        ),
    )
    result.row(
        "submitted",
        f"{run_['files_uploaded']} JSONL file of {fmt_mib(sum(run_['input_file_bytes']))} "
        f"({run_['input_file_bytes'][0] / count:.0f} bytes/request) -> {run_['batches_created']} batch",
    )
    result.row("images stored / s (store phase)", f"{store_rate:.1f}")
    result.row("images stored / s (end to end)", f"{total_rate:.1f}")
    result.row(
        "CPU / image in store phase",
        "operator {:.1f} ms, emulator {:.1f} ms, moto {:.1f} ms".format(
            *(1000 * value for value in result.figures["store_cpu_per_image_s"].values())
        ),
    )
    result.row(
        "peak RSS (child process)",
        f"{fmt_mib(run_['peak_maxrss_bytes'])}, growth {fmt_mib(growth)} over {fmt_mib(run_['baseline_maxrss_bytes'])}",
    )
    result.targets = [Target("E images stored per second (store phase)", store_rate, ">=", LIMIT, " img/s")]
    result.notes.append(
        "Run in a fresh child process (warm-up: a 4-image generate run) so its peak RSS is its own. "
        "All three processes (operator, emulator rendering JPEGs, moto) share the machine's cores."
    )
    result.notes.append(
        "Submitted the way public clients submit to xAI: one JSONL file upload and one batch created from it "
        "(a job over ~100 MB would be split into several batches). Results come back base64-encoded "
        "(response_format='b64_json', the operator's default), so storing downloads nothing."
    )
    return result
