"""COSE_Mac0 on the device interoperates with pycose and refuses every forgery it is shown.

pycose is the independent implementation: it verifies what the firmware makes
and makes what the firmware verifies. Each firmware run handles a batch.
"""

import hashlib
import hmac
import json
import random

import cbor2
from pycose.algorithms import HMAC256, HMAC25664
from pycose.headers import KID, Algorithm
from pycose.keys import SymmetricKey
from pycose.messages import CoseMessage, Mac0Message

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
KID_A = b"dev-0042"
RNG = random.Random(17)

# Firmware side: verify each case and print one JSON line per case.
VERIFY = r'''
import json, sys
from capdev import cose
from capdev.platform import hexlify, unhexlify
KEYS = {b"dev-0042": unhexlify("%s"), b"dev-0007": unhexlify("%s")}
def lookup(kid):
    return KEYS.get(kid)
while True:
    line = sys.stdin.readline()
    if not line.strip():
        break
    msg, mode = json.loads(line)
    keys = lookup if mode == "lookup" else unhexlify(mode)
    try:
        kid, payload = cose.mac0_verify(unhexlify(msg), keys)
        print(json.dumps(["ok", hexlify(kid), hexlify(payload)]))
    except Exception as e:
        print(json.dumps(["err", type(e).__name__, getattr(e, "reason", None), str(e), isinstance(e, ValueError)]))
''' % (KEY.hex(), OTHER_KEY.hex())


def verify_on_device(fw, cases):
    """cases: (message bytes, "lookup" or a key) -> list of outcomes."""
    stdin = "".join(json.dumps([m.hex(), k if k == "lookup" else k.hex()]) + "\n" for m, k in cases)
    lines = [ln for ln in fw.run(VERIFY, input=stdin).splitlines() if ln.strip()]
    assert len(lines) == len(cases)
    return [json.loads(ln) for ln in lines]


def pycose_mac0(payload, key=KEY, kid=KID_A, alg=HMAC256, kid_protected=False):
    phdr = {Algorithm: alg}
    uhdr = {}
    (phdr if kid_protected else uhdr)[KID] = kid
    return Mac0Message(phdr=phdr, uhdr=uhdr, payload=payload, key=SymmetricKey(k=key)).encode()


def hand_mac0(protected_map, unprotected, payload, key=KEY, tag=17, mac_len=32, protected=None):
    """A COSE_Mac0 built from parts with cbor2, for shapes pycose refuses to make."""
    prot = cbor2.dumps(protected_map) if protected is None else protected
    structure = cbor2.dumps(["MAC0", prot, b"", payload if payload is not None else b""])
    mac = hmac.new(key, structure, hashlib.sha256).digest()[:mac_len]
    msg = [prot, unprotected, payload, mac]
    return cbor2.dumps(cbor2.CBORTag(tag, msg) if tag is not None else msg)


def test_pycose_verifies_what_the_firmware_makes(fw):
    payloads = [b"", b"x", RNG.randbytes(300), cbor2.dumps({"op": "activate", "shard": "aes-ctr"})]
    kids = [KID_A, b"", b"\x00\xff", b"k" * 40]
    code = "import json\nfrom capdev import cose\nfrom capdev.platform import hexlify, unhexlify\nout = []\n"
    for p, k in zip(payloads, kids):
        code += (f"out.append(hexlify(cose.mac0_create(unhexlify('{p.hex()}'), "
                 f"unhexlify('{KEY.hex()}'), unhexlify('{k.hex()}'))))\n")
    code += "print(json.dumps(out))\n"
    made = [bytes.fromhex(h) for h in fw.run_json(code)]
    for p, k, m in zip(payloads, kids, made):
        assert m[0] == 0xD1  # tag 17
        msg = CoseMessage.decode(m)
        assert isinstance(msg, Mac0Message)
        assert msg.phdr == {Algorithm: HMAC256} and msg.uhdr == {KID: k} and msg.payload == p
        msg.key = SymmetricKey(k=KEY)
        assert msg.verify_tag()
        msg.key = SymmetricKey(k=OTHER_KEY)
        assert not msg.verify_tag()
        # canonical headers make the bytes fully determined: pycose produces the same ones
        assert m == pycose_mac0(p, kid=k)


def test_firmware_verifies_what_pycose_makes(fw):
    payloads = [b"", b"hello", RNG.randbytes(500)]
    cases = [(pycose_mac0(p), "lookup") for p in payloads]
    cases += [(pycose_mac0(b"single key"), KEY)]
    cases += [(pycose_mac0(b"other device", key=OTHER_KEY, kid=b"dev-0007"), "lookup")]
    cases += [(pycose_mac0(b"kid protected", kid_protected=True), "lookup")]
    untagged = cbor2.loads(pycose_mac0(b"untagged")).value
    cases += [(cbor2.dumps(untagged), "lookup")]
    got = verify_on_device(fw, cases)
    expected_payloads = payloads + [b"single key", b"other device", b"kid protected", b"untagged"]
    expected_kids = [KID_A] * 4 + [b"dev-0007", KID_A, KID_A]
    assert got == [["ok", k.hex(), p.hex()] for k, p in zip(expected_kids, expected_payloads)]


def _flip(data, index):
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


def test_forgeries_and_malformed_messages_are_rejected_with_reasons(fw):
    good = pycose_mac0(b"payload-bytes")
    n = len(good)
    payload_at = good.index(b"payload-bytes")
    cases = [
        # (message, keys, reason, message text must contain)
        (_flip(good, payload_at), "lookup", "bad tag", "MAC mismatch"),                 # tampered payload
        (_flip(good, n - 1), "lookup", "bad tag", "MAC mismatch"),                      # tampered tag
        (good[:-5], "lookup", "malformed", "length beyond input"),                      # truncated
        (good[:1], "lookup", "malformed", "truncated"),
        (good + b"\x00", "lookup", "malformed", "trailing bytes"),
        (pycose_mac0(b"p", key=OTHER_KEY), "lookup", "bad tag", "MAC mismatch"),        # wrong key
        (good, OTHER_KEY, "bad tag", "MAC mismatch"),
        (pycose_mac0(b"p", kid=b"dev-9999"), "lookup", "unknown key id", ""),           # wrong kid
        (pycose_mac0(b"p", alg=HMAC25664), "lookup", "unsupported alg", "4"),           # HMAC 256/64
        (hand_mac0({}, {4: KID_A}, b"p"), "lookup", "unsupported alg", "missing"),
        (hand_mac0({1: 5}, {1: 4, 4: KID_A}, b"p"), "lookup", "malformed", "both buckets"),
        (hand_mac0({1: 5}, {4: KID_A}, b"p", protected=b""), "lookup", "unsupported alg", "missing"),
        (hand_mac0({1: 5, 2: [99]}, {4: KID_A}, b"p"), "lookup", "malformed", "critical"),
        (hand_mac0({1: 5}, {4: KID_A}, None), "lookup", "malformed", "detached"),       # nil payload
        (hand_mac0({1: 5}, {4: KID_A}, "text"), "lookup", "malformed", "payload"),
        (hand_mac0({1: 5}, {4: KID_A}, b"p", mac_len=31), "lookup", "bad tag", "length 31"),
        (hand_mac0({1: 5}, {4: KID_A}, b"p", tag=18), "lookup", "malformed", "tag not allowed"),
        (hand_mac0({1: 5}, {4: 42}, b"p"), "lookup", "malformed", "kid"),
        (hand_mac0({1: 5}, {}, b"p"), "lookup", "unknown key id", "missing"),
        (hand_mac0({1: 5}, {4: KID_A}, b"p", protected=cbor2.dumps([1, 5])), "lookup", "malformed", "not a map"),
        (hand_mac0({1: 5}, {4: KID_A}, b"p", protected=b"\xa1\x01"), "lookup", "malformed", "protected"),
        (hand_mac0({1: "5"}, {4: KID_A}, b"p"), "lookup", "unsupported alg", "5"),
        (cbor2.dumps(cbor2.CBORTag(17, [cbor2.dumps({1: 5}), {4: KID_A}, b"p"])), "lookup", "malformed", "array of 4"),
        (cbor2.dumps({"not": "cose"}), "lookup", "malformed", "array of 4"),
    ]
    got = verify_on_device(fw, [(m, k) for m, k, _, _ in cases])
    for (m, _, reason, text), g in zip(cases, got):
        assert g[:3] == ["err", "CoseError", reason], (m.hex(), g)
        assert g[3].startswith(reason) and text in g[3] and g[4] is True, g
    # and the untouched message still verifies in the same process setup
    assert verify_on_device(fw, [(good, "lookup")]) == [["ok", KID_A.hex(), b"payload-bytes".hex()]]


def test_hand_built_mac0_matches_pycose_bytes():
    # Guards the test helper itself: with canonical parts it is byte-identical to pycose.
    assert hand_mac0({1: 5}, {4: KID_A}, b"abc") == pycose_mac0(b"abc")
