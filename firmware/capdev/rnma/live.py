# Live synthetic traffic for simulated devices and the demo. Which shapes are
# playing is read from a small JSON file ({"kinds": ["game", "video"]}) that
# the demo or an operator writes; frames are generated in real time and fed to
# the monitor, as a capture source would.
import json

from capdev import platform
from capdev.rnma import packet as pk
from capdev.rnma import synth

HOUR_MS = 3600000


class SyntheticTraffic:
    def __init__(self, control_path, seed=1):
        self.path = control_path
        self.seed = seed
        self.playing = {}  # kind -> [generator, next (ts, frame) or None]
        self._control = None
        self.frames = 0

    def kinds(self):
        return sorted(self.playing)

    def _read_control(self, now_ms):
        raw = platform.read_file(self.path)
        if raw == self._control:
            return
        self._control = raw
        wanted = []
        if raw:
            try:
                wanted = json.loads(raw).get("kinds", [])
            except (ValueError, AttributeError):
                wanted = []
        for kind in list(self.playing):
            if kind not in wanted:
                del self.playing[kind]
        for i in range(len(wanted)):
            kind = wanted[i]
            if kind in synth.SHAPES and kind not in self.playing:
                gen = synth.shape(kind, now_ms, HOUR_MS, self.seed + i, 10 + synth.SHAPES.index(kind), True)
                self.playing[kind] = [gen, next(gen, None)]

    def pump(self, monitor, now_ms):
        """Feed every frame due by ``now_ms`` (ms on the agent's clock)."""
        self._read_control(now_ms)
        for kind in self.playing:
            entry = self.playing[kind]
            head = entry[1]
            while head is not None and head[0] <= now_ms:
                monitor.packet(head[0], pk.RAW, head[1])
                self.frames += 1
                head = next(entry[0], None)
            entry[1] = head

    def tick(self, monitor, now_ms):
        """Close a sampling period; returns a QoS report when one is due."""
        if monitor._t0 is None:
            monitor._t0 = now_ms  # no traffic yet: start the monitor's clock
        return monitor.tick(now_ms - monitor._t0)
