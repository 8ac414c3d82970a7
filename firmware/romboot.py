# Boot shim: mounts the firmware's ROMFS image at /rom and puts /rom first on
# sys.path, so capdev is imported from it. Bytecode in a ROMFS image runs in
# place, so the code stays out of the RAM heap. This module lives outside
# capdev on purpose: it runs before capdev is imported, and capdev must then
# come from the image, not from wherever this file was found.
#
# Where the image comes from:
#   board      the ROMFS partition (vfs.rom_ioctl); the runtime usually has
#              mounted it at /rom already, then only sys.path is fixed
#   unix port  the host maps the image file read-only outside the GC heap and
#              passes "ADDRESS:SIZE" in CAPDEV_ROMFS (capshard.romexec), or,
#              without that launcher, names the file in CAPDEV_ROMFS_FILE and
#              the image is read into the heap (its size then counts as heap)
import sys

MOUNT = "/rom"
ENV_MAPPED = "CAPDEV_ROMFS"
ENV_FILE = "CAPDEV_ROMFS_FILE"


class RomError(Exception):
    pass


def _getenv(name):
    try:
        import os

        return os.getenv(name)
    except (ImportError, AttributeError):
        return None  # boards have no environment


def _partition(vfs):
    ioctl = getattr(vfs, "rom_ioctl", None)
    if ioctl is None:
        return None
    try:
        if ioctl(1) < 1:  # number of ROM segments
            return None
        return ioctl(2, 0)  # the first segment, as a memoryview over flash
    except OSError:
        return None


def _host_image():
    """(buffer, kind) named by the environment on the unix port, or (None, None)."""
    spec = _getenv(ENV_MAPPED)
    if spec:
        import uctypes

        try:
            addr, size = spec.split(":")
            return uctypes.bytearray_at(int(addr), int(size)), "mapped"
        except ValueError:
            raise RomError(ENV_MAPPED + " must be ADDRESS:SIZE, got " + spec)
    path = _getenv(ENV_FILE)
    if path:
        try:
            with open(path, "rb") as f:
                return f.read(), "heap"
        except OSError as e:
            raise RomError("cannot read ROMFS image " + path + ": errno " + str(e.errno))
    return None, None


def _mounted(vfs):
    try:
        return any(point == MOUNT for _, point in vfs.mount())
    except TypeError:
        return False  # a runtime whose mount() needs arguments: treat as not mounted


def _first_on_path():
    while MOUNT in sys.path:
        sys.path.remove(MOUNT)
    sys.path.insert(0, MOUNT)


def mount():
    """Mount the firmware image; returns how: "partition", "mapped", "heap",
    "premounted" (the runtime did it), or None when there is no image (CPython,
    a board without ROMFS): code then comes from the filesystem as before.
    A named image that cannot be used raises RomError."""
    try:
        import vfs
    except ImportError:
        return None
    if _mounted(vfs):
        _first_on_path()
        return "premounted"
    image, kind = _host_image()
    if image is None:
        image, kind = _partition(vfs), "partition"
    if image is None:
        return None
    try:
        vfs.mount(vfs.VfsRom(image), MOUNT)
    except (OSError, AttributeError) as e:
        raise RomError("cannot mount the ROMFS image: " + str(e))
    _first_on_path()
    return kind
