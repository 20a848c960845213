"""Entry point of a benchmark's child process: ``python -m bench._child module:function '<json>' result.json``."""

from __future__ import annotations

import sys

from bench.harness import child_main

if __name__ == "__main__":
    child_main(sys.argv[1:])
