# Linux live sources: /proc/net/nf_conntrack (per-flow packets and bytes with
# nf_conntrack_acct=1), /proc/net/dev (per interface) and AF_PACKET capture
# where the process may open one. Parsers are pure; poll_* do the file I/O.
from capdev.platform import const

CONNTRACK = "/proc/net/nf_conntrack"
NET_DEV = "/proc/net/dev"
_AF_PACKET = const(17)
_ETH_P_ALL = const(0x0300)  # htons(0x0003)


def ip_bytes(text):
    """Address bytes of a dotted IPv4 or textual IPv6 address; None if invalid."""
    if "." in text and ":" not in text:
        parts = text.split(".")
        if len(parts) != 4:
            return None
        try:
            v = [int(x) for x in parts]
        except ValueError:
            return None
        for x in v:
            if x < 0 or x > 255:
                return None
        return bytes(v)
    if text.count("::") > 1:
        return None
    head, sep, tail = text.partition("::")
    hs = head.split(":") if head else []
    ts = tail.split(":") if tail else []
    if not sep and len(hs) != 8:
        return None
    missing = 8 - len(hs) - len(ts)
    if missing < (1 if sep else 0):
        return None
    out = bytearray()
    try:
        for g in hs + ["0"] * missing + ts:
            if not g or len(g) > 4:
                return None
            v = int(g, 16)
            out.append(v >> 8)
            out.append(v & 255)
    except ValueError:
        return None
    return bytes(out)


def parse_conntrack_line(line):
    """(proto, src, sport, dst, dport, pkts_orig, bytes_orig, pkts_reply, bytes_reply)
    from one nf_conntrack line, or None when it carries no counters."""
    f = line.split()
    if len(f) < 6:
        return None
    try:
        proto = int(f[3])
    except ValueError:
        return None
    seen = {}
    dup = 0
    for tok in f[4:]:
        k, eq, v = tok.partition("=")
        if not eq:
            continue
        if k == "src" and "src" in seen:
            dup = 1  # the reply tuple starts
        key = k + ("_r" if dup else "")
        if key not in seen:
            seen[key] = v
    try:
        src = ip_bytes(seen["src"])
        dst = ip_bytes(seen["dst"])
        sport = int(seen.get("sport", "0"))
        dport = int(seen.get("dport", "0"))
        po = int(seen["packets"])
        bo = int(seen["bytes"])
        pr = int(seen["packets_r"])
        br = int(seen["bytes_r"])
    except (KeyError, ValueError):
        return None
    if src is None or dst is None:
        return None
    return proto, src, sport, dst, dport, po, bo, pr, br


def poll_conntrack(monitor, now=None, path=CONNTRACK):
    """Feed every conntrack entry to the monitor; returns entries read, or an
    error string when the table is unreadable (no permission, no module)."""
    try:
        f = open(path)
    except OSError as e:
        return "cannot read " + path + ": errno " + str(e.args[0])
    if now is None:
        now = monitor.live_now()
    n = 0
    try:
        for line in f:
            r = parse_conntrack_line(line)
            if r is None:
                monitor.note("source", "conntrack line without counters")
                continue
            monitor.observe_counters(now, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8])
            n += 1
    finally:
        f.close()
    return n


def parse_net_dev(text):
    """{interface: (rx_bytes, rx_packets, tx_bytes, tx_packets)} from /proc/net/dev."""
    out = {}
    for line in text.split("\n"):
        name, colon, rest = line.partition(":")
        if not colon:
            continue
        v = rest.split()
        if len(v) < 10:
            continue
        try:
            out[name.strip()] = (int(v[0]), int(v[1]), int(v[8]), int(v[9]))
        except ValueError:
            continue
    return out


def poll_net_dev(path=NET_DEV):
    try:
        with open(path) as f:
            return parse_net_dev(f.read())
    except OSError as e:
        return "cannot read " + path + ": errno " + str(e.args[0])


def open_packet_socket(iface=None):
    """(socket, None) for raw Ethernet capture, or (None, reason) where the
    runtime or the process's privileges do not allow it."""
    try:
        import socket
    except ImportError:
        return None, "no socket module"
    fam = getattr(socket, "AF_PACKET", None)
    if fam is None:
        return None, "AF_PACKET not available on this runtime"
    try:
        s = socket.socket(fam, socket.SOCK_RAW, _ETH_P_ALL)
        if iface:
            s.bind((iface, 0))
        return s, None
    except OSError as e:
        return None, "AF_PACKET capture not permitted: errno " + str(e.args[0])


def capture(sock, monitor, count, bufsize=2048):
    """Read `count` frames from an AF_PACKET socket into the monitor."""
    for _ in range(count):
        frame = sock.recv(bufsize)
        monitor.packet(monitor.live_now(), 1, frame)
