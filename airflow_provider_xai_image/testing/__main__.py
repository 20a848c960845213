"""Run the xAI emulator standalone: ``python -m airflow_provider_xai_image.testing --port 8010``.

Prints ``XAI_BASE_URL=...``, ``XAI_API_KEY=...`` and ``AIRFLOW_CONN_XAI_DEFAULT=...`` lines, then
serves until SIGTERM or SIGINT. Drive it with ``/_emulator/config``, ``/_emulator/stats``,
``/_emulator/reset``, ``/_emulator/expire-images`` and ``/_emulator/batches/{id}:expire`` or
``:refuse``.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence
from types import FrameType

from airflow_provider_xai_image.testing.server import XaiEmulator


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_xai_image.testing", description="Serve the xAI image API emulator."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: 0, any free port)")
    parser.add_argument("--api-key", help="API key to accept (default: a random xai-emu-... key)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every API call")
    parser.add_argument("--image-ttl", type=float, default=3600.0, help="seconds temporary image URLs live")
    parser.add_argument("--batch-seconds", type=float, default=1.0, help="seconds a batch request takes")
    parser.add_argument(
        "--batch-validation-seconds", type=float, default=0.2, help="seconds xAI takes to validate a batch file"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    emulator = XaiEmulator(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        latency=args.latency,
        image_ttl=args.image_ttl,
        batch_seconds=args.batch_seconds,
        batch_validation_seconds=args.batch_validation_seconds,
    )
    with emulator:
        print(f"XAI_BASE_URL={emulator.base_url}", flush=True)
        print(f"XAI_API_KEY={emulator.api_key}", flush=True)
        print(f"AIRFLOW_CONN_XAI_DEFAULT={emulator.connection_uri()}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
