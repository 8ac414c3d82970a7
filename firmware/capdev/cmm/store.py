# What the device must remember across a reboot or power cut: the last applied
# sequence number and issue time, recent instruction ids with their acks (so a
# redelivered instruction gets the same ack and is never applied twice), and the
# active profile. Written atomically: a kill -9 mid-write leaves old or new.
from capdev import cbor, platform



class DeviceStore:
    def __init__(self, path):
        self.path = path
        self.last_seq = 0
        self.last_iat = 0
        # [[instruction id, ack as CBOR bytes], ...], oldest first: an encoded
        # ack takes a fifth of the heap of the dict (decoded only when needed).
        self.recent = []
        self.profile = {}  # shard id -> op dict as applied
        self.baseline = []  # ops of the agreement's baseline profile
        self.load_error = None
        # Not persisted: the instruction pipeline's counters and its reference
        # for the provider's clock (the newest issue time and the ticks then).
        self.rejected = {}
        self.iat_ref = None
        self.ticks_ref = 0

    def load(self):
        import json  # read once, at boot: no module global for it

        raw = platform.read_file(self.path)
        if raw is None:
            return self
        try:
            data = json.loads(raw)
            self.last_seq = int(data["last_seq"])
            self.last_iat = int(data["last_iat"])
            self.recent = [[iid, cbor.dumps(ack)] for iid, ack in data["recent"]]
            self.profile = dict(data["profile"])
            self.baseline = list(data.get("baseline", []))
        except (ValueError, KeyError, TypeError) as e:
            # Unreadable state is reported, never fatal: the provider resends
            # the full desired state at birth.
            self.load_error = "state file unreadable: " + str(e)
        return self

    def save(self):
        data = {
            "last_seq": self.last_seq,
            "last_iat": self.last_iat,
            "recent": [[iid, cbor.loads(ack)] for iid, ack in self.recent],
            "profile": self.profile,
            "baseline": self.baseline,
        }
        platform.atomic_write_json(self.path, data)

