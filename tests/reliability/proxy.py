"""A TCP proxy the test controls, to put a real network fault between a
device and the broker: forward, blackhole (a half-open link), delay, reset.

Loopback only and bounded: at most MAX_CONNECTIONS at once, reads of at most
CHUNK bytes, one thread per connection. Usage:

    p = TcpProxy(broker.host, broker.port).start()
    ... point the device at p.port ...
    p.blackhole(); ...; p.forward()
    p.reset()          # RST every open connection
    p.delay(200)       # every chunk waits 200 ms, order kept
    p.stop()

Blackhole accepts new connections and drops every byte both ways, and hides
a close by either side from the other, as a dead NAT entry or a pulled cable
does: each endpoint only learns of it from its own keepalive. A connection
that lost bytes cannot carry on after ``forward()`` (its byte stream is
broken): it is reset then, as a NAT that lost the connection's state answers
its next packet with RST; new connections are forwarded again.
"""

import select
import socket
import struct
import threading
import time

LOOPBACK = "127.0.0.1"
MAX_CONNECTIONS = 64
CHUNK = 65536
POLL_S = 0.05


class ProxyError(RuntimeError):
    """The proxy was asked for something it does not do (the text says what)."""


class _Link:
    def __init__(self, client, upstream, blackholed):
        self.client, self.upstream = client, upstream
        self.blackholed = blackholed
        self.closed = False


class TcpProxy:
    def __init__(self, upstream_host, upstream_port, port=0):
        if upstream_host not in (LOOPBACK, "localhost"):
            raise ProxyError(f"upstream must be on loopback, not {upstream_host!r}")
        self.upstream = (LOOPBACK, int(upstream_port))
        self._listen_port = port
        self.host = LOOPBACK
        self.port = None
        self._lock = threading.Lock()
        self._links = []
        self._mode = "forward"
        self._delay_s = 0.0
        self._stopping = threading.Event()
        self._sock = None
        self._acceptor = None
        # What the test asserts on.
        self.stats = {"accepted": 0, "refused": 0, "dropped_bytes": 0, "client_closed": 0,
                      "upstream_closed": 0, "reset": 0}

    # ---- control ---------------------------------------------------------------
    def start(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, self._listen_port))
        self._sock.listen(16)
        self._sock.settimeout(POLL_S * 4)
        self.port = self._sock.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}", daemon=True)
        self._acceptor.start()
        return self

    def forward(self):
        """Forward new connections again (and stop delaying); reset the
        connections that lost bytes in a blackhole."""
        with self._lock:
            self._mode = "forward"
            self._delay_s = 0.0
            broken = [link for link in self._links if link.blackholed]
            self._links = [link for link in self._links if not link.blackholed]
        for link in broken:
            self._close(link, rst=True)
            self.stats["reset"] += 1

    def blackhole(self):
        """Drop every byte of every open and new connection, both ways."""
        with self._lock:
            self._mode = "blackhole"
            for link in self._links:
                link.blackholed = True

    def delay(self, ms):
        """Forward, each chunk held ``ms`` milliseconds (0..10000)."""
        if not 0 <= ms <= 10000:
            raise ProxyError(f"delay must be 0..10000 ms, not {ms}")
        with self._lock:
            self._mode = "forward"
            self._delay_s = ms / 1000

    def reset(self):
        """Close every open connection with a TCP RST; new ones are still accepted."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            self._close(link, rst=True)
            self.stats["reset"] += 1

    def open_connections(self):
        with self._lock:
            return len(self._links)

    def stop(self):
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(2)
        if self._sock is not None:
            self._sock.close()
        self.reset()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- inside ----------------------------------------------------------------
    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                client, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                full = len(self._links) >= MAX_CONNECTIONS
                mode = self._mode
            if full:
                self.stats["refused"] += 1
                client.close()
                continue
            upstream = None
            if mode == "forward":
                try:
                    upstream = socket.create_connection(self.upstream, timeout=2)
                except OSError:
                    client.close()  # the broker is down: so is the proxy, to the device
                    continue
            for s in (client, upstream):
                if s is not None:
                    s.settimeout(None)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, upstream, mode == "blackhole")
            with self._lock:
                self._links.append(link)
            self.stats["accepted"] += 1
            threading.Thread(target=self._pump, args=(link,), daemon=True).start()

    def _pump(self, link):
        peer = {link.client: link.upstream, link.upstream: link.client}
        watched = [s for s in (link.client, link.upstream) if s is not None]
        try:
            while not link.closed and watched and not self._stopping.is_set():
                try:
                    ready, _, _ = select.select(watched, [], [], POLL_S)
                except (OSError, ValueError):
                    return
                for s in ready:
                    try:
                        data = s.recv(CHUNK)
                    except OSError:
                        data = b""
                    if not data:
                        self.stats["client_closed" if s is link.client else "upstream_closed"] += 1
                        if link.blackholed and s is link.upstream:
                            watched.remove(s)  # hidden from the device: it must notice by itself
                            continue
                        return
                    if link.blackholed:
                        self.stats["dropped_bytes"] += len(data)
                        continue
                    if self._delay_s:
                        time.sleep(self._delay_s)
                    try:
                        peer[s].sendall(data)
                    except OSError:
                        return
        finally:
            with self._lock:
                if link in self._links:
                    self._links.remove(link)
            self._close(link)

    @staticmethod
    def _close(link, rst=False):
        link.closed = True
        for s in (link.client, link.upstream):
            if s is None:
                continue
            try:
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            except OSError:
                pass
