# security-filtering.firewall: a stateless allow/deny list on (protocol,
# destination port). The cheapest firewall there is: no per-flow state, so it
# fits the smallest board's baseline.
from capdev.shards import sdk

TCP = 6
UDP = 17
# Denied by default: services that should never be reachable through a home
# or branch gateway (telnet, NetBIOS/SMB, SSDP, Memcached amplification).
DEFAULT_DENY = ((TCP, 23), (TCP, 139), (TCP, 445), (UDP, 137), (UDP, 138), (UDP, 1900), (UDP, 11211))


class FilterError(ValueError):
    pass


def ports_of(pkt):
    """(protocol, destination port) of an IPv4 or IPv6 packet; FilterError
    for anything too short or not IP."""
    if len(pkt) < 1:
        raise FilterError("empty packet")
    version = pkt[0] >> 4
    if version == 4:
        ihl = (pkt[0] & 0x0F) * 4
        if ihl < 20 or len(pkt) < ihl + 4:
            raise FilterError("truncated IPv4 packet")
        proto, off = pkt[9], ihl
    elif version == 6:
        if len(pkt) < 44:
            raise FilterError("truncated IPv6 packet")
        proto, off = pkt[6], 40
    else:
        raise FilterError("not an IP packet")
    if proto not in (TCP, UDP):
        return proto, 0
    return proto, (pkt[off + 2] << 8) | pkt[off + 3]


class Shard(sdk.Shard):
    def start(self):
        self.deny = {}
        for rule in DEFAULT_DENY:
            self.deny[rule] = True
        self.passed = 0
        self.dropped = 0
        self.malformed = 0

    def set_rules(self, deny):
        """Replace the deny list: an iterable of (protocol, port)."""
        table = {}
        for proto, port in deny:
            table[(proto, port)] = True
        self.deny = table

    def allow(self, pkt):
        """True when ``pkt`` may pass; malformed packets are dropped and counted."""
        try:
            key = ports_of(pkt)
        except FilterError:
            self.malformed += 1
            return False
        if key in self.deny:
            self.dropped += 1
            return False
        self.passed += 1
        return True

    def health(self):
        return {"ok": True, "passed": self.passed, "dropped": self.dropped, "malformed": self.malformed}
