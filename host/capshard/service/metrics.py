"""Prometheus metrics of one provider service, on its own registry (so several
services can live in one process, as in the tests)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

OUTCOMES = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT")


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.devices_online = Gauge("capshard_devices_online", "Devices connected now", registry=r)
        self.reports = Counter("capshard_reports_received", "Device reports received", ["kind"], registry=r)
        self.decision_latency = Histogram(
            "capshard_decision_latency_seconds", "From taking a device's work to the instruction being sent "
            "(allocation, store, signing)", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.instructions_sent = Counter("capshard_instructions_sent", "Instructions published, by kind",
                                         ["kind"], registry=r)
        self.instructions = Counter("capshard_instructions", "Instructions by outcome", ["outcome"], registry=r)
        self.activations = Counter("capshard_shard_activations", "Shard activations acked by devices",
                                   ["shard"], registry=r)
        self.failovers = Counter("capshard_shard_failovers", "Shard failovers reported by devices",
                                 ["shard"], registry=r)
        self.preemptions = Counter("capshard_preemptions", "Running shards preempted by a new plan", registry=r)
        self.stale_writes = Counter("capshard_stale_desired_writes", "Desired-state writes refused as stale "
                                    "(and retried)", registry=r)
        self.rejected_messages = Counter("capshard_rejected_messages", "Device messages dropped as invalid",
                                         registry=r)
        for o in OUTCOMES:
            self.instructions.labels(o)   # every outcome shows, even at zero
        self._server = None

    def serve(self, port, addr="127.0.0.1"):
        """Start the /metrics endpoint; returns the port it listens on."""
        self._server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return self._server.server_port

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def text(self):
        return generate_latest(self.registry).decode()
