# Device-local accounting for a gateway without packet capture (an ESP32):
# the agent's own sockets and forwarding hooks report what they moved, and
# each call becomes one packet observation without payload.
from capdev.rnma import packet as pk


class Accounting:
    def __init__(self, monitor, local_addr=b"\x00\x00\x00\x00"):
        self.monitor = monitor
        self.local = local_addr

    def sent(self, proto, lport, remote, rport, nbytes, payload=b"", now=None):
        """The device sent nbytes (IP length) from local:lport to remote:rport."""
        self._obs(proto, self.local, lport, remote, rport, nbytes, payload, now)

    def received(self, proto, lport, remote, rport, nbytes, payload=b"", now=None):
        self._obs(proto, remote, rport, self.local, lport, nbytes, payload, now)

    def forwarded(self, proto, src, sport, dst, dport, nbytes, payload=b"", now=None):
        """A forwarding hook saw a packet pass through the gateway."""
        self._obs(proto, src, sport, dst, dport, nbytes, payload, now)

    def _obs(self, proto, src, sport, dst, dport, nbytes, payload, now):
        if proto not in (pk.TCP, pk.UDP) or len(src) != len(dst) or nbytes < 0:
            self.monitor.note("source", "accounting call with bad arguments")
            return
        if now is None:
            now = self.monitor.live_now()
        self.monitor.observe(now, (proto, src, sport, dst, dport, nbytes, 0, 0,
                                   memoryview(payload), 0))
