# Key derivation on top of the platform's HMAC-SHA256: HKDF (RFC 5869) for
# tunnel session keys and PBKDF2 (RFC 8018) for stored passwords. Pure code.
from capdev import platform

HASH_LEN = 32


def hkdf_extract(salt, ikm):
    if not salt:
        salt = bytes(HASH_LEN)  # RFC 5869 2.2: absent salt is HashLen zeros
    return platform.hmac_sha256(salt, ikm)


def hkdf_expand(prk, info, length):
    if length < 1 or length > 255 * HASH_LEN:
        raise ValueError("HKDF length must be 1.." + str(255 * HASH_LEN) + " bytes")
    if len(prk) < HASH_LEN:
        raise ValueError("HKDF PRK must be at least 32 bytes")
    out = b""
    block = b""
    i = 1
    while len(out) < length:
        block = platform.hmac_sha256(prk, block + info + bytes((i,)))
        out += block
        i += 1
    return out[:length]


def hkdf(ikm, salt, info, length):
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


def pbkdf2_sha256(password, salt, iterations, dklen=32):
    """PBKDF2-HMAC-SHA256. Slow on purpose: ``iterations`` HMACs per block."""
    if iterations < 1:
        raise ValueError("PBKDF2 needs at least one iteration")
    if dklen < 1 or dklen > 4 * HASH_LEN:
        raise ValueError("PBKDF2 key length must be 1..128 bytes here")
    mac = platform.hmac_sha256
    out = b""
    block = 1
    while len(out) < dklen:
        u = mac(password, salt + block.to_bytes(4, "big"))
        acc = int.from_bytes(u, "big")  # XOR of 32-byte strings as one big int
        for _ in range(iterations - 1):
            u = mac(password, u)
            acc ^= int.from_bytes(u, "big")
        out += acc.to_bytes(HASH_LEN, "big")
        block += 1
    return out[:dklen]
