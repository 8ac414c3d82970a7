# The only module that knows which runtime it is on.
# Everything else imports time, crypto and file helpers from here.
import json
import os
import sys
import time

IS_MICROPYTHON = sys.implementation.name == "micropython"
RUNTIME = sys.implementation.name

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

# ---- time -------------------------------------------------------------------
if IS_MICROPYTHON:
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
    sleep_ms = time.sleep_ms
else:
    # CPython has no wrapping ticks; emulate MicroPython's 30-bit wrap so that
    # code which forgets ticks_diff() breaks in tests, not only on boards.
    _TICKS_PERIOD = 1 << 30
    _TICKS_HALF = _TICKS_PERIOD // 2

    def ticks_ms():
        return int(time.monotonic() * 1000) & (_TICKS_PERIOD - 1)

    def ticks_diff(a, b):
        return ((a - b + _TICKS_HALF) & (_TICKS_PERIOD - 1)) - _TICKS_HALF

    def ticks_add(a, delta):
        return (a + delta) & (_TICKS_PERIOD - 1)

    def sleep_ms(ms):
        time.sleep(ms / 1000)


def wall_time():
    """Seconds since the Unix epoch; may be wrong on a board before NTP."""
    return int(time.time())


def random_bytes(n):
    return os.urandom(n)


def random_below(n):
    """Uniform-ish integer in [0, n) from the OS random source (n < 2**32)."""
    if n <= 1:
        return 0
    return int.from_bytes(os.urandom(4), "big") % n


# ---- memory -----------------------------------------------------------------
import gc


def heap_used():
    """Bytes allocated on the heap after a collection, or None where unknown."""
    gc.collect()
    if IS_MICROPYTHON:
        return gc.mem_alloc()
    return None


def heap_free():
    if IS_MICROPYTHON:
        gc.collect()
        return gc.mem_free()
    return None


def print_exception(exc, file=None):
    if IS_MICROPYTHON:
        sys.print_exception(exc, file or sys.stderr)
        return
    try:
        import traceback  # CPython only; MicroPython took the branch above
    except ImportError:
        print(repr(exc), file=file or sys.stderr)
        return
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=file or sys.stderr)


# ---- hashing ----------------------------------------------------------------
import hashlib
import binascii


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


# ---- files ------------------------------------------------------------------
def read_file(path):
    """The file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def atomic_write(path, data):
    """Replace ``path`` with ``data`` so a power cut leaves the old or the new file.

    Write a temporary sibling, flush it, then rename over the target (rename is
    atomic on POSIX and on LittleFS).
    """
    _replace(path, "wb", data)


def atomic_write_json(path, obj):
    """atomic_write of ``obj`` as JSON, streamed into the file so the whole
    text never has to fit the heap at once."""
    _replace(path, "w", obj)


def _replace(path, mode, content):
    tmp = path + ".tmp"
    with open(tmp, mode) as f:
        if mode == "w":
            json.dump(content, f)
        else:
            f.write(content)
        f.flush()
        if hasattr(os, "fsync"):
            os.fsync(f.fileno())
    try:
        os.rename(tmp, path)
    except OSError:
        # FAT refuses to rename over an existing file.
        try:
            os.remove(path)
        except OSError:
            pass
        os.rename(tmp, path)


def file_exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False
