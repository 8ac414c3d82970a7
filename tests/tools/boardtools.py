"""Helpers for the board-tool tests: the CLI, a simulated board process, waiting."""

import os
import select
import subprocess
import sys
import time

from polling import wait_until

CLI = [sys.executable, "-m", "capshard"]


def capshard(*args, timeout=60, check=True):
    """Run the real CLI; returns the CompletedProcess (text)."""
    p = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"capshard {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


class SimProcess:
    def __init__(self, board_dir, heap_kb, link=None):
        self.board_dir = str(board_dir)
        extra = ["--link", str(link)] if link else []
        self.proc = subprocess.Popen([*CLI, "board", "sim", self.board_dir, "--heap-kb", str(heap_kb), *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line.startswith("/dev/"):
            self.stop()
            raise AssertionError(f"simulated board printed no port: {line!r} {self.proc.stderr.read()}")
        self.port = line

    def boots(self):
        """Boot count so far, from the simulator's own log (stderr)."""
        return self._log().count(" boot ")

    def _log(self):
        out = getattr(self, "_stderr", "")
        while select.select([self.proc.stderr], [], [], 0)[0]:
            chunk = os.read(self.proc.stderr.fileno(), 65536).decode(errors="replace")
            if not chunk:
                break
            out += chunk
        self._stderr = out
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_for(predicate, timeout, step=0.05):
    return wait_until(predicate, timeout, step)


def mpremote(port, *args, timeout=30):
    """The real mpremote CLI against a port."""
    exe = os.path.join(os.path.dirname(sys.executable), "mpremote")
    return subprocess.run([exe, "connect", port, *args], capture_output=True, text=True, timeout=timeout)


def reboot(port):
    """Interrupt whatever runs, leave the raw REPL and soft-reset: the board
    boots main.py (what the RST button does, minus the hardware)."""
    import serial

    with serial.Serial(port, 115200, timeout=0.1) as s:
        s.write(b"\r\x03")
        time.sleep(0.3)
        s.write(b"\r\x02")
        time.sleep(0.2)
        s.write(b"\x04")
        time.sleep(0.1)


def read_until(con, predicate, timeout):
    """Lines from a Console until ``predicate(lines)`` holds (or the timeout)."""
    lines = []
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate(lines):
        lines += con.poll()
    return lines
