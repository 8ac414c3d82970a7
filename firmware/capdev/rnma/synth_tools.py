# Synthetic traffic for hosts and tests: one-off frames, several shapes
# mixed, and a replay into a monitor. Kept out of synth.py so a device, which
# only plays shapes live (live.py), does not hold this code.
from capdev.rnma import packet as pk
from capdev.rnma.synth import shape


def ipv4(proto, src, sport, dst, dport, payload, flags=0x18, dscp=0):
    """A raw IPv4 frame carrying a UDP datagram or a TCP segment. ``payload``
    is bytes, or an int for that many zero bytes."""
    if isinstance(payload, int):
        payload = bytes(payload)
    if proto == pk.UDP:
        l4 = bytes((sport >> 8, sport & 255, dport >> 8, dport & 255,
                    (8 + len(payload)) >> 8, (8 + len(payload)) & 255, 0, 0))
    else:
        l4 = bytes((sport >> 8, sport & 255, dport >> 8, dport & 255, 0, 0, 0, 1, 0, 0, 0, 1,
                    0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0))
    total = 20 + len(l4) + len(payload)
    ip = bytes((0x45, dscp << 2, total >> 8, total & 255, 0, 0, 0x40, 0, 64, proto, 0, 0)) + src + dst
    return ip + l4 + payload


def mix(kinds, duration_ms=10000, seed=1):
    """Several shapes at once, merged in time order (one frame held per shape)."""
    gens = []
    heads = []
    i = 0
    for k in kinds:
        g = shape(k, 0, duration_ms, seed + i, 10 + i)
        i += 1
        gens.append(g)
        heads.append(next(g, None))
    while True:
        best = -1
        for j in range(len(heads)):
            if heads[j] is not None and (best < 0 or heads[j][0] < heads[best][0]):
                best = j
        if best < 0:
            return
        yield heads[best]
        heads[best] = next(gens[best], None)


def feed(monitor, frames, tick_ms=1000):
    """Replay synthetic frames into a monitor, ticking once per tick_ms of
    traffic time; returns the QoS reports the monitor produced."""
    reports = []
    next_tick = None
    for ts, frame in frames:
        if next_tick is None:
            next_tick = ts + tick_ms
        while ts >= next_tick:
            rep = monitor.tick(next_tick - monitor._t0 if monitor._t0 is not None else 0)
            if rep is not None:
                reports.append(rep)
            next_tick += tick_ms
        monitor.packet(ts, pk.RAW, frame)
    return reports
