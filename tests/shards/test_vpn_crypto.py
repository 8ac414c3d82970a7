"""Known-answer tests for the VPN shards' crypto, under MicroPython and CPython:
AES-CTR (NIST SP 800-38A F.5.1 / F.5.5, all four blocks), HMAC-SHA256
(RFC 4231), HKDF (RFC 5869 A.1-A.3), PBKDF2-HMAC-SHA256 (published vectors
and hashlib.pbkdf2_hmac), and the encrypt-then-MAC construction checked
byte for byte against an independent host implementation."""

import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PT = ("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
      "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
CTR = [
    ("2b7e151628aed2a6abf7158809cf4f3c", "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
     "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff"
     "5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee"),
    ("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
     "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
     "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6"),
]

# RFC 4231 cases 1-4, 6, 7 (full) and 5 (truncated to 128 bits, as our tags are).
RFC4231 = [
    ("0b" * 20, b"Hi There".hex(), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe".hex(), b"what do ya want for nothing?".hex(),
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    ("aa" * 20, "dd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    ("0102030405060708090a0b0c0d0e0f10111213141516171819", "cd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    ("aa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    ("aa" * 131, b"This is a test using a larger than block-size key and a larger than block-size data. "
     b"The key needs to be hashed before being used by the HMAC algorithm.".hex(),
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]
RFC4231_TRUNC = ("0c" * 20, b"Test With Truncation".hex(), "a3b6167473100ee06e0c796c2955552b")

# RFC 5869 A.1-A.3 (SHA-256): ikm, salt, info, L, prk, okm
RFC5869 = [
    ("0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9", 42,
     "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"),
    ("".join(f"{i:02x}" for i in range(0x00, 0x50)), "".join(f"{i:02x}" for i in range(0x60, 0xb0)),
     "".join(f"{i:02x}" for i in range(0xb0, 0x100)), 82,
     "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
     "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09"
     "da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"),
    ("0b" * 22, "", "", 42,
     "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"),
]

# PBKDF2-HMAC-SHA256 published vectors (the RFC 6070 inputs run with SHA-256).
PBKDF2 = [
    (b"password", b"salt", 1, 32, "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"),
    (b"password", b"salt", 2, 32, "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43"),
    (b"password", b"salt", 4096, 32, "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"),
    (b"passwordPASSWORDpassword", b"saltSALTsaltSALTsaltSALTsaltSALTsalt", 4096, 40,
     "348c89dbcbd32b2f32d814b8116e84cf2b17347ebc1800181c4e2a1fb8dd53e1c635518c7dac47e9"),
]

PRELUDE = "import json\nfrom capdev import platform as p\nfrom capdev.shards.vpn import etm, kdf\nout = {}\nH = p.unhexlify\n"


def test_aes_ctr_keystream_matches_sp800_38a(fw):
    code = PRELUDE + "out['ctr'] = []\n"
    for key, ctr, _ in CTR:
        code += f"out['ctr'].append(p.hexlify(etm.aes_ctr(p.AesEcb(H('{key}')), H('{ctr}'), H('{PT}'))))\n"
    # a counter that wraps mid-message, checked against cryptography below
    code += "out['wrap'] = p.hexlify(etm.aes_ctr(p.AesEcb(bytes(16)), b'\\xff' * 16, bytes(40)))\n"
    code += "print(json.dumps(out))\n"
    got = fw.run_json(code)
    assert got["ctr"] == [ct for *_, ct in CTR]
    enc = Cipher(algorithms.AES(bytes(16)), modes.CTR(b"\xff" * 16)).encryptor()
    assert got["wrap"] == (enc.update(bytes(40)) + enc.finalize()).hex()


def test_hmac_sha256_rfc4231_and_hkdf_rfc5869(fw):
    code = PRELUDE + "out['hmac'] = []\nout['hkdf'] = []\n"
    for key, msg, _ in RFC4231:
        code += f"out['hmac'].append(p.hexlify(kdf.hkdf_extract(H('{key}'), H('{msg}'))))\n"
    k, m, _ = RFC4231_TRUNC
    code += f"out['trunc'] = p.hexlify(kdf.hkdf_extract(H('{k}'), H('{m}'))[:etm.TAG_LEN])\n"
    for ikm, salt, info, n, _, _ in RFC5869:
        code += (f"prk = kdf.hkdf_extract(H('{salt}'), H('{ikm}'))\n"
                 f"out['hkdf'].append([p.hexlify(prk), p.hexlify(kdf.hkdf_expand(prk, H('{info}'), {n}))])\n")
    code += ("errs = []\n"
             "for n in (0, 255 * 32 + 1):\n"
             "    try:\n        kdf.hkdf_expand(bytes(32), b'', n)\n"
             "    except ValueError as e:\n        errs.append(str(e))\n"
             "out['errs'] = errs\nprint(json.dumps(out))\n")
    got = fw.run_json(code)
    assert got["hmac"] == [mac for *_, mac in RFC4231]
    assert got["trunc"] == RFC4231_TRUNC[2]
    assert got["hkdf"] == [[prk, okm] for *_, prk, okm in RFC5869]
    assert len(got["errs"]) == 2 and all("HKDF length" in e for e in got["errs"])


def test_pbkdf2_sha256_matches_published_vectors_and_hashlib(fw):
    cases = [(pw, salt, it, n) for pw, salt, it, n, _ in PBKDF2]
    extra = [(os.urandom(i + 1), os.urandom(16), 7 + i, 16 + 9 * i) for i in range(6)]
    code = PRELUDE + "out['dk'] = []\n"
    for pw, salt, it, n in cases + extra:
        code += f"out['dk'].append(p.hexlify(kdf.pbkdf2_sha256(H('{pw.hex()}'), H('{salt.hex()}'), {it}, {n})))\n"
    code += "print(json.dumps(out))\n"
    got = fw.run_json(code, timeout=60)
    assert got["dk"][:len(PBKDF2)] == [dk for *_, dk in PBKDF2]
    assert got["dk"][len(PBKDF2):] == [hashlib.pbkdf2_hmac("sha256", pw, s, it, n).hex() for pw, s, it, n in extra]


def _host_etm(suite_key_len, name, session_key, nonce, aad, pt):
    """An independent encrypt-then-MAC: cryptography's AES-CTR, stdlib HMAC and HKDF."""
    prk = hmac.new(bytes(32), session_key, hashlib.sha256).digest()
    okm, block, i = b"", b"", 1
    while len(okm) < suite_key_len + 32:
        block = hmac.new(prk, block + b"capshard etm " + name + bytes([i]), hashlib.sha256).digest()
        okm += block
        i += 1
    ek, mk = okm[:suite_key_len], okm[suite_key_len:suite_key_len + 32]
    if ek:
        enc = Cipher(algorithms.AES(ek), modes.CTR(nonce + bytes(8))).encryptor()
        body = enc.update(pt) + enc.finalize()
    else:
        body = pt
    return body + hmac.new(mk, nonce + aad + body, hashlib.sha256).digest()[:16]


def test_encrypt_then_mac_agrees_with_host_and_rejects_every_flipped_byte(fw):
    key, nonce, aad, pt = os.urandom(32), os.urandom(8), os.urandom(16), os.urandom(100)
    code = PRELUDE + f"""
k, n, a, m = H('{key.hex()}'), H('{nonce.hex()}'), H('{aad.hex()}'), H('{pt.hex()}')
out['sealed'] = {{}}
for sid in (etm.SUITE_INTEGRITY, etm.SUITE_AES128_CTR, etm.SUITE_AES256_CTR):
    s = etm.Suite(sid, k)
    sealed = s.seal(n, a, m)
    out['sealed'][etm.SUITE_NAMES[sid]] = p.hexlify(sealed)
    assert etm.Suite(sid, k).open(n, a, sealed) == m
    bad = 0
    for i in range(len(sealed)):
        t = bytearray(sealed)
        t[i] ^= 0x01
        try:
            s.open(n, a, bytes(t))
        except etm.AuthError:
            bad += 1
    for wrong in ((n[:7] + bytes((n[7] ^ 1,)), a), (n, a[:-1] + bytes((a[-1] ^ 1,)))):
        try:
            s.open(wrong[0], wrong[1], sealed)
        except etm.AuthError:
            bad += 1
    out[etm.SUITE_NAMES[sid]] = bad
print(json.dumps(out))
"""
    got = fw.run_json(code)
    for name, klen in (("integrity-only", 0), ("aes128-ctr", 16), ("aes256-ctr", 32)):
        assert got["sealed"][name] == _host_etm(klen, name.encode(), key, nonce, aad, pt).hex(), name
        assert got[name] == 100 + 16 + 2, name  # every flipped byte, wrong nonce, wrong header
    assert got["sealed"]["integrity-only"].startswith(pt.hex())  # the null suite does not encrypt
    assert not got["sealed"]["aes128-ctr"].startswith(pt[:8].hex())
