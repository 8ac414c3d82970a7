"""The platform shim gives the same answers on MicroPython as CPython's reference libraries."""

import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# RFC 4231 test cases 1, 2 and 6 (key longer than the block size).
RFC4231 = [
    ("0b" * 20, b"Hi There".hex(),
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe".hex(), b"what do ya want for nothing?".hex(),
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    ("aa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
]

# NIST SP 800-38A F.5.1 (AES-128-CTR) and F.5.5 (AES-256-CTR), first two blocks.
CTR_VECTORS = [
    ("2b7e151628aed2a6abf7158809cf4f3c",
     "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
     "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51",
     "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff"),
    ("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
     "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
     "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51",
     "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"),
]


def test_hmac_sha256_matches_rfc4231(fw):
    code = "from capdev import platform as p\nimport json\nout=[]\n"
    for key, msg, _ in RFC4231:
        code += f"out.append(p.hexlify(p.hmac_sha256(p.unhexlify('{key}'), p.unhexlify('{msg}'))))\n"
    code += "print(json.dumps(out))\n"
    assert fw.run_json(code) == [mac for _, _, mac in RFC4231]


def test_hmac_matches_stdlib_for_random_inputs(fw):
    cases = [(os.urandom(n % 97), os.urandom(n * 7)) for n in range(40)]
    code = "from capdev import platform as p\nimport json\nout=[]\n"
    for k, m in cases:
        code += f"out.append(p.hexlify(p.hmac_sha256(p.unhexlify('{k.hex()}'), p.unhexlify('{m.hex()}'))))\n"
    code += "print(json.dumps(out))\n"
    expected = [hmac.new(k, m, hashlib.sha256).hexdigest() for k, m in cases]
    assert fw.run_json(code) == expected


def test_aes_ctr_matches_sp800_38a(fw):
    code = "from capdev import platform as p\nimport json\nout=[]\n"
    for key, ctr, pt, _ in CTR_VECTORS:
        code += f"out.append(p.hexlify(p.aes_ctr(p.unhexlify('{key}'), p.unhexlify('{ctr}'), p.unhexlify('{pt}'))))\n"
    code += "print(json.dumps(out))\n"
    assert fw.run_json(code) == [ct for *_, ct in CTR_VECTORS]


def test_aes_ctr_matches_cryptography_on_odd_lengths(fw):
    key, iv = os.urandom(16), b"\xff" * 15 + b"\xfe"  # counter wraps mid-message
    data = os.urandom(77)
    enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    expected = (enc.update(data) + enc.finalize()).hex()
    code = (
        "from capdev import platform as p\nimport json\n"
        f"print(json.dumps(p.hexlify(p.aes_ctr(p.unhexlify('{key.hex()}'), p.unhexlify('{iv.hex()}'), p.unhexlify('{data.hex()}')))))\n"
    )
    assert fw.run_json(code) == expected


def test_ticks_wrap_safely(fw):
    code = (
        "from capdev import platform as p\nimport json\n"
        "a = p.ticks_ms(); b = p.ticks_add(a, 1500)\n"
        "print(json.dumps([p.ticks_diff(b, a), p.ticks_diff(a, b), p.ticks_diff(p.ticks_add(a, -20), a)]))\n"
    )
    assert fw.run_json(code) == [1500, -1500, -20]


def test_atomic_write_replaces_and_reads_back(fw, tmp_path):
    target = tmp_path / "state.bin"
    target.write_bytes(b"old")
    code = (
        "from capdev import platform as p\nimport json\n"
        f"p.atomic_write('{target}', b'new state')\n"
        f"print(json.dumps([p.read_file('{target}').decode(), p.read_file('{target}.missing'), p.read_file('{target}.tmp')]))\n"
    )
    assert fw.run_json(code) == ["new state", None, None]  # no .tmp left behind
