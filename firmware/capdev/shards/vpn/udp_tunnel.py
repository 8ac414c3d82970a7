# vpn.tunnel: UDP encapsulation (the protocol is in tunnel.py). The shard owns
# a non-blocking UDP socket; step() moves datagrams between it and the inner
# queues. The data path (the VPN link) attaches the peer, key, cipher and
# authoriser; before that the shard idles.
import socket

from capdev.shards import sdk
from capdev.shards.vpn import tunnel

MAX_BATCH = 16  # datagrams handled per step, so a flood cannot hold the loop
QUEUE_MAX = 32  # inner datagrams waiting to be read; older ones are dropped


def _resolve(host, port):
    return socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]


class Shard(sdk.Shard):
    period_ms = 20

    def start(self):
        self.ep = None
        self.sock = None
        self.peer = None
        self.inbox = []
        self.dropped = 0
        self.last_error = ""

    def attach(self, psk, role, bind=("127.0.0.1", 0), peer=None, **opts):
        """Open the socket and build the endpoint. ``peer`` (host, port) is
        required for the initiator; a responder answers whoever spoke last."""
        self.detach()
        self.ep = tunnel.Endpoint(role, psk, self.clock, **opts)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(_resolve(bind[0], bind[1]))
        s.setblocking(False)
        self.sock = s
        self.peer = _resolve(peer[0], peer[1]) if peer else None
        return self

    def local_port(self):
        # getsockname is missing on some MicroPython ports; the caller may pass a fixed port.
        try:
            return self.sock.getsockname()[1]
        except (AttributeError, OSError):
            return None

    def set_cipher(self, cipher_shard):
        """Bind the cipher slot's shard; "kept", "reestablish", "same" or "none"."""
        verdict = self.ep.set_cipher(cipher_shard)
        if verdict == "reestablish" and self.ep.role == tunnel.INITIATOR and self.peer is not None:
            self._send(self.ep.connect())
        return verdict

    def connect(self):
        self._send(self.ep.connect())

    def send(self, payload):
        """Queue one inner datagram into the tunnel; False if it was dropped."""
        if self.ep is None:
            return False
        return self._send(self.ep.send(payload))

    def recv(self):
        """The oldest inner datagram received, or None."""
        if self.inbox:
            return self.inbox.pop(0)
        return None

    def _send(self, dgram):
        if dgram is None or self.peer is None:
            return False
        try:
            self.sock.sendto(dgram, self.peer)
            return True
        except OSError as e:
            self.last_error = "sendto: errno " + str(e.args[0] if e.args else "?")
            return False

    def step(self):
        if self.ep is None:
            return
        for _ in range(MAX_BATCH):
            try:
                # mtu + 1: a bigger datagram arrives truncated and is refused as too big
                dgram, addr = self.sock.recvfrom(self.ep.mtu + 1)
            except OSError:
                break  # EAGAIN: nothing more now
            if self.ep.role == tunnel.RESPONDER:
                self.peer = addr
            elif addr != self.peer:
                self.ep.stats["stale"] += 1  # not from our peer
                continue
            payload, reply = self.ep.receive(dgram)
            if payload is not None:
                if len(self.inbox) >= QUEUE_MAX:
                    self.inbox.pop(0)
                    self.dropped += 1
                self.inbox.append(payload)
            if reply is not None:
                self._send(reply)
        self._send(self.ep.poll())

    def stop(self):
        self.detach()

    def detach(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.ep = None

    def health(self):
        if self.ep is None:
            return {"ok": True, "state": "unattached"}
        out = {"ok": True, "state": self.ep.state, "epoch": self.ep.epoch, "suite": self.ep.suite,
               "dropped": self.dropped}
        for k in self.ep.stats:
            out[k] = self.ep.stats[k]
        return out
