# vpn.auth: a RADIUS PAP client (RFC 2865). Non-blocking: authorize() sends
# an Access-Request and returns None (pending) until step() has seen the
# answer or given up after the retries; then True/False. Retransmissions
# reuse the id and authenticator (RFC 2865 2.5) so the server de-duplicates.
import socket

from capdev import platform
from capdev.shards import sdk
from capdev.shards.vpn import radius

ACCEPT = "accept"
REJECT = "reject"
TIMEOUT = "timeout"


class Shard(sdk.Shard):
    period_ms = 50

    def start(self):
        self.sock = None
        self.server = None
        self.secret = b""
        self._ident = platform.random_below(256)
        self._req = None  # the request in flight
        self._done = {}  # (user, password) -> result, until authorize() collects it
        self.counts = {ACCEPT: 0, REJECT: 0, TIMEOUT: 0, "retransmits": 0, "bad_answers": 0}
        self.last = None

    def attach(self, server, secret, nas_id="capshard", timeout_ms=1000, retries=2):
        if not secret:
            raise ValueError("RADIUS shared secret must not be empty")
        self.detach()
        self.server = socket.getaddrinfo(server[0], server[1], 0, socket.SOCK_DGRAM)[0][-1]
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.nas_id = nas_id.encode()
        self.timeout_ms = timeout_ms
        self.retries = retries
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(socket.getaddrinfo("0.0.0.0", 0, 0, socket.SOCK_DGRAM)[0][-1])
        s.setblocking(False)
        self.sock = s
        return self

    def authorize(self, user, password):
        """True / False once answered, None while the request is in flight."""
        key = (user, password)
        if key in self._done:
            return self._done.pop(key)["result"] == ACCEPT
        if self._req is None:
            self._send_new(user, password)
        return None

    def _send_new(self, user, password):
        self._ident = (self._ident + 1) & 0xFF
        auth = platform.random_bytes(16)
        pkt = radius.access_request(self._ident, self.secret, auth, user.encode(), password.encode(),
                                    self.nas_id)
        self._req = {"key": (user, password), "id": self._ident, "auth": auth, "pkt": pkt,
                     "tries": 1, "at": self.clock.ticks_ms()}
        self._transmit()

    def _transmit(self):
        try:
            self.sock.sendto(self._req["pkt"], self.server)
        except OSError:
            pass  # counts as a lost packet: the timeout retries it

    def _finish(self, result, reason):
        req = self._req
        self._req = None
        self.counts[result] += 1
        self.last = {"user": req["key"][0], "result": result, "reason": reason, "tries": req["tries"]}
        self._done[req["key"]] = self.last

    def step(self):
        if self._req is None:
            return
        while True:
            try:
                data, addr = self.sock.recvfrom(radius.MAX_PACKET)
            except OSError:
                break
            if addr != self.server or self._req is None:
                continue
            try:
                code, msg = radius.check_response(data, self.secret, self._req["auth"], self._req["id"])
            except radius.RadiusError as e:
                # RFC 2865: silently discard; remember why for the operator.
                self.counts["bad_answers"] += 1
                self._req["bad"] = str(e)
                continue
            self._finish(ACCEPT if code == radius.ACCESS_ACCEPT else REJECT, msg)
            return
        now = self.clock.ticks_ms()
        if self.clock.ticks_diff(now, self._req["at"]) < self.timeout_ms:
            return
        if self._req["tries"] > self.retries:
            why = "no valid answer after " + str(self._req["tries"]) + " tries"
            if self._req.get("bad"):
                why += "; last bad answer: " + self._req["bad"]
            else:
                why += " (server down, or it drops us for a wrong shared secret)"
            self._finish(TIMEOUT, why)
            return
        self._req["tries"] += 1
        self._req["at"] = now
        self.counts["retransmits"] += 1
        self._transmit()

    def verify(self, user, password, sleep_ms=5):
        """Blocking form for tools and tests: the final result dict."""
        while True:
            verdict = self.authorize(user, password)
            if verdict is not None:
                return self.last
            self.step()
            platform.sleep_ms(sleep_ms)

    def stop(self):
        self.detach()

    def detach(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def health(self):
        out = {"ok": True, "pending": self._req is not None}
        for k in self.counts:
            out[k] = self.counts[k]
        return out
