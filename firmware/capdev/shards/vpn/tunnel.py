# The tunnel protocol core (pure: datagrams in, datagrams out; no sockets).
#
# Every datagram starts with a 16-byte header, authenticated as associated
# data:  ver(1) type(1) suite(1) epoch(1) session(4) seq(8, big-endian).
# HELLO / HELLO_ACK carry fresh nonces and an HMAC under the pre-shared key
# (derived from the device key); both ends then derive the session keys with
# HKDF (RFC 5869): salt = both nonces, info = session, epoch and suite.
# DATA / KEEPALIVE / AUTH / AUTH_OK are sealed by the cipher shard with the
# sequence number as nonce. A cipher swap starts a new epoch under the same
# session (no handshake): the tunnel stays up.
from capdev import platform
from capdev.shards.vpn import etm, kdf
from capdev.shards.vpn.replay import ReplayWindow

VERSION = 0xC5
HELLO = 1
HELLO_ACK = 2
DATA = 3
KEEPALIVE = 4
AUTH = 5
AUTH_OK = 6
AUTH_FAIL = 7
HEADER_LEN = 16
NONCE_LEN = 16
HS_TAG_LEN = 32

INITIATOR = "initiator"
RESPONDER = "responder"

IDLE = "idle"
CONNECTING = "connecting"
UP = "up"
DOWN = "down"  # peer silent past dead_ms

COUNTERS = ("sent", "received", "replayed", "tampered", "malformed", "too_big", "refused",
            "unauthorized", "stale", "keepalives_sent", "keepalives_received", "handshakes",
            "rekeys")


def psk_from_device_key(device_key, device_id):
    """The tunnel's pre-shared key: separate from the key that signs instructions."""
    return kdf.hkdf(device_key, b"capshard tunnel psk", device_id.encode(), 32)


def header(kind, suite, epoch, session, seq):
    return bytes((VERSION, kind, suite, epoch)) + session + seq.to_bytes(8, "big")


def parse_header(dgram):
    """(kind, suite, epoch, session, seq) or None if it is not ours."""
    if len(dgram) < HEADER_LEN or dgram[0] != VERSION:
        return None
    return dgram[1], dgram[2], dgram[3], bytes(dgram[4:8]), int.from_bytes(dgram[8:16], "big")


class IntegrityCipher:
    """Adapts a cipher-slot shard without seal/open (the null cipher): HMAC
    only, data in clear, still metered by that shard's process()."""

    suite_id = etm.SUITE_INTEGRITY
    overhead = etm.TAG_LEN

    def __init__(self, shard):
        self.shard = shard
        self.rejected = 0

    def seal(self, suite, nonce, aad, plaintext):
        if hasattr(self.shard, "process") and self.shard.process(plaintext) is None:
            return None
        return suite.seal(nonce, aad, plaintext)

    def open(self, suite, nonce, aad, sealed):
        try:
            return suite.open(nonce, aad, sealed)
        except etm.AuthError:
            self.rejected += 1
            return None


class AnyCipher:
    """A responder's cipher when no shard is bound (the provider's end):
    follows whichever allowed suite the initiator picks, unmetered."""

    suite_id = None
    overhead = etm.TAG_LEN

    def seal(self, suite, nonce, aad, plaintext):
        return suite.seal(nonce, aad, plaintext)

    def open(self, suite, nonce, aad, sealed):
        try:
            return suite.open(nonce, aad, sealed)
        except etm.AuthError:
            return None


def as_cipher(shard):
    if shard is None or hasattr(shard, "seal"):
        return shard
    return IntegrityCipher(shard)


class Endpoint:
    """One end of a tunnel. ``clock`` gives ticks_ms/ticks_diff."""

    def __init__(self, role, psk, clock=platform, mtu=1400, window=64, keepalive_ms=10000,
                 dead_ms=None, retry_ms=1000, suites=None):
        if role not in (INITIATOR, RESPONDER):
            raise ValueError("role must be initiator or responder")
        if len(psk) < 32:
            raise ValueError("tunnel key must be at least 32 bytes")
        if mtu < HEADER_LEN + etm.TAG_LEN + 64 or mtu > 65507:
            raise ValueError("mtu must be " + str(HEADER_LEN + etm.TAG_LEN + 64) + "..65507")
        self.role = role
        self._psk = psk
        self.clock = clock
        self.mtu = mtu
        self.window_size = window
        self.keepalive_ms = keepalive_ms
        self.dead_ms = dead_ms or 3 * keepalive_ms
        self.retry_ms = retry_ms
        self.suites = suites  # suites a responder accepts (None: any known)
        self.stats = {}
        for k in COUNTERS:
            self.stats[k] = 0
        self.state = IDLE
        self.cipher = AnyCipher() if role == RESPONDER else None
        self.authorize = None  # callable(user, password) -> True/False/None (pending)
        self.authorized = None  # the user the peer proved, when authorize is set
        self.auth_result = None  # initiator side: what the peer answered
        self._pending_auth = None
        self._reset_session()

    def _reset_session(self):
        self.session = bytes(4)
        self.epoch = 0
        self.suite = None
        self._nonces = None  # (initiator nonce, responder nonce)
        self._send = None  # (suite, epoch, send Suite)
        self._recv = {}  # (epoch, suite) -> recv Suite; current and previous epoch
        self._seq = 0
        self._window = ReplayWindow(self.window_size)
        self._last_rx = None
        self._last_tx = None
        self._hello = None

    # ---- keys ------------------------------------------------------------------
    def _derive(self, epoch, suite):
        ni, nr = self._nonces
        keys = kdf.hkdf(self._psk, ni + nr, b"capshard tunnel v1" + self.session + bytes((epoch, suite)), 64)
        i2r, r2i = keys[:32], keys[32:]
        if self.role == INITIATOR:
            return etm.Suite(suite, i2r), etm.Suite(suite, r2i)
        return etm.Suite(suite, r2i), etm.Suite(suite, i2r)

    def _install(self, epoch, suite):
        send, recv = self._derive(epoch, suite)
        self._send = (suite, epoch, send)
        for key in list(self._recv):
            if key[0] != epoch and key[0] != (epoch - 1) & 0xFF:
                del self._recv[key]  # keep one previous epoch for datagrams in flight
        self._recv[(epoch, suite)] = recv
        self.epoch = epoch
        self.suite = suite

    def set_cipher(self, cipher_shard):
        """Bind the cipher slot's shard. Returns "kept" when a live session
        moved to the new cipher in place (new epoch, no handshake),
        "reestablish" when a handshake is needed, "same" or "none"."""
        cipher = as_cipher(cipher_shard)
        old = self.cipher
        self.cipher = cipher
        if cipher is None:
            return "none"
        if old is not None and getattr(old, "shard", old) is getattr(cipher, "shard", cipher):
            self.cipher = old
            return "same"
        if self.state == UP and self.role == INITIATOR:
            self._install((self.epoch + 1) & 0xFF, cipher.suite_id)
            self.stats["rekeys"] += 1
            return "kept"
        if self.state == UP:
            return "kept"  # a responder follows the initiator's suite and epoch
        return "reestablish"

    # ---- initiator -----------------------------------------------------------------
    def connect(self):
        """Start (or restart) a session: the HELLO datagram to send."""
        if self.role != INITIATOR:
            raise ValueError("only the initiator connects")
        if self.cipher is None:
            raise ValueError("no cipher bound")
        self._reset_session()
        self.session = platform.random_bytes(4)
        ni = platform.random_bytes(NONCE_LEN)
        self._nonces = (ni, None)
        h = header(HELLO, self.cipher.suite_id, 0, self.session, 0)
        self._hello = h + ni + platform.hmac_sha256(self._psk, h + ni)
        self.state = CONNECTING
        self.auth_result = None
        self.authorized = None
        self._last_tx = self.clock.ticks_ms()
        self.stats["handshakes"] += 1
        return self._hello

    # ---- sending -------------------------------------------------------------------
    def overhead(self):
        return HEADER_LEN + (self.cipher.overhead if self.cipher is not None else etm.TAG_LEN)

    def max_payload(self):
        return self.mtu - self.overhead()

    def _seal(self, kind, payload):
        if self.state != UP or self._send is None:
            return None
        suite, epoch, key = self._send
        self._seq += 1
        h = header(kind, suite, epoch, self.session, self._seq)
        body = self.cipher.seal(key, h[8:16], h, payload)
        if body is None:
            self.stats["refused"] += 1
            return None
        self._last_tx = self.clock.ticks_ms()
        return h + body

    def send(self, payload):
        """The datagram carrying ``payload``, or None (too big, not up, over share)."""
        if len(payload) > self.max_payload():
            self.stats["too_big"] += 1
            return None
        out = self._seal(DATA, payload)
        if out is not None:
            self.stats["sent"] += 1
        return out

    def send_auth(self, user, password):
        """Initiator: prove a user to the peer's auth shard, inside the tunnel."""
        return self._seal(AUTH, user.encode() + b"\x00" + password.encode())

    # ---- receiving -----------------------------------------------------------------
    def receive(self, dgram):
        """Handle one datagram: returns (inner payload or None, reply datagram or None)."""
        h = parse_header(dgram)
        if h is None:
            self.stats["malformed"] += 1
            return None, None
        kind, suite, epoch, session, seq = h
        if kind == HELLO:
            return None, self._on_hello(dgram, suite, session)
        if kind == HELLO_ACK:
            self._on_hello_ack(dgram, suite, session)
            return None, None
        if len(dgram) > self.mtu:
            self.stats["too_big"] += 1
            return None, None
        if self.state != UP or session != self.session:
            self.stats["stale"] += 1
            return None, None
        key = self._recv_key(epoch, suite)
        if key is None:
            self.stats["stale"] += 1
            return None, None
        if not self._window.check(seq):
            self.stats["replayed"] += 1
            return None, None
        payload = self.cipher.open(key, dgram[8:16], dgram[:HEADER_LEN], dgram[HEADER_LEN:])
        if payload is None:
            self.stats["tampered"] += 1  # a forged epoch change leaves no keys behind
            return None, None
        self._window.accept(seq)
        self._last_rx = self.clock.ticks_ms()
        if (epoch, suite) not in self._recv:
            # The initiator moved to a new epoch (cipher swap): follow it.
            self._install(epoch, suite)
            self.stats["rekeys"] += 1
        if kind == KEEPALIVE:
            self.stats["keepalives_received"] += 1
            return None, None
        if kind == AUTH:
            return None, self._on_auth(payload)
        if kind == AUTH_OK or kind == AUTH_FAIL:
            self.auth_result = kind == AUTH_OK
            return None, None
        if kind != DATA:
            self.stats["malformed"] += 1
            return None, None
        if self.authorize is not None and self.authorized is None:
            self.stats["unauthorized"] += 1
            return None, None
        self.stats["received"] += 1
        return payload, None

    def _recv_key(self, epoch, suite):
        key = self._recv.get((epoch, suite))
        if key is not None:
            return key
        if self.role == RESPONDER and epoch == (self.epoch + 1) & 0xFF and self._suite_ok(suite):
            return self._derive(epoch, suite)[1]  # trial keys; installed only if the tag verifies
        return None

    def _suite_ok(self, suite):
        if suite not in etm.ENC_KEY_LEN:
            return False
        if self.cipher is not None and self.cipher.suite_id is not None and suite != self.cipher.suite_id:
            return False
        return self.suites is None or suite in self.suites

    def _on_hello(self, dgram, suite, session):
        if self.role != RESPONDER:
            self.stats["malformed"] += 1
            return None
        if len(dgram) != HEADER_LEN + NONCE_LEN + HS_TAG_LEN:
            self.stats["malformed"] += 1
            return None
        body = dgram[:HEADER_LEN + NONCE_LEN]
        if not platform.constant_time_equal(platform.hmac_sha256(self._psk, body), dgram[HEADER_LEN + NONCE_LEN:]):
            self.stats["tampered"] += 1
            return None
        if not self._suite_ok(suite):
            self.stats["refused"] += 1
            return None
        ni = bytes(dgram[HEADER_LEN:HEADER_LEN + NONCE_LEN])
        if self._nonces is not None and self._nonces[0] == ni and session == self.session:
            return self._hello  # our ACK was lost: send the same one again
        self._reset_session()
        self.session = session
        nr = platform.random_bytes(NONCE_LEN)
        self._nonces = (ni, nr)
        h = header(HELLO_ACK, suite, 0, session, 0)
        self._hello = h + nr + platform.hmac_sha256(self._psk, h + ni + nr)
        self._install(0, suite)
        self.state = UP
        self.authorized = None
        self._pending_auth = None
        self._last_rx = self.clock.ticks_ms()
        self.stats["handshakes"] += 1
        return self._hello

    def _on_hello_ack(self, dgram, suite, session):
        if self.role != INITIATOR or self.state != CONNECTING or session != self.session:
            self.stats["stale"] += 1
            return
        if len(dgram) != HEADER_LEN + NONCE_LEN + HS_TAG_LEN:
            self.stats["malformed"] += 1
            return
        ni = self._nonces[0]
        nr = bytes(dgram[HEADER_LEN:HEADER_LEN + NONCE_LEN])
        h = dgram[:HEADER_LEN]
        if not platform.constant_time_equal(platform.hmac_sha256(self._psk, h + ni + nr),
                                            dgram[HEADER_LEN + NONCE_LEN:]):
            self.stats["tampered"] += 1
            return
        self._nonces = (ni, nr)
        self._install(0, suite)
        self.state = UP
        self._last_rx = self.clock.ticks_ms()

    def _on_auth(self, payload):
        sep = payload.find(b"\x00")
        if sep < 0 or self.authorize is None:
            self.stats["malformed"] += 1
            return None
        user = payload[:sep].decode()
        self._pending_auth = (user, payload[sep + 1:].decode())
        return self._auth_reply()

    def _auth_reply(self):
        if self._pending_auth is None:
            return None
        user, password = self._pending_auth
        verdict = self.authorize(user, password)
        if verdict is None:
            return None  # pending (RADIUS): poll() asks again
        self._pending_auth = None
        self.authorized = user if verdict else None
        return self._seal(AUTH_OK if verdict else AUTH_FAIL, user.encode())

    # ---- timers --------------------------------------------------------------------
    def poll(self):
        """A datagram that is due now (handshake retry, keepalive, auth answer), or None."""
        now = self.clock.ticks_ms()
        if self.state == CONNECTING:
            if self.clock.ticks_diff(now, self._last_tx) >= self.retry_ms:
                self._last_tx = now
                return self._hello
            return None
        if self.state != UP:
            return None
        if self._last_rx is not None and self.clock.ticks_diff(now, self._last_rx) >= self.dead_ms:
            self.state = DOWN
            return self.connect() if self.role == INITIATOR else None
        out = self._auth_reply()
        if out is not None:
            return out
        if self._last_tx is None or self.clock.ticks_diff(now, self._last_tx) >= self.keepalive_ms:
            out = self._seal(KEEPALIVE, b"")
            if out is not None:
                self.stats["keepalives_sent"] += 1
            return out
        return None
