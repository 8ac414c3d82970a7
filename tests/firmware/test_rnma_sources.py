"""Live traffic sources on both runtimes: nf_conntrack and /proc/net/dev parsers
feeding the monitor, the device-local accounting hook, and AF_PACKET capture
that reports why it is unavailable instead of failing."""

CONNTRACK = (
    "ipv4     2 udp      17 28 src=192.168.1.23 dst=203.0.113.5 sport=40000 dport=3074 packets=120 bytes=9600 "
    "src=203.0.113.5 dst=192.168.1.23 sport=3074 dport=40000 packets=110 bytes=13200 mark=0 use=1\n"
    "ipv6     10 tcp      6 431999 ESTABLISHED src=2001:db8::2 dst=2001:db8:1::443 sport=51000 dport=443 "
    "packets=10 bytes=900 src=2001:db8:1::443 dst=2001:db8::2 sport=443 dport=51000 packets=40 bytes=52000 [ASSURED] use=1\n"
    "ipv4     2 tcp      6 300 ESTABLISHED src=10.0.0.2 dst=10.0.0.9 sport=1 dport=2 [UNREPLIED] use=1\n"
)
NET_DEV = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
    "    lo:  123456     789    0    0    0     0          0         0   123456     789    0    0    0     0       0          0\n"
    "  eth0: 9876543   12345    0    0    0     0          0         0  1234567    2345    0    0    0     0       0          0\n"
)


def test_conntrack_and_net_dev(fw, tmp_path):
    ct = tmp_path / "nf_conntrack"
    ct.write_text(CONNTRACK)
    code = f"""
from capdev.rnma import linux, summary
from capdev.rnma.monitor import Monitor
from capdev import platform as p
import json
m = Monitor()
n1 = linux.poll_conntrack(m, 1000, {str(ct)!r})
n2 = linux.poll_conntrack(m, 2000, {str(ct)!r})   # same counters again: nothing new
flows = sorted([summary.flow(m, s)['class'], summary.flow(m, s)['bytes_down']] for s in m.table.slots())
missing = linux.poll_conntrack(m, 3000, {str(tmp_path / 'nope')!r})
dev = linux.parse_net_dev({NET_DEV!r})
v6 = [p.hexlify(linux.ip_bytes(x) or b'') for x in ('2001:db8::1', '::1', '1.2.3.4', '1:2:3', '1.2.3.400')]
print(json.dumps([n1, n2, flows, missing, dev['eth0'], len(dev), v6, summary.problems(m)]))
"""
    n1, n2, flows, missing, eth0, ndev, v6, problems = fw.run_json(code, heap_kb=256)
    assert n1 == n2 == 2
    assert flows == [["real-time-interactive", 13200], ["standard", 52000]]
    assert missing.startswith("cannot read") and "errno" in missing
    assert eth0 == [9876543, 12345, 1234567, 2345] and ndev == 2
    assert v6 == ["20010db8" + "00" * 11 + "01", "00" * 15 + "01", "01020304", "", ""]
    assert problems == {"source": 2}  # the UNREPLIED line without counters, twice


def test_device_accounting_and_packet_socket(fw):
    code = """
from capdev.rnma.accounting import Accounting
from capdev.rnma.monitor import Monitor
from capdev.rnma import linux, summary
import json
m = Monitor()
acc = Accounting(m, bytes((192, 168, 4, 1)))
for i in range(40):
    acc.sent(17, 5004, bytes((198, 51, 100, 7)), 4569, 180, now=20 * i)
    acc.received(17, 5004, bytes((198, 51, 100, 7)), 4569, 180, now=20 * i + 5)
acc.sent(6, 1, b'\\x01', 2, 10)   # bad call: counted, not raised
s = m.table.slots()[0]
f = summary.flow(m, s)
sock, why = linux.open_packet_socket()
if sock is not None:
    sock.close()
print(json.dumps([len(m.table), f['class'], f['pkts_up'], f['pkts_down'], f['cport'], summary.problems(m),
                  sock is not None or (isinstance(why, str) and len(why) > 0)]))
"""
    n, cls, up, down, cport, problems, sock_ok = fw.run_json(code, heap_kb=256)
    assert (n, cls, up, down, cport) == (1, "telephony", 40, 40, 5004)
    assert problems == {"source": 1}
    assert sock_ok
