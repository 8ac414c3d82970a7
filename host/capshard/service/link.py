"""The provider's connection to a broker cluster: one paho client, kept on
one node of the cluster at a time.

paho reconnects only to the node it last had: while it retries, its host
and port cannot be changed. So the client is made with
``reconnect_on_failure=False`` and this link does the reconnecting: when
the connection drops (or a node refuses us), it connects to the next node
of the list, round the list, and backs off (1 s doubling to 10 s) only after
a whole round in which no node took us. With one node this is paho's own
behaviour; with several, a provider follows the cluster when its node goes.
"""

import logging
import threading

log = logging.getLogger("capshard.service")

MIN_DELAY_S = 1.0
MAX_DELAY_S = 10.0


class BrokerLink:
    def __init__(self, client, nodes, keepalive=30):
        """``client``: a paho Client made with reconnect_on_failure=False;
        ``nodes``: [(host, port)], tried in this order from the first."""
        if not nodes:
            raise ValueError("a broker link needs at least one node")
        self.client = client
        self.nodes = [tuple(n) for n in nodes]
        self.keepalive = keepalive
        self.node = 0                     # index of the node in use, or tried last
        self.up = threading.Event()       # connected, and the broker took us
        self._taken = False               # the current attempt was taken (reached up)
        self._lost = threading.Event()    # the connection dropped, or was refused
        self._stop = threading.Event()
        self._thread = None

    @property
    def address(self):
        return self.nodes[self.node]

    # ---- from the client's callbacks ------------------------------------------
    def accepted(self):
        """The broker accepted the connection (on_connect, success)."""
        self._taken = True
        self.up.set()

    def dropped(self):
        """The connection is gone (on_disconnect): for a refused CONNACK too."""
        self.up.clear()
        self._lost.set()

    # ---- lifecycle ------------------------------------------------------------
    def start(self, timeout):
        """Connect in the background; return once a node took us, or raise
        RuntimeError (and stop trying) when none did within ``timeout`` s."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="capshard-broker-link", daemon=True)
        self._thread.start()
        if not self.up.wait(timeout):
            self.stop()
            nodes = ", ".join(f"{h}:{p}" for h, p in self.nodes)
            raise RuntimeError(f"provider could not connect to the broker ({nodes}) within {timeout} s")
        return self

    def stop(self):
        """Disconnect cleanly and stop reconnecting."""
        self._stop.set()
        self._lost.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _run(self):
        delay = MIN_DELAY_S
        refused_in_a_row = 0
        while not self._stop.is_set():
            if self._attempt():
                delay, refused_in_a_row = MIN_DELAY_S, 0
            else:
                refused_in_a_row += 1
            if self._stop.is_set():
                break
            self.node = (self.node + 1) % len(self.nodes)
            if refused_in_a_row and refused_in_a_row % len(self.nodes) == 0:
                self._stop.wait(delay)   # a whole round refused us
                delay = min(delay * 2, MAX_DELAY_S)

    def _attempt(self):
        """Connect to the current node and hold the connection until it drops
        or the link stops. True when the node took us."""
        host, port = self.address
        self._taken = False
        self._lost.clear()
        try:
            self.client.connect(host, port, keepalive=self.keepalive)
        except OSError as e:
            log.warning("broker %s:%s unreachable: %s", host, port, e)
            return False
        self.client.loop_start()
        self._lost.wait()
        if self._stop.is_set():
            self.client.disconnect()   # sent by paho's thread, which then ends
        self.client.loop_stop()
        # A dropped link leaves paho "connection lost", in which it refuses a
        # new host; disconnect() marks it closed (nothing is sent: no socket).
        self.client.disconnect()
        if self._taken and not self._stop.is_set():
            log.warning("lost the broker %s:%s; reconnecting%s", host, port,
                        " to the next node" if len(self.nodes) > 1 else "")
        return self._taken
