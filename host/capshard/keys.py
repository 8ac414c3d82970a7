"""Per-device keys for signing instructions. A keystore is a JSON file
{device_id: {"kid": str, "key": hex}}; keys never appear in logs."""

import json
import os
import secrets


class Keystore:
    def __init__(self, entries=None, path=None):
        self.path = path
        self._entries = dict(entries or {})

    @classmethod
    def load(cls, path):
        with open(path) as f:
            return cls(json.load(f), path)

    def save(self, path=None):
        path = path or self.path
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._entries, f, indent=2, sort_keys=True)
        os.replace(tmp, path)

    def provision(self, device_id):
        """Create (or return) the key of a device; returns (kid, key bytes)."""
        if device_id not in self._entries:
            self._entries[device_id] = {"kid": f"{device_id}#1", "key": secrets.token_hex(32)}
        return self.get(device_id)

    def get(self, device_id):
        entry = self._entries.get(device_id)
        if entry is None:
            raise KeyError(f"no key provisioned for device {device_id!r}")
        return entry["kid"].encode(), bytes.fromhex(entry["key"])

    def identity(self, device_id):
        """The device's side of provisioning (written to its config file)."""
        kid, key = self.get(device_id)
        return {"device_id": device_id, "kid": kid.decode(), "key": key.hex()}

    def __contains__(self, device_id):
        return device_id in self._entries

    def __repr__(self):
        return f"Keystore({len(self._entries)} devices)"
