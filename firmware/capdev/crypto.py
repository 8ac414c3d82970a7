# Hashing, HMAC-SHA256 and AES for the runtime at hand: C implementations
# where the runtime has them (hashlib, hmac, cryptolib or cryptography).
# Cold: imported on first use through capdev.platform (platform.hmac_sha256
# and so on), by the instruction check and the VPN shards; the agent unloads
# it with the checking code (agent.CHECKING).
import binascii
import hashlib

from capdev.platform import IS_MICROPYTHON, const


def sha256(data):
    return hashlib.sha256(data).digest()


def hexlify(data):
    return binascii.hexlify(data).decode()


def unhexlify(text):
    return binascii.unhexlify(text)


try:
    import hmac as _hmac  # CPython's, in C; MicroPython has none
except ImportError:
    _hmac = None

if _hmac is None:
    _BLOCK = const(64)

    def hmac_key(key):
        """``key`` prepared for hmac_sha256_keyed(): for a key that MACs many
        messages, so its RFC 2104 pads are computed once."""
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        # built in place: no generator, no intermediate copies
        ipad = bytearray(_BLOCK)
        ipad[:len(key)] = key
        opad = bytearray(ipad)
        for i in range(_BLOCK):
            c = ipad[i]
            ipad[i] = c ^ 0x36
            opad[i] = c ^ 0x5C
        return ipad, opad

    def hmac_sha256_keyed(prepared, msg, more=None):
        """HMAC-SHA256 of ``msg`` then ``more`` (hashed in turn, never joined)."""
        inner = hashlib.sha256(prepared[0])
        inner.update(msg)
        if more is not None:
            inner.update(more)
        outer = hashlib.sha256(prepared[1])
        outer.update(inner.digest())
        return outer.digest()
else:
    def hmac_key(key):
        return _hmac.new(key, None, hashlib.sha256)

    def hmac_sha256_keyed(prepared, msg, more=None):
        h = prepared.copy()
        h.update(msg)
        if more is not None:
            h.update(more)
        return h.digest()


def hmac_sha256(key, msg):
    return hmac_sha256_keyed(hmac_key(key), msg)


def constant_time_equal(a, b):
    """Compare MACs without leaking the position of the first difference."""
    if len(a) != len(b):
        return False
    acc = 0
    for x, y in zip(a, b):
        acc |= x ^ y
    return acc == 0


# ---- AES ----------------------------------------------------------------------
# AesEcb(key).encrypt_block(16 bytes) is the primitive; CTR is built on it here
# because MicroPython's cryptolib often ships without CTR mode.
if IS_MICROPYTHON:
    import cryptolib

    class AesEcb:
        def __init__(self, key):
            if len(key) not in (16, 24, 32):
                raise ValueError("AES key must be 16, 24 or 32 bytes")
            self._aes = cryptolib.aes(key, 1)

        def encrypt_block(self, block):
            return self._aes.encrypt(block)
else:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    class AesEcb:
        def __init__(self, key):
            if len(key) not in (16, 24, 32):
                raise ValueError("AES key must be 16, 24 or 32 bytes")
            self._enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()

        def encrypt_block(self, block):
            return self._enc.update(block)


def aes_ctr(key, counter_block, data):
    """AES-CTR (NIST SP 800-38A): the 16-byte counter block increments big-endian."""
    if len(counter_block) != 16:
        raise ValueError("CTR counter block must be 16 bytes")
    ecb = AesEcb(key)
    ctr = int.from_bytes(counter_block, "big")
    out = bytearray(len(data))
    for off in range(0, len(data), 16):
        ks = ecb.encrypt_block(ctr.to_bytes(16, "big"))
        chunk = data[off:off + 16]
        for i in range(len(chunk)):
            out[off + i] = chunk[i] ^ ks[i]
        ctr = (ctr + 1) & ((1 << 128) - 1)
    return bytes(out)
