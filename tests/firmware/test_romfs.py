"""The firmware runs from a ROMFS image (capshard.build.build_romfs), mounted by
romboot: every capdev module comes from /rom, shards load and unload through
the ShardManager from it, and on MicroPython the bytecode stays out of the heap.
Under CPython romboot finds no image and the sources are used as before."""

import json
import os
import subprocess

import pytest

from capshard import build, fwrun

HEAP_KB = 256

AGENT_MODULES = ["capdev.agent", "capdev.rnma.monitor", "capdev.rnma.live", "capdev.rnma.report"]

RUN_FROM_IMAGE = """
import gc, json, sys
import romboot
again = romboot.mount()  # the runner mounted it already: a second call only fixes sys.path
gc.collect()
h0 = gc.mem_alloc() if hasattr(gc, "mem_alloc") else None
for name in %r:
    __import__(name)
gc.collect()
h1 = gc.mem_alloc() if hasattr(gc, "mem_alloc") else None
files = sorted(set(m.__file__.split("/capdev/")[0] for k, m in sys.modules.items()
                   if k.startswith("capdev") and hasattr(m, "__file__")))
from capdev import cbor
from capdev.cmm.manager import ShardManager
m = ShardManager({"cpu": 100, "mem_kb": 96, "bw_kbps": 1000}, 8)
def op(shard, module):
    return {"op": "activate", "shard": shard, "ver": "1.0", "slot": "slot." + shard, "cpu": 10,
            "mem_kb": 16, "bw_kbps": 100, "prio": "medium", "dur_s": 0, "alt": None, "module": module}
acks = m.apply([op("count", "capdev.shards.counter"), op("cipher", "capdev.shards.null_cipher")])
for i in range(20):
    m.tick()
rep = m.report()
loaded = sorted(k for k in sys.modules if k.startswith("capdev.shards."))
shard_file = sys.modules["capdev.shards.counter"].__file__
acks += m.apply([{"op": "deactivate", "shard": "count"}, {"op": "deactivate", "shard": "cipher"}])
after = sorted(k for k in sys.modules if k.startswith("capdev.shards."))
print(json.dumps({"again": again, "path0": sys.path[0], "roots": files, "heap": [h0, h1],
                  "acks": [[a["shard"], a["code"], a["reason"]] for a in acks],
                  "state": rep["count"]["state"], "loaded": loaded, "shard_file": shard_file,
                  "after": after, "cbor": cbor.dumps({"a": 1}).hex()}))
""" % (AGENT_MODULES,)


def test_agent_and_shards_run_from_the_image(runtime):
    p = fwrun.run(runtime, RUN_FROM_IMAGE, heap_kb=HEAP_KB, deploy="romfs")
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["acks"] == [["count", "activated", ""], ["cipher", "activated", ""],
                           ["count", "deactivated", ""], ["cipher", "deactivated", ""]]
    assert out["state"] == "running"
    assert out["loaded"] == ["capdev.shards.counter", "capdev.shards.null_cipher", "capdev.shards.sdk"]
    assert out["after"] == ["capdev.shards.sdk"]  # shard code unloaded again; the shared SDK stays
    assert out["cbor"] == "a1616101"
    if runtime == "micropython":
        assert out["again"] == "premounted" and out["path0"] == "/rom"
        assert out["roots"] == ["/rom"]  # every capdev module, agent and shards, from the image
        assert out["shard_file"] == "/rom/capdev/shards/counter.mpy"
    else:
        assert out["again"] is None  # no ROMFS on CPython: sources, as before
        assert out["shard_file"].endswith(os.path.join("firmware", "capdev", "shards", "counter.py"))


def _agent_import_heap(deploy):
    code = ("import gc\ngc.collect()\nh0 = gc.mem_alloc()\n"
            + "".join(f"import {m}\n" for m in AGENT_MODULES)
            + "gc.collect()\nprint(gc.mem_alloc() - h0)\n")
    p = fwrun.run("micropython", code, heap_kb=HEAP_KB, deploy=deploy)
    assert p.returncode == 0, p.stdout + p.stderr
    return int(p.stdout.strip().splitlines()[-1])


def test_code_in_place_takes_far_less_heap_than_mpy_files():
    assert fwrun.romfs_placement() == "mapped"  # the venv's unix port is hosted in-process
    mpy, rom = _agent_import_heap("mpy"), _agent_import_heap("romfs")
    # Bytecode is about a third of what importing the agent costs; from the
    # image it is not copied, so the heap grows by well under 80 % as much.
    assert rom < 0.8 * mpy, (rom, mpy)


def test_image_read_into_the_heap_works_and_bad_images_are_reported(tmp_path):
    """Without the mapping launcher (a plain micropython binary) the image is
    read into the heap from CAPDEV_ROMFS_FILE; a missing or broken image is
    one clear RomError."""
    image = build.build_romfs(build.DEFAULT_ROMFS)
    with open(image, "rb") as f:
        assert f.read(3) == b"\xd2\xcd\x31"  # ROMFS header
    boot_dir = os.path.join(os.path.dirname(build.DEFAULT_ROMFS), "boot")
    build.compile_firmware(boot_dir, include=["romboot"])
    code = ("import json, romboot\nkind = romboot.mount()\nimport capdev.agent, os\n"
            "print(json.dumps([kind, capdev.agent.__file__, sorted(os.listdir('/rom/capdev'))[:3]]))")
    broken = tmp_path / "broken.romfs"
    broken.write_bytes(b"not a romfs image")
    outcomes = {}
    for name, path in (("good", image), ("missing", str(tmp_path / "nope.romfs")), ("broken", str(broken))):
        env = dict(os.environ, MICROPYPATH=boot_dir + ":.frozen", CAPDEV_ROMFS_FILE=path)
        env.pop("CAPDEV_ROMFS", None)
        p = subprocess.run([fwrun.micropython_binary(), "-X", f"heapsize={HEAP_KB}k", "-c", code],
                           env=env, capture_output=True, text=True, timeout=30)
        outcomes[name] = p
    good = json.loads(outcomes["good"].stdout.strip().splitlines()[-1])
    assert good == ["heap", "/rom/capdev/agent.mpy", ["__init__.mpy", "agent.mpy", "cbor.mpy"]]
    for name, want in (("missing", "RomError: cannot read ROMFS image"),
                       ("broken", "RomError: cannot mount the ROMFS image")):
        p = outcomes[name]
        assert p.returncode != 0 and want in p.stdout + p.stderr, (name, p.stdout, p.stderr)


def test_build_romfs_ships_only_what_is_asked_and_no_main_py(tmp_path):
    out = str(tmp_path / "fw.romfs")
    build.build_romfs(out, include=["capdev.shards.counter"])
    code = ("import json, os, vfs\nvfs.mount(vfs.VfsRom(open(%r, 'rb').read()), '/rom')\n"
            "def walk(d):\n    r = []\n    for n in os.listdir(d):\n"
            "        p = d + '/' + n\n        r += walk(p) if os.stat(p)[0] & 0x4000 else [p]\n    return r\n"
            "print(json.dumps(sorted(walk('/rom'))))" % out)
    p = fwrun.run("micropython", code)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == [
        "/rom/capdev/__init__.mpy", "/rom/capdev/shards/__init__.mpy", "/rom/capdev/shards/counter.mpy",
        "/rom/romboot.mpy"]
    with pytest.raises(ValueError, match="-c CODE"):
        fwrun.command("micropython", ["script.py"], code="romfs")
