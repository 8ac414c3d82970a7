# What the device must remember across a reboot or power cut: the last applied
# sequence number and issue time, recent instruction ids with their acks (so a
# redelivered instruction gets the same ack and is never applied twice), and the
# active profile. Written atomically: a kill -9 mid-write leaves old or new.
import json

from capdev import platform

RECENT_IDS = 8


class DeviceStore:
    def __init__(self, path):
        self.path = path
        self.last_seq = 0
        self.last_iat = 0
        self.recent = []  # [[instruction id, ack], ...], oldest first
        self.profile = {}  # shard id -> op dict as applied
        self.baseline = []  # ops of the agreement's baseline profile
        self.load_error = None

    def load(self):
        raw = platform.read_file(self.path)
        if raw is None:
            return self
        try:
            data = json.loads(raw)
            self.last_seq = int(data["last_seq"])
            self.last_iat = int(data["last_iat"])
            self.recent = list(data["recent"])
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
            "recent": self.recent,
            "profile": self.profile,
            "baseline": self.baseline,
        }
        platform.atomic_write(self.path, json.dumps(data).encode())

    def cached_ack(self, instruction_id):
        for iid, ack in self.recent:
            if iid == instruction_id:
                return ack
        return None

    def remember(self, instruction_id, ack):
        self.recent.append([instruction_id, ack])
        if len(self.recent) > RECENT_IDS:
            self.recent.pop(0)
