"""Wall time of the full default conformance run, as a user runs it.

    python benchmarks/suite_time.py [--impl impl] [--repeat 3] [--profile ci]

Prints one line per run and the best and median wall times; the target for
the bundled reference with the ci profile is <= 10 s on a 2-core machine.
Timing lives here, never in a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", default="impl")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", default="ci")
    args = parser.parse_args(argv)
    command = [sys.executable, "-m", "conformance", "--impl", args.impl, "--profile", args.profile]
    environment = {k: v for k, v in os.environ.items() if k != "ATTENTION_IMPL"}
    times = []
    for attempt in range(1, args.repeat + 1):
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        summary = [line for line in done.stdout.splitlines() if line.startswith("VERDICT")]
        print(f"run {attempt}: {elapsed:6.2f} s  exit {done.returncode}  {summary[0] if summary else done.stdout[-200:]}")
    print(f"{args.impl} with profile {args.profile}: best {min(times):.2f} s, median {statistics.median(times):.2f} s "
          f"over {len(times)} runs ({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
