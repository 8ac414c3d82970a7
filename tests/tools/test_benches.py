"""The benchmark commands work end to end and end with the line their issue
fixed, run at a tiny size (``--smoke``) against the real broker, provider,
PostgreSQL and device agents. What they measure is not checked here:
figures come from the benches themselves (docs/performance.md)."""

import os
import re
import subprocess
import sys

import pytest

from capshard.paths import REPO_ROOT

BENCH = os.path.join(REPO_ROOT, "tools", "bench")
NUMBER = r"\d+(\.\d+)?"


@pytest.mark.parametrize("args, last_line, also", [
    (["bench_fleet.py"], rf"fleet: reports_per_s={NUMBER} broker_raw_per_s={NUMBER} ratio={NUMBER} "
                         rf"speedup_2={NUMBER} speedup_4={NUMBER}", [r"lost 0"]),
    (["bench_e2e.py", "--store-io"], rf"e2e: devices=10 p50_ms={NUMBER} p99_ms={NUMBER}",
     [r"lost 0", rf"store: {NUMBER} transactions and {NUMBER} KiB written to disk per report",
      rf"{NUMBER}/report  INSERT INTO events"]),
    (["bench_device.py"], rf"device: heap_steady_kb={NUMBER} heap_peak_kb={NUMBER} min_heapsize_kb=\d+",
     [r"\[romfs\] steady run at 256 KiB: heap_used"]),
])
def test_bench_runs_and_ends_with_its_line(args, last_line, also):
    script, *options = args
    run = subprocess.run([sys.executable, os.path.join(BENCH, script), "--smoke", *options], capture_output=True,
                         text=True, timeout=240, cwd=REPO_ROOT)
    out = run.stdout.strip().splitlines()
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert out and re.fullmatch(last_line, out[-1]), out[-5:]
    for pattern in also:
        assert re.search(pattern, run.stdout), (pattern, run.stdout[-2000:])
