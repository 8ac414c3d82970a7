"""RNMA decoding on both runtimes: link layers, IPv4/IPv6, fragments, DNS, TLS SNI,
and bad input that must come back as a reason, never an exception."""

import struct

ETH = 1
SLL = 113
RAW = 101


def ipv4(proto, src, dst, l4, frag=0, tos=0):
    total = 20 + len(l4)
    return struct.pack(">BBHHHBBH4s4s", 0x45, tos, total, 7, frag, 64, proto, 0, bytes(src), bytes(dst)) + l4


def udp(sport, dport, payload):
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport, dport, flags, payload=b""):
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 1, 0x50, flags, 65535, 0, 0) + payload


def dns_response():
    q = b"\x03www\x07example\x03com\x00" + b"\x00\x01\x00\x01"
    ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([93, 184, 216, 34])
    ans6 = b"\xc0\x0c" + struct.pack(">HHIH", 28, 1, 60, 16) + bytes(range(16))
    return struct.pack(">HHHHHH", 0x1234, 0x8180, 1, 2, 0, 0) + q + ans + ans6


CASES = {
    # Ethernet + 802.1Q tag + IPv4 + UDP DNS answer
    "eth_vlan_dns": (ETH, bytes(12) + b"\x81\x00\x00\x05\x08\x00"
                     + ipv4(17, [10, 0, 0, 53], [10, 0, 0, 2], udp(53, 40000, dns_response()), tos=46 << 2)),
    # Linux cooked capture + IPv6 + TCP SYN
    "sll_ipv6_syn": (SLL, bytes(14) + b"\x86\xdd" + struct.pack(">IHBB", 0x60000000, 20, 6, 64)
                     + bytes(15) + b"\x01" + bytes(15) + b"\x02" + tcp(50000, 443, 0x02)),
    "fragment": (RAW, ipv4(17, [1, 1, 1, 1], [2, 2, 2, 2], b"\x00" * 16, frag=185)),
    "truncated_eth": (ETH, bytes(10)),
    "unknown_link": (999, bytes(40)),
    "arp": (ETH, bytes(12) + b"\x08\x06" + bytes(28)),
    "bad_ihl": (RAW, b"\x41" + bytes(30)),
    "short_tcp": (RAW, ipv4(6, [1, 1, 1, 1], [2, 2, 2, 2], b"\x00" * 10)),
}


def test_parse_link_layers_and_bad_frames(fw):
    code = "from capdev.rnma import packet\nfrom capdev import platform as p\nimport json\nout={}\n"
    for name, (lt, frame) in CASES.items():
        code += (f"r = packet.parse({lt}, p.unhexlify('{frame.hex()}'))\n"
                 f"out['{name}'] = r if type(r) is str else [r[0], p.hexlify(r[1]), r[2], p.hexlify(r[3]), r[4], r[5], r[6], r[7], len(r[8])]\n")
    code += "print(json.dumps(out))\n"
    out = fw.run_json(code)
    assert out["eth_vlan_dns"][:5] == [17, "0a000035", 53, "0a000002", 40000]
    assert out["eth_vlan_dns"][6] == 46  # DSCP EF survives
    assert out["sll_ipv6_syn"][0] == 6 and out["sll_ipv6_syn"][2] == 50000 and out["sll_ipv6_syn"][4] == 443
    assert out["sll_ipv6_syn"][1] == "00" * 15 + "01" and out["sll_ipv6_syn"][7] == 0x02
    assert out["sll_ipv6_syn"][5] == 60  # IPv6 length counts the fixed header
    assert "fragment" in out["fragment"]
    assert "truncated" in out["truncated_eth"]
    assert out["unknown_link"] == "unknown link type 999"
    assert out["arp"] == "non-IP frame"
    assert "IPv4" in out["bad_ihl"]
    assert "TCP" in out["short_tcp"]


def test_dns_tls_and_quic_parsers(fw):
    loop = struct.pack(">HHHHHH", 1, 0x8180, 1, 0, 0, 0) + b"\xc0\x0c"  # name points at itself
    code = f"""
from capdev.rnma import dpi, synth
from capdev import platform as p
import json
out = {{}}
q, addrs = dpi.dns_answers(p.unhexlify('{dns_response().hex()}'))
out['dns'] = [q, [p.hexlify(a) for a in addrs]]
try:
    dpi.dns_answers(p.unhexlify('{loop.hex()}'))
    out['loop'] = 'no error'
except dpi.Malformed as e:
    out['loop'] = str(e)
hello = synth.client_hello('Online.ExampleBank.com')
out['sni'] = dpi.tls_sni(hello)
out['sig'] = dpi.signature(hello, 6, 50000, 443, True) & (dpi.SIG_TLS | dpi.SIG_TLS_CLIENT_HELLO)
res = []
for n in (50, 60, 75, len(hello) - 3):
    try:
        res.append(dpi.tls_sni(hello[:n]))
    except dpi.Malformed as e:
        res.append('malformed')
out['cut'] = res
chlo = b'\\x0d' + bytes(8) + b'Q039' + bytes(20) + b'CHLO' + bytes([2, 0, 0, 0]) + b'PAD\\x00' + bytes([4, 0, 0, 0]) + b'SNI\\x00' + bytes([22, 0, 0, 0]) + b'xxxx' + b'r1.googlevideo.com'
out['gquic'] = [dpi.signature(chlo, 17, 5000, 443, True) == dpi.SIG_QUIC, dpi.gquic_sni(chlo)]
print(json.dumps(out))
"""
    out = fw.run_json(code, heap_kb=256)
    assert out["dns"] == ["www.example.com", ["5db8d822", bytes(range(16)).hex()]]
    assert "compression" in out["loop"] or "name" in out["loop"]
    assert out["sni"] == "online.examplebank.com"
    assert out["sig"] == 1 | (1 << 24)
    assert out["cut"][-1] is None and all(x in (None, "malformed") for x in out["cut"])
    assert out["gquic"] == [True, "r1.googlevideo.com"]
