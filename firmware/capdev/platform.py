# The only module that knows which runtime it is on (with crypto.py, which it
# reaches for crypto names). Everything else imports time, crypto and file
# helpers from here.
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


# ---- crypto -----------------------------------------------------------------
# Hashing, HMAC and AES live in crypto.py: the instruction check and the VPN
# shards need them, the resident hot loop does not. platform.<name> still
# reaches them, importing crypto.py on first use (the agent unloads it again
# with the instruction checking code).
_CRYPTO = ("sha256", "hexlify", "unhexlify", "hmac_key", "hmac_sha256_keyed", "hmac_sha256",
           "constant_time_equal", "AesEcb", "aes_ctr")


def __getattr__(name):
    if name in _CRYPTO:
        import capdev.crypto  # by full name: works while this module is still importing

        return getattr(sys.modules["capdev.crypto"], name)
    raise AttributeError(name)


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

