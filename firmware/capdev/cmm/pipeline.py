# The instruction pipeline: raw bytes from the broker -> a verified, fresh,
# well-formed instruction, or a rejection ack with a reason. Pure apart from
# the store it persists through; the caller applies the operations and then
# calls commit() with the per-operation results.
from capdev import cbor, cose, platform, protocol


class Rejection(Exception):
    def __init__(self, kind, reason, msg=None):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.msg = msg


class InstructionPipeline:
    """``keys`` maps a key id (bytes) to the device key, or returns None."""

    def __init__(self, device_id, keys, store, clock=platform):
        self.device_id = device_id
        self.keys = keys
        self.store = store
        self.clock = clock
        self.rejected = {}  # rejection kind -> count
        self._iat_ref = None  # provider clock at the last accepted instruction
        self._ticks_ref = 0

    # ---- provider clock estimate ------------------------------------------
    def provider_now(self):
        """Provider wall time as this device can vouch for it without a clock of
        its own: the newest issue time seen plus the ticks elapsed since."""
        if self._iat_ref is None:
            return self.store.last_iat or None
        elapsed = self.clock.ticks_diff(self.clock.ticks_ms(), self._ticks_ref) // 1000
        return self._iat_ref + elapsed

    # ---- steps ------------------------------------------------------------
    def receive(self, raw):
        """Return ("accept", msg) or ("duplicate", ack); raise Rejection."""
        if len(raw) > protocol.MAX_INSTRUCTION_BYTES:
            raise Rejection("oversize", "instruction larger than "
                            + str(protocol.MAX_INSTRUCTION_BYTES) + " bytes")
        try:
            _, payload = cose.mac0_verify(raw, self.keys)
        except cose.CoseError as e:
            raise Rejection("auth", "authentication failed: " + str(e))
        try:
            msg = cbor.loads(payload, 8, protocol.MAX_INSTRUCTION_BYTES)
        except cbor.CBORError as e:
            raise Rejection("malformed", "malformed payload: " + str(e))
        try:
            protocol.check_instruction(msg)
        except protocol.SchemaError as e:
            raise Rejection("schema", str(e), msg if isinstance(msg, dict) else None)
        if msg["dev"] != self.device_id:
            raise Rejection("misaddressed", "instruction addressed to another device", msg)
        cached = self.store.cached_ack(msg["id"])
        if cached is not None:
            return "duplicate", cached
        if msg["seq"] <= self.store.last_seq:
            raise Rejection("replay", "replayed sequence number " + str(msg["seq"])
                            + " (last applied " + str(self.store.last_seq) + ")", msg)
        now = self.provider_now()
        if now is not None and msg["iat"] + msg["ttl_s"] < now:
            raise Rejection("expired", "expired: issued " + str(now - msg["iat"])
                            + " s ago with ttl " + str(msg["ttl_s"]) + " s", msg)
        return "accept", msg

    def reject_ack(self, rejection):
        self.rejected[rejection.kind] = self.rejected.get(rejection.kind, 0) + 1
        msg = rejection.msg or {}
        return make_ack(self.device_id, msg.get("id"), msg.get("seq"),
                        protocol.REJECTED, rejection.reason, [])

    def commit(self, msg, results):
        """Record an applied instruction; return its ack."""
        ack = make_ack(self.device_id, msg["id"], msg["seq"], "applied", "", results)
        store = self.store
        store.last_seq = msg["seq"]
        if msg["iat"] > store.last_iat:
            store.last_iat = msg["iat"]
        store.remember(msg["id"], ack)
        store.save()
        if self._iat_ref is None or msg["iat"] >= self.provider_now():
            self._iat_ref = msg["iat"]
            self._ticks_ref = self.clock.ticks_ms()
        return ack


def make_ack(device_id, instruction_id, seq, status, reason, results):
    return {
        "v": protocol.VERSION,
        "dev": device_id,
        "id": instruction_id,
        "seq": seq,
        "status": status,
        "reason": reason,
        "results": results,
    }
