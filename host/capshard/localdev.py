"""Devices on this machine: provision a device directory and run the real
firmware agent in it, under MicroPython or CPython. Used by tests and the demo."""

import json
import os
import subprocess

from . import fwrun
from .paths import BOARD_CONFIGS_DIR


def provision_dir(directory, keystore, device_id, broker_host, broker_port,
                  board="simulated", board_overrides=None):
    """Write board.json and device.json (mode 600: it holds the key)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(BOARD_CONFIGS_DIR, f"{board}.json")) as f:
        board_cfg = json.load(f)
    board_cfg.update(board_overrides or {})
    with open(os.path.join(directory, "board.json"), "w") as f:
        json.dump(board_cfg, f, indent=2)
    keystore.provision(device_id)
    ident = keystore.identity(device_id)
    ident["broker"] = {"host": broker_host, "port": broker_port}
    path = os.path.join(directory, "device.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(ident, f)
    return directory


def spawn_agent(runtime, directory, heap_kb=fwrun.DEFAULT_HEAP_KB, log_path=None, code="mpy"):
    """Start the device agent; its console goes to ``log_path`` (default: agent.log).

    ``code`` (MicroPython): "mpy" loads the compiled modules into the heap;
    "romfs" runs them in place from a ROMFS image, as a board with a ROMFS
    partition does (see fwrun.command)."""
    log_path = log_path or os.path.join(directory, "agent.log")
    log = open(log_path, "ab")
    args = ["-m", "capdev.agent", os.path.join(directory, "board.json"),
            os.path.join(directory, "device.json"), directory]
    proc = fwrun.spawn(runtime, args, heap_kb=heap_kb, code=code, stdout=log, stderr=subprocess.STDOUT,
                       start_new_session=True)
    log.close()
    proc.log_path = log_path
    return proc


def read_log(proc):
    with open(proc.log_path, errors="replace") as f:
        return f.read()


def stop(proc, timeout=5):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
