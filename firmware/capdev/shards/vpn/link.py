# The VPN data path: binds the shards that fill the vpn slots to each other
# after every instruction. The tunnel gets the device-derived key, the peer,
# the current cipher shard and the auth shard's authorize(); a cipher swap
# is applied to the live session and reported in that op's ack reason.
# The agent calls after_apply(results) once the manager applied the ops.
from capdev.shards.vpn import tunnel

CIPHER = "vpn.cipher"
TUNNEL = "vpn.tunnel"
AUTH = "vpn.auth"


class VpnLink:
    def __init__(self, manager, device_key, device_id, opts):
        """``opts`` (the board's "vpn" map): "peer" [host, port], optional
        "bind" [host, port], "users" (a local-auth store file), "mtu",
        "keepalive_ms"."""
        self.manager = manager
        self.psk = tunnel.psk_from_device_key(device_key, device_id)
        self.opts = opts
        self._tunnel = None
        self._auth = None
        self.last = ""

    def _by_slot(self):
        found = {}
        report = self.manager.report()
        for sid in report:
            inst = self.manager.shard(sid)
            if inst is not None and report[sid].get("slot") in (CIPHER, TUNNEL, AUTH):
                found[report[sid]["slot"]] = (sid, inst)
        return found

    def tunnel(self):
        return self._tunnel

    def after_apply(self, results):
        """Re-bind the slots; annotate the acks of ops that touched them."""
        found = self._by_slot()
        t = found.get(TUNNEL)
        c = found.get(CIPHER)
        a = found.get(AUTH)
        note = {}
        tun = t[1] if t else None
        if tun is not None and tun is not self._tunnel:
            opts = self.opts
            bind = opts.get("bind") or ["127.0.0.1", 0]
            kw = {}
            for k in ("mtu", "keepalive_ms"):
                if k in opts:
                    kw[k] = opts[k]
            tun.attach(self.psk, tunnel.INITIATOR, (bind[0], bind[1]), tuple(opts["peer"]), **kw)
            self._tunnel = tun
            self._auth = None
            note[t[0]] = "tunnel attached to " + str(opts["peer"][0]) + ":" + str(opts["peer"][1])
        elif tun is None:
            self._tunnel = None
        if tun is not None and c is not None:
            was_up = tun.ep.state == tunnel.UP
            verdict = tun.set_cipher(c[1])
            if verdict == "kept":
                note[c[0]] = ("tunnel kept up: epoch " + str(tun.ep.epoch) + " now uses "
                              + c[1].name() if hasattr(c[1], "name") else "tunnel kept up")
            elif verdict == "reestablish":
                note[c[0]] = "tunnel re-established" if was_up or t[0] not in note else "tunnel established"
        if tun is not None and a is not None and a[1] is not self._auth:
            inst = a[1]
            if "users" in self.opts and hasattr(inst, "load"):
                inst.load(self.opts["users"])
            tun.ep.authorize = inst.authorize
            self._auth = inst
            note[a[0]] = "authorizing tunnel users"
        for r in results:
            extra = note.get(r.get("shard"))
            if extra and r.get("code") in ("activated", "adjusted"):
                r["reason"] = (r["reason"] + "; " if r["reason"] else "") + extra
        return results
