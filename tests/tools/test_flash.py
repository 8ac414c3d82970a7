"""`capshard flash` on the simulated board with the real mpremote: it copies
only what differs, verifies on the board, keeps secrets off the screen, and an
interrupted flash leaves a board that boots (old firmware, or the new one
completed by main.py from the journal)."""

import hashlib
import json
import os
import shutil
import subprocess

import pytest
from boardtools import capshard, reboot, wait_for

from capshard import boards, flash, fwrun
from capshard.paths import FIRMWARE_DIR
from capshard.keys import Keystore


def board_hashes(board_dir):
    out = {}
    for dirpath, dirnames, files in os.walk(board_dir):
        dirnames[:] = [d for d in dirnames if d not in (".stage", "state")]
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, board_dir)] = hashlib.sha256(f.read()).hexdigest()
    return out


def flash_cli(port, ks, *extra, check=True):
    return capshard("flash", port, "--board", "simulated", "--device-id", "sim-1", "--keystore", ks,
                    "--broker-host", "127.0.0.1", "--broker-port", "1883", *extra, check=check)


def test_flash_copies_only_what_differs_and_never_shows_secrets(simboard, tmp_path):
    board = simboard()
    ks = str(tmp_path / "keys.json")
    first = flash_cli(board.port, ks)
    assert "copy 1/" in first.stdout and "verify:" in first.stdout and "reset:" in first.stdout
    manifest = json.load(open(os.path.join(board.board_dir, "fw.json")))
    on_board = board_hashes(board.board_dir)
    for rel, digest in manifest["files"].items():
        assert on_board[rel] == digest, rel
    assert "capdev/agent.mpy" in manifest["files"] and "main.py" in manifest["files"]
    assert "capdev/shards/testing/__init__.mpy" not in manifest["files"]  # not in the board config
    ident = json.load(open(os.path.join(board.board_dir, "device.json")))
    kid, key = Keystore.load(ks).get("sim-1")
    assert ident["key"] == key.hex() and ident["kid"] == kid.decode()
    assert key.hex() not in first.stdout + first.stderr

    again = flash_cli(board.port, ks)
    assert "done: copied 0 files" in again.stdout, again.stdout
    assert board_hashes(board.board_dir) == on_board

    # A new broker port changes the two config files (and the manifest) only.
    moved = flash_cli(board.port, ks, "--broker-port", "1884", "--dry-run")
    assert "dry run done: would copy 3 files" in moved.stdout, moved.stdout
    assert board_hashes(board.board_dir) == on_board  # dry run changed nothing
    moved = flash_cli(board.port, ks, "--broker-port", "1884")
    assert "copy 1/3 board.json" in moved.stdout and "copy 2/3 device.json" in moved.stdout
    assert json.load(open(os.path.join(board.board_dir, "device.json")))["broker"]["port"] == 1884
    assert key.hex() not in moved.stdout + moved.stderr


def _image(ks, port):
    board, ident, ca = flash.prepare_board("simulated", "sim-1", ks, broker_host="127.0.0.1", broker_port=port)
    return flash.build_image(board, ident, ca, say=lambda t: None)


def test_interrupted_flash_leaves_a_booting_board(simboard, tmp_path):
    board = simboard()
    ks = str(tmp_path / "keys.json")
    old, new = _image(ks, 1883), _image(ks, 1999)
    flash.flash(board.port, old, say=lambda t: None)
    before = board_hashes(board.board_dir)

    # Cable pulled while staging: the running firmware was never touched.
    with pytest.raises(flash.FlashError, match="interrupted after staging 1 of 3.*still boots its previous firmware"):
        flash.flash(board.port, new, say=lambda t: None, interrupt_after=1)
    assert board_hashes(board.board_dir) == before
    assert not os.path.exists(os.path.join(board.board_dir, "fw.commit"))

    # Pulled after the journal: the next boot completes the update.
    with pytest.raises(flash.FlashError, match="after writing the journal.*completes the update at its next boot"):
        flash.flash(board.port, new, say=lambda t: None, interrupt_after="journal")
    assert os.path.exists(os.path.join(board.board_dir, "fw.commit"))
    reboot(board.port)
    done = wait_for(lambda: not os.path.exists(os.path.join(board.board_dir, "fw.commit")), 10)
    assert done
    now = board_hashes(board.board_dir)
    for rel, digest in new.hashes.items():
        assert now[rel] == digest, rel
    assert flash.flash(board.port, new, say=lambda t: None)["copied"] == []


def run_main_py(board_dir, with_firmware):
    """Boot firmware/main.py in ``board_dir`` under MicroPython (no pty needed)."""
    shutil.copy(os.path.join(FIRMWARE_DIR, "main.py"), board_dir)
    env = dict(os.environ, MICROPYPATH=(f"{FIRMWARE_DIR}:" if with_firmware else "") + ".frozen")
    p = subprocess.run([fwrun.micropython_binary(), "main.py"], cwd=board_dir, env=env,
                       capture_output=True, text=True, timeout=30)
    return p.stdout + p.stderr


def test_main_py_completes_a_journal_or_says_the_board_needs_a_reflash(tmp_path):
    def board(name, journal, staged=(), present=()):
        d = tmp_path / name
        (d / ".stage" / "sub").mkdir(parents=True)
        for rel in staged:
            (d / ".stage" / rel).write_text("new " + rel)
        for rel in present:
            (d / rel).write_text("old " + rel)
        if journal is not None:
            (d / "fw.commit").write_text(journal)
        return str(d)

    plan = json.dumps({"files": ["sub/x.py", "y.txt"], "remove": ["old.txt"]})
    ok = board("ok", plan, staged=["sub/x.py", "y.txt"], present=["y.txt", "old.txt"])
    out = run_main_py(ok, with_firmware=True)
    assert "completed an interrupted firmware update (2 files)" in out
    assert "boot stopped: board.json: file not found" in out  # then the boot goes on, and says why it stops
    assert open(os.path.join(ok, "y.txt")).read() == "new y.txt"
    assert open(os.path.join(ok, "sub", "x.py")).read() == "new sub/x.py"
    assert not os.path.exists(os.path.join(ok, "old.txt")) and not os.path.exists(os.path.join(ok, "fw.commit"))

    lost = board("lost", plan, staged=["y.txt"])
    out = run_main_py(lost, with_firmware=True)
    assert "FIRMWARE INCOMPLETE: reflash with `capshard flash` (sub/x.py missing)" in out
    assert "Traceback" not in out
    garbled = board("garbled", '{"files": [')
    assert "update journal unreadable" in run_main_py(garbled, with_firmware=True)
    empty = board("empty", None)
    assert "FIRMWARE INCOMPLETE" in run_main_py(empty, with_firmware=False)


def test_flash_refuses_what_cannot_work(tmp_path):
    ks = str(tmp_path / "keys.json")
    with pytest.raises(flash.FlashError, match="deployed by copying"):
        b, i, c = flash.prepare_board("openwrt-router", "r1", ks)
        flash.build_image(b, i, c)
    b, i, c = flash.prepare_board("simulated", "s1", ks)
    b["flash_kb"] = 16
    with pytest.raises(flash.FlashError, match="exceeds the flash budget .* 'flash_kb'"):
        flash.build_image(b, i, c, out_dir=str(tmp_path / "out"), say=lambda t: None)
    p = capshard("flash", "/dev/null", "--board", "esp32", "--device-id", "e1", "--keystore", ks, check=False)
    assert p.returncode == 1 and "uses TLS but no broker CA" in p.stderr
    p = capshard("flash", "/dev/null", "--board", "simulated", "--device-id", "bad/id", "--keystore", ks,
                 check=False)
    assert p.returncode == 2 and "device id" in p.stderr
    assert boards.load("simulated")["flash_kb"] >= 256


def test_board_build_ships_the_import_closure_and_nothing_else(tmp_path):
    from capshard import build

    root = tmp_path / "fw"
    (root / "capdev" / "shards").mkdir(parents=True)
    files = {
        "capdev/__init__.py": "",
        "capdev/agent.py": "from capdev import log\nimport capdev.net\n\ndef later():\n"
                           "    __import__('capdev.lazy')\n",
        "capdev/log.py": "", "capdev/net.py": "from capdev.log import x\n", "capdev/lazy.py": "",
        "capdev/unused.py": "", "capdev/shards/__init__.py": "", "capdev/shards/a.py": "",
        "capdev/shards/b.py": "",
    }
    for rel, text in files.items():
        (root / rel).write_text(text)
    board = {"board": "t", "shards": ["capdev.shards.a"]}
    assert build.board_modules(board, str(root)) == [
        "capdev", "capdev.agent", "capdev.lazy", "capdev.log", "capdev.net", "capdev.shards", "capdev.shards.a"]
    with pytest.raises(build.BuildError, match="capdev.shards.nope has no source"):
        build.board_modules(dict(board, shards=["capdev.shards.nope"]), str(root))
