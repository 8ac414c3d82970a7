"""Run the MicroPython unix port with a ROMFS image mapped outside its heap.

On a board the ROMFS partition is flash, memory-mapped: code imported from it
runs in place and costs the RAM heap nothing. The unix port has no flash, so
this launcher stands in for it: it maps the image file read-only (mmap) into
the process, then starts MicroPython in the same process (the pip-installed
unix port is a CPython extension, ``micropython_run``) with the mapping's
address in CAPDEV_ROMFS. ``romboot.mount()`` on the firmware side wraps that
memory with ``uctypes.bytearray_at`` and mounts it with ``vfs.VfsRom``; the GC
heap never holds the image.

Usage: python -m capshard.romexec IMAGE [micropython arguments...]
"""

import ctypes
import importlib.util
import mmap
import os
import sys

ENV_MAPPED = "CAPDEV_ROMFS"  # same name as firmware/romboot.py


def available():
    """True when this interpreter can host MicroPython in-process (so can map the image)."""
    return importlib.util.find_spec("micropython_run") is not None


def map_image(path):
    """(address, size) of ``path`` mapped read-only for the life of the process."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise ValueError(f"ROMFS image {path} is empty")
        # The mmap module cannot give the address of a read-only mapping; libc can.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap of {path} failed")
        return addr, size
    finally:
        os.close(fd)  # the mapping stays valid without the descriptor


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    import micropython_run

    addr, size = map_image(argv[0])
    os.environ[ENV_MAPPED] = f"{addr}:{size}"
    return micropython_run.run_main(["micropython", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
