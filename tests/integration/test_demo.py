"""`make demo` is the main job: it must run unattended to the end, well
under three minutes, and every scenario must produce its allocation change."""

import os
import subprocess
import sys
import time

from capshard.paths import REPO_ROOT


def test_demo_runs_every_scenario_to_its_expected_allocation(tmp_path):
    chart = tmp_path / "demo.png"
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "capshard", "demo", "--chart", str(chart)],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                       env=dict(os.environ, PYTHONUNBUFFERED="1"))
    took = time.monotonic() - started
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "OK: 9 of 9 scenarios produced the expected allocation" in p.stdout
    # and no shard was refused on the way (a first load once counted the
    # runtime's one-off name-table growth against the shard's budget)
    assert "over its mem_kb" not in p.stdout + p.stderr
    assert chart.exists() and chart.stat().st_size > 10_000
    assert took < 180
