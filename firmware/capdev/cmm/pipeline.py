# The instruction pipeline: raw bytes from the broker -> a verified, fresh,
# well-formed instruction, or a rejection ack with a reason. Pure apart from
# the store it persists through; the caller applies the operations and then
# calls commit() with the per-operation results.
from capdev import cbor, platform, protocol
from capdev.platform import const

_RECENT_IDS = const(8)  # instruction ids (with their acks) the store keeps for redeliveries


class Rejection(Exception):
    def __init__(self, kind, reason, msg=None):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.msg = msg


class InstructionPipeline:
    """``keys`` maps a key id (bytes) to the device key, or returns None.

    Its state lives in the store (so a device can build a pipeline per
    message and unload this code in between): the rejection counts and the
    provider clock reference, besides what the store persists."""

    def __init__(self, device_id, keys, store, clock=platform):
        self.device_id = device_id
        self.keys = keys
        self.store = store
        self.clock = clock
        self.rejected = store.rejected  # rejection kind -> count

    # ---- provider clock estimate ------------------------------------------
    def provider_now(self):
        """Provider wall time as this device can vouch for it without a clock of
        its own: the newest issue time seen plus the ticks elapsed since."""
        store = self.store
        if store.iat_ref is None:
            return store.last_iat or None
        elapsed = self.clock.ticks_diff(self.clock.ticks_ms(), store.ticks_ref) // 1000
        return store.iat_ref + elapsed

    # ---- steps ------------------------------------------------------------
    def receive(self, raw):
        """Return ("accept", msg) or ("duplicate", ack); raise Rejection.

        The checking code (cose, schema, the CBOR decoder) is imported here,
        not by the module, so a device can unload it as soon as this returns."""
        from capdev import cose, schema

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
            schema.check_instruction(msg)
        except schema.SchemaError as e:
            raise Rejection("schema", str(e), msg if isinstance(msg, dict) else None)
        if msg["dev"] != self.device_id:
            raise Rejection("misaddressed", "instruction addressed to another device", msg)
        for iid, ack in self.store.recent:
            if iid == msg["id"]:
                return "duplicate", cbor.loads(ack)
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
        # Its ack is kept (CBOR: a fifth of the dict's heap) for a redelivery.
        store.recent.append([msg["id"], cbor.dumps(ack)])
        if len(store.recent) > _RECENT_IDS:
            store.recent.pop(0)
        store.save()
        if store.iat_ref is None or msg["iat"] >= self.provider_now():
            store.iat_ref = msg["iat"]
            store.ticks_ref = self.clock.ticks_ms()
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
