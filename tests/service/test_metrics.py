"""The Grafana dashboard only charts metrics the service exposes."""

import json
import re

from capshard.paths import REPO_ROOT
from capshard.service.metrics import Metrics


def test_dashboard_queries_only_exposed_metrics():
    m = Metrics()
    for c in (m.reports.labels("qos"), m.activations.labels("s"), m.failovers.labels("s"),
              m.instructions_sent.labels("full"), m.preemptions, m.stale_writes, m.rejected_messages):
        c.inc()
    m.decision_latency.observe(0.01)
    m.devices_online.set(3)
    exposed = set(re.findall(r"^(capshard_\w+?)(?:\{| )", m.text(), re.M))
    with open(f"{REPO_ROOT}/tools/grafana/capshard-dashboard.json") as f:
        dashboard = json.load(f)
    used = set(re.findall(r"capshard_\w+", json.dumps([t["expr"] for p in dashboard["panels"]
                                                       for t in p["targets"]])))
    assert used and used <= exposed, used - exposed
    for needed in ("capshard_devices_online", "capshard_reports_received_total",
                   "capshard_decision_latency_seconds_bucket", "capshard_instructions_total",
                   "capshard_shard_activations_total", "capshard_shard_failovers_total", "capshard_preemptions_total"):
        assert needed in used
    assert 'capshard_devices_online 3.0' in m.text()
