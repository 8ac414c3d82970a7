# The monitoring agent's core: observations in (raw frames, parsed packets or
# per-flow counters), flow table and classifier in the middle, per-class
# demand and QoS reports out. No I/O here: sources live in pcap.py, linux.py,
# accounting.py and live.py and all call packet() or observe() (conntrack
# counters: linux.observe_counters). What is read or done at the end of a
# capture (problems(), finish()) is in summary.py, loaded on use.
from array import array

from capdev import platform
from capdev.platform import const
from capdev.rnma import dpi
from capdev.rnma import flows as ft
from capdev.rnma import packet as pk
from capdev.rnma import rules as rules_mod
from capdev.rnma.classify import Classifier, BULK
from capdev.rnma.report import ReportBuilder

# The flow table's slot layout (flows.py), as private constants: they cost
# no RAM in a .mpy. Keep in step with flows.py.
_F_AUX = const(17)
_F_AUX2 = const(30)
_F_BDN = const(5)
_F_BUP = const(4)
_F_CLS = const(28)
_F_CLSPK = const(29)
_F_DPI = const(27)
_F_HINT = const(25)
_F_NAME = const(31)
_F_PDN = const(3)
_F_PUP = const(2)
_F_RTT = const(13)
_F_SAMPLED = const(26)
_F_SIGS = const(16)
_F_STATE = const(15)
_F_WEAK = const(18)
_NFIELDS = const(32)
_ST_CLIENT_LOW = const(1)
_ST_NEW = const(16)

_DPI_PACKETS = const(10)  # payload packets inspected per flow (control channels, FTP and DNS: all)
_MAX_GAP_MS = const(86400000)
_REBASE_MS = 1 << 30
_KINDS = ("unknown-link", "non-ip", "fragment", "malformed-packet", "malformed-dns",
          "malformed-tls", "malformed-quic", "source", "evicted")


class Monitor:
    def __init__(self, device_id="dev", max_flows=64, rules=None, idle_ms=120000,
                 report=None, on_flow=None, dns_cache=16, max_dests=8, keep_names=False):
        if rules is None:
            rules = rules_mod.defaults()
        self.classifier = Classifier(rules)
        self.table = ft.FlowTable(max_flows, idle_ms, self._evicted, keep_names)
        self.table.bulk_pps = rules["behaviour"]["bulk_pps"]
        self.report = report if report is not None else ReportBuilder(device_id)
        self.on_flow = on_flow
        n = len(rules_mod.CLASSES)
        self.ledger = [0] * n          # bytes per class over the whole run
        self.pending = [0] * n         # bytes of evicted flows not yet sampled
        self.dns = {}                  # server address -> name code (classify.name_code)
        self.dns_names = {} if keep_names else None  # and the name itself, on hosts
        self.dns_max = dns_cache
        self.expect = []               # (address or None, port, hint) of FTP data channels
        self.dests = {}                # sensitive destination name -> level
        self.max_dests = max_dests
        self.counts = {}               # problem kind -> times seen (kinds seen only)
        self.last_problem = None
        self.packets = 0
        self.now = 0
        self._t0 = None
        self._ticks = None
        self._last_tick = 0
        self.p2p_until = -1
        self._p2p_new = array("i", bytes(4 * 32))
        self._p2p_pos = 0
        self._p2p_flows = rules_mod.BEHAVIOUR["p2p_flows"]
        if "p2p_flows" in rules["behaviour"]:
            self._p2p_flows = rules["behaviour"]["p2p_flows"]

    # ---- problems are counted, never raised ----------------------------------
    def note(self, kind, msg):
        if kind not in _KINDS:
            kind = "malformed-packet"
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.last_problem = kind + ": " + msg

    # ---- clocks ----------------------------------------------------------------
    def live_now(self):
        """Milliseconds since the monitor started, from the wrapping tick clock."""
        t = platform.ticks_ms()
        if self._ticks is not None:
            d = platform.ticks_diff(t, self._ticks)
            if d > 0:
                self.now += d
        self._ticks = t
        if self.now >= _REBASE_MS:
            self._rebase(self.now)
        return self.now

    # ---- observations -----------------------------------------------------------
    def packet(self, ts_ms, linktype, frame):
        """A captured frame with its capture timestamp in ms (any epoch)."""
        if self._t0 is None:
            self._t0 = ts_ms
        now = ts_ms - self._t0
        if now < self.now:
            now = self.now  # out-of-order timestamps: keep time monotonic
        elif now - self.now > _MAX_GAP_MS:
            # A clock step inside the capture (e.g. epoch-0 packets before NTP):
            # treat it as a one-second gap instead of a days-long idle period.
            self.note("source", "timestamp jump of " + str((now - self.now) // 1000) + " s")
            self._t0 = ts_ms - self.now - 1000
            now = self.now + 1000
        try:
            r = pk.parse(linktype, frame)
        except Exception as e:  # a decoder bug must not stop monitoring
            self.note("malformed-packet", "decoder error " + repr(e))
            return
        if type(r) is str:
            if r.startswith("unknown link"):
                self.note("unknown-link", r)
            elif r.startswith("non-IP"):
                self.note("non-ip", r)
            elif "fragment" in r:
                self.note("fragment", r)
            else:
                self.note("malformed-packet", r)
            return
        self.observe(now, r)

    def observe(self, now, r):
        """A decoded packet: the tuple packet.parse() returns."""
        proto, src, sport, dst, dport, length, dscp, flags, payload, _frag = r
        if now >= _REBASE_MS:
            now = self._rebase(now)
        if now > self.now:
            self.now = now
        self.packets += 1
        t = self.table
        slot, up = t.lookup(proto, src, sport, dst, dport, now)
        a = t.a
        b = slot * _NFIELDS
        if a[b + _F_STATE] & _ST_NEW:
            up = self._new_flow(slot, proto, src, sport, dst, dport, flags, now)
        t.account(slot, up, length, now, dscp)
        if proto == pk.TCP:
            t.tcp_handshake(slot, up, flags, now)
        if len(payload) and (a[b + _F_DPI] < _DPI_PACKETS or sport == 21 or sport == 53
                             or dport == 21 or dport == 53):
            a[b + _F_DPI] += 1
            try:
                self._inspect(slot, up, proto, src, sport, dst, dport, payload, now)
            except Exception as e:
                self.note("malformed-packet", "inspector error " + repr(e))

    def _rebase(self, now):
        # Flow times are int32 ms: move the origin forward so a monitor can run
        # for months. Every stored time shifts by the same amount.
        d = _REBASE_MS // 2
        self.table.shift(d)
        if self._t0 is not None:
            self._t0 += d
        self.now -= d
        self._last_tick -= d
        self.p2p_until -= d
        for i in range(len(self._p2p_new)):
            self._p2p_new[i] -= d
        self.report.shift(d)
        return now - d

    def _new_flow(self, slot, proto, src, sport, dst, dport, flags, now):
        a = self.table.a
        b = slot * _NFIELDS
        st = a[b + _F_STATE] & ~_ST_NEW
        # Who is the client? A SYN/ACK or a well-known source port says the
        # first packet seen came from the server (capture started mid-flow).
        swap = False
        if proto == pk.TCP and flags & 0x12 == 0x12:
            swap = True
        elif proto == pk.TCP and flags & 0x12 == 0x02:
            swap = False
        elif sport < 1024 <= dport:
            swap = True
        elif sport != dport and sport >= 1024 and dport >= 1024:
            c = self.classifier
            swap = c.port_class(proto, sport) is not None and c.port_class(proto, dport) is None
        if swap:
            st ^= _ST_CLIENT_LOW
        a[b + _F_STATE] = st
        server, sport_ = (src, sport) if swap else (dst, dport)
        client_port = dport if swap else sport
        self._name_new(slot, server, sport_)
        if (proto == 6 or proto == 17) and sport_ >= 1024 and client_port >= 1024 and a[b + _F_HINT] == 0:
            if self.classifier.port_class(proto, sport_) is None:
                self._p2p_count(now)
        return not swap

    def _name_new(self, slot, server, sport):
        t = self.table
        code = self.dns.get(server)
        if code is not None:
            t.a[slot * _NFIELDS + _F_NAME] = code
            if t.names is not None:
                t.names[slot] = self.dns_names.get(server)
        for i in range(len(self.expect)):
            addr, port, hint = self.expect[i]
            if port == sport and (addr is None or addr == server):
                t.a[slot * _NFIELDS + _F_HINT] = hint
                self.expect.pop(i)
                break

    def _p2p_count(self, now):
        ring = self._p2p_new
        n = self._p2p_flows if self._p2p_flows <= len(ring) else len(ring)
        ring[self._p2p_pos % n] = now
        self._p2p_pos += 1
        if self._p2p_pos >= n and now - ring[self._p2p_pos % n] < 60000:
            self.p2p_until = now + 300000

    def _check_dest(self, name, code):
        lvl = (code >> 8) & 3
        if lvl and (name in self.dests or len(self.dests) < self.max_dests):
            self.dests[name] = lvl

    def _inspect(self, slot, up, proto, src, sport, dst, dport, payload, now):
        t = self.table
        a = t.a
        b = slot * _NFIELDS
        p = bytes(payload[:2048])
        sig = dpi.signature(p, proto, sport, dport, up)
        name = None
        if sig & dpi.SIG_RTP:
            # Weak signature: count it only when this direction's stream continues.
            f = _F_AUX if up else _F_AUX2
            rid = dpi.rtp_id(p, proto)
            if dpi.rtp_follows(a[b + f], rid):
                a[b + _F_WEAK] += 1
            a[b + f] = rid
        elif sig & dpi.SIG_UTP:
            cid = (p[2] << 8) | p[3]
            f = _F_AUX if up else _F_AUX2
            if cid == a[b + f]:
                a[b + _F_WEAK] += 1
            a[b + f] = cid
        if sig & dpi.SIG_TLS_CLIENT_HELLO:
            try:
                name = dpi.tls_sni(p)
            except dpi.Malformed as e:
                self.note("malformed-tls", str(e))
        elif sig & dpi.SIG_HTTP:
            host, extra = dpi.http_info(p)
            sig |= extra
            name = host
        elif sig & dpi.SIG_QUIC and up:
            try:
                name = dpi.gquic_sni(p)
            except dpi.Malformed as e:
                self.note("malformed-quic", str(e))
        if sport == 53 or dport == 53:
            self._dns(p[2:] if proto == pk.TCP else p, sport == 53)
            sig |= dpi.SIG_DNS
        elif sport == 21 or dport == 21:
            ep = dpi.ftp_data_endpoint(p)
            if ep is not None:
                addr = ep[0] if ep[0] is not None else (src if sport == 21 else None)
                if len(self.expect) >= 8:
                    self.expect.pop(0)
                self.expect.append((addr, ep[1], (90 << 8) | (BULK + 1)))
            sig |= dpi.SIG_FTP
        if sig & (dpi.SIG_BITTORRENT | dpi.SIG_DHT | dpi.SIG_GNUTELLA):
            self.p2p_until = now + 300000
        if name and not a[b + _F_NAME]:
            code = self.classifier.name_code(name)
            a[b + _F_NAME] = code
            if t.names is not None:
                t.names[slot] = name
            self._check_dest(name, code)
            # Later flows to this server (resumed TLS, QUIC without a visible
            # name) inherit the name, as if a DNS answer had been seen.
            self._remember(dst if up else src, name, code)
        a[b + _F_SIGS] |= sig

    def _dns(self, p, response):
        if not response:
            return
        try:
            qname, addrs = dpi.dns_answers(p)
        except dpi.Malformed as e:
            self.note("malformed-dns", str(e))
            return
        if not qname or not addrs:
            return
        code = self.classifier.name_code(qname)
        self._check_dest(qname, code)
        for addr in addrs:
            self._remember(addr, qname, code)

    def _remember(self, addr, name, code):
        if addr not in self.dns and len(self.dns) >= self.dns_max:
            for k in self.dns:  # drop any one entry (dict order is arbitrary)
                del self.dns[k]
                if self.dns_names is not None:
                    self.dns_names.pop(k, None)
                break
        self.dns[addr] = code
        if self.dns_names is not None:
            self.dns_names[addr] = name

    # ---- classification and demand ------------------------------------------
    def flow_class(self, slot):
        """(class index, confidence, reason number or None when cached), cached
        until the flow changes (summary.reason() gives the reason's text)."""
        a = self.table.a
        b = slot * _NFIELDS
        n = a[b + _F_PUP] + a[b + _F_PDN]
        c = a[b + _F_CLS]
        if c and a[b + _F_CLSPK] == n:
            return (c & 255) - 1, c >> 8, None
        cls, conf, why = self.classifier.classify(self.table, slot, self.now < self.p2p_until)
        a[b + _F_CLS] = (conf << 8) | (cls + 1)
        a[b + _F_CLSPK] = n
        return cls, conf, why

    def _evicted(self, table, slot):
        cls, conf, why = self.flow_class(slot)
        b = slot * _NFIELDS
        total = table.a[b + _F_BUP] + table.a[b + _F_BDN]
        delta = total - table.a[b + _F_SAMPLED]
        self.pending[cls] += delta
        self.ledger[cls] += delta
        self.counts["evicted"] = self.counts.get("evicted", 0) + 1
        if self.on_flow is not None:
            from capdev.rnma import summary

            self.on_flow(summary.flow(self, slot, cls, conf, why))

    def tick(self, now=None):
        """Sample per-class demand since the last tick; maybe return a QoS report."""
        if now is None:
            now = self.now
        span = now - self._last_tick
        if span <= 0:
            span = 1
        self._last_tick = now
        t = self.table
        a = t.a
        n = len(rules_mod.CLASSES)
        nbytes = self.pending
        self.pending = [0] * n
        flows = {}
        rtt_sum = {}
        rtt_n = {}
        conf_w = {}
        for slot in t.slots():
            b = slot * _NFIELDS
            cls, conf, _ = self.flow_class(slot)
            total = a[b + _F_BUP] + a[b + _F_BDN]
            d = total - a[b + _F_SAMPLED]
            a[b + _F_SAMPLED] = total
            nbytes[cls] += d
            self.ledger[cls] += d
            flows[cls] = flows.get(cls, 0) + 1
            conf_w[cls] = conf_w.get(cls, 0) + conf
            rtt = a[b + _F_RTT]
            if rtt >= 0:
                rtt_sum[cls] = rtt_sum.get(cls, 0) + rtt
                rtt_n[cls] = rtt_n.get(cls, 0) + 1
        rep = self.report
        for c in range(n):
            if nbytes[c] or c in rep.samples:
                rep.sample(c, nbytes[c] * 8 // span, now)
        lat = {}
        for c in rtt_n:
            lat[c] = rtt_sum[c] // rtt_n[c]
        conf = {}
        for c in flows:
            conf[c] = conf_w[c] // flows[c]
        level = 0
        for name in self.dests:
            if self.dests[name] > level:
                level = self.dests[name]
        t.expire(now)
        return rep.update(now, flows, lat, conf, level, list(self.dests))
