# Encrypt-then-MAC with AES-CTR and HMAC-SHA256 (pure; no I/O, no state but
# keys). A suite turns a 32-byte session key into an encryption key and a MAC
# key with HKDF, so one key from the tunnel serves every suite.
from capdev import platform
from capdev.shards.vpn import kdf

TAG_LEN = 16  # HMAC-SHA256 truncated to 128 bits (as RFC 4868 does for IPsec)
NONCE_LEN = 8

SUITE_INTEGRITY = 0  # HMAC only: the null cipher's data stays in clear
SUITE_AES128_CTR = 1
SUITE_AES256_CTR = 2
SUITE_NAMES = {SUITE_INTEGRITY: "integrity-only", SUITE_AES128_CTR: "aes128-ctr",
               SUITE_AES256_CTR: "aes256-ctr"}
ENC_KEY_LEN = {SUITE_INTEGRITY: 0, SUITE_AES128_CTR: 16, SUITE_AES256_CTR: 32}


def _xor(data, stream):
    n = len(data)
    if n == 0:
        return b""
    # XOR as two big ints: one C-level operation on both runtimes instead of
    # a Python loop per byte.
    x = int.from_bytes(data, "big") ^ int.from_bytes(stream[:n], "big")
    return x.to_bytes(n, "big")


def ctr_keystream(ecb, counter_block, nbytes):
    """AES-CTR keystream (SP 800-38A 6.5); the counter increments big-endian."""
    nblocks = (nbytes + 15) // 16
    ctr = int.from_bytes(counter_block, "big")
    mask = (1 << 128) - 1
    blocks = bytearray(nblocks * 16)
    for i in range(nblocks):
        blocks[i * 16:i * 16 + 16] = ((ctr + i) & mask).to_bytes(16, "big")
    # ECB over many blocks in one call; both backends accept a whole number
    # of blocks. Fall back to one block per call if one ever does not.
    ks = ecb.encrypt_block(bytes(blocks))
    if len(ks) != len(blocks):
        ks = b"".join(ecb.encrypt_block(bytes(blocks[i:i + 16])) for i in range(0, len(blocks), 16))
    return ks


def aes_ctr(ecb, counter_block, data):
    if len(counter_block) != 16:
        raise ValueError("CTR counter block must be 16 bytes")
    return _xor(data, ctr_keystream(ecb, counter_block, len(data)))


class AuthError(Exception):
    """A sealed message whose tag does not verify (tampered or wrong key)."""


class Suite:
    """One direction's keys for one suite. seal/open take an 8-byte nonce
    (never reused under a key: the tunnel's sequence number) and associated
    data (the tunnel header) that is authenticated but not encrypted."""

    def __init__(self, suite_id, session_key):
        if suite_id not in ENC_KEY_LEN:
            raise ValueError("unknown cipher suite " + str(suite_id))
        if len(session_key) < 32:
            raise ValueError("session key must be at least 32 bytes")
        self.suite_id = suite_id
        self.name = SUITE_NAMES[suite_id]
        n = ENC_KEY_LEN[suite_id]
        keys = kdf.hkdf(session_key, b"", b"capshard etm " + self.name.encode(), n + 32)
        self._ecb = platform.AesEcb(keys[:n]) if n else None
        self._mac_key = keys[n:]

    def _tag(self, nonce, aad, body):
        return platform.hmac_sha256(self._mac_key, nonce + aad + body)[:TAG_LEN]

    def seal(self, nonce, aad, plaintext):
        if len(nonce) != NONCE_LEN:
            raise ValueError("nonce must be 8 bytes")
        body = plaintext if self._ecb is None else aes_ctr(self._ecb, nonce + bytes(8), plaintext)
        return body + self._tag(nonce, aad, body)

    def open(self, nonce, aad, sealed):
        """Plaintext, or AuthError. The tag is checked before any decryption."""
        if len(nonce) != NONCE_LEN:
            raise ValueError("nonce must be 8 bytes")
        if len(sealed) < TAG_LEN:
            raise AuthError("sealed data shorter than its tag")
        body = sealed[:-TAG_LEN]
        if not platform.constant_time_equal(self._tag(nonce, aad, body), sealed[-TAG_LEN:]):
            raise AuthError("tag mismatch")
        return body if self._ecb is None else aes_ctr(self._ecb, nonce + bytes(8), body)
