# Linux live sources: /proc/net/nf_conntrack (per-flow packets and bytes with
# nf_conntrack_acct=1), /proc/net/dev (per interface) and AF_PACKET capture
# where the process may open one. Parsers are pure; poll_* do the file I/O.
# Flows known only by counters are accounted here too (observe_counters,
# account_bulk): only conntrack needs that, so a device playing packets to
# its monitor does not hold the code.
from capdev.platform import const

CONNTRACK = "/proc/net/nf_conntrack"
NET_DEV = "/proc/net/dev"
_AF_PACKET = const(17)
_ETH_P_ALL = const(0x0300)  # htons(0x0003)

# The flow table's slot layout and limits (flows.py) and the monitor's clock
# rebase point (monitor.py), as private constants. Keep in step with them.
_F_LAST = const(1)
_F_PUP = const(2)
_F_PDN = const(3)
_F_SMALL = const(9)
_F_LARGE = const(10)
_F_MAXLEN = const(11)
_F_STATE = const(15)
_F_WSTART = const(19)
_F_WPKTS = const(20)
_F_WBYTES = const(24)
_NFIELDS = const(32)
_ST_NEW = const(16)
_SMALL_LEN = const(200)
_LARGE_LEN = const(1000)
_SAT = const(0x7FFFFFFF)
_REBASE_MS = 1 << 30  # not a const(): no small int on a 32-bit board


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
            observe_counters(monitor, now, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8])
            n += 1
    finally:
        f.close()
    return n


def observe_counters(monitor, now, proto, src, sport, dst, dport, pkts_up, bytes_up,
                     pkts_down, bytes_down):
    """Cumulative per-flow counters (conntrack): the increase is accounted.
    Works on the monitor's own state, as Monitor.observe() does for a packet."""
    if now >= _REBASE_MS:
        now = monitor._rebase(now)
    if now > monitor.now:
        monitor.now = now
    t = monitor.table
    slot, up = t.lookup(proto, src, sport, dst, dport, now)
    a = t.a
    b = slot * _NFIELDS
    if a[b + _F_STATE] & _ST_NEW:
        # The conntrack "original" direction is the initiator: src is the client.
        a[b + _F_STATE] &= ~_ST_NEW
        monitor._name_new(slot, dst, dport)
        up = True
    fu, fd = (_F_PUP, _F_PDN) if up else (_F_PDN, _F_PUP)
    account_bulk(t, slot, True if up else False, pkts_up - a[b + fu], bytes_up - a[b + fu + 2], now)
    account_bulk(t, slot, False if up else True, pkts_down - a[b + fd], bytes_down - a[b + fd + 2], now)


def account_bulk(t, slot, up, pkts, nbytes, now):
    """Count packets known only as totals in flow table ``t``, as
    FlowTable.account() counts one packet."""
    if pkts <= 0:
        return
    a = t.a
    b = slot * _NFIELDS
    f = _F_PUP if up else _F_PDN
    a[b + f] += pkts
    v = a[b + f + 2] + nbytes
    a[b + f + 2] = v if v < _SAT else _SAT
    mean = nbytes // pkts
    if mean <= _SMALL_LEN:
        a[b + _F_SMALL] += pkts
    elif mean >= _LARGE_LEN:
        a[b + _F_LARGE] += pkts
    if mean > a[b + _F_MAXLEN]:
        a[b + _F_MAXLEN] = mean
    if now - a[b + _F_WSTART] >= 1000:
        t._close_window(b, now)
    a[b + _F_WPKTS] += pkts
    a[b + _F_WBYTES] = min(a[b + _F_WBYTES] + nbytes, _SAT)
    a[b + _F_LAST] = now


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
