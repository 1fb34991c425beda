"""Run every benchmark script in this folder, one after another (``make bench``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Run ``bench_*.py`` scripts; return the number that failed."""
    failed = 0
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n=== {script.name} ===", flush=True)
        cmd = [sys.executable, str(script)]
        if script.name == "bench_app.py":
            cmd = ["xvfb-run", "-a", *cmd]
        failed += subprocess.call(cmd) != 0
    return failed


if __name__ == "__main__":
    sys.exit(main())
