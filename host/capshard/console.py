"""Serial console for a capshard board (pyserial).

Streams the board's log with host timestamps into the terminal and a session
log, asks the agent for diagnostics (it answers the line ``diag`` with one
line ``DIAG {json}``, see firmware/capdev/diag.py), notices board resets, and
reopens the port when it disappears (a USB board re-enumerating on reset).
"""

import json
import os
import time

import serial

DIAG_PREFIX = "DIAG "
RESET_MARKERS = ("MPY: soft reboot", "capshard-sim boot", "rst:0x", "ets ")


class ConsoleError(RuntimeError):
    pass


def stamp(t=None):
    t = time.time() if t is None else t
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


class Console:
    def __init__(self, port, log_path=None, echo=None, baudrate=115200, reopen_s=30.0):
        self.port = port
        self.baudrate = baudrate
        self.reopen_s = reopen_s
        self.echo = echo  # callable(text) for what the operator sees, or None
        self.log = open(log_path, "a", buffering=1) if log_path else None
        self.log_path = log_path
        self.serial = None
        self._buf = b""
        self.resets = 0
        self.reopens = 0

    # ---- port -------------------------------------------------------------------
    def open(self):
        deadline = time.monotonic() + self.reopen_s
        while True:
            try:
                self.serial = serial.Serial(self.port, self.baudrate, timeout=0.05, exclusive=True)
                # What the board said before we came is not this session's.
                self.serial.reset_input_buffer()
                return self
            except (serial.SerialException, OSError) as e:
                if time.monotonic() >= deadline:
                    raise ConsoleError(f"cannot open {self.port}: {e}") from None
                time.sleep(0.25)

    def close(self):
        if self.serial is not None:
            try:
                self.serial.close()
            except Exception:
                pass
            self.serial = None
        if self.log:
            self.log.close()
            self.log = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def _note(self, text):
        self._emit(f"[console] {text}")

    def _emit(self, text):
        line = f"{stamp()} {text}"
        if self.log:
            self.log.write(line + "\n")
        if self.echo:
            self.echo(line)

    def _reopen(self, why):
        self._note(f"port lost ({why}); reconnecting")
        try:
            self.serial.close()
        except Exception:
            pass
        self.serial = None
        self.open()
        self.reopens += 1
        self._note("port back")

    # ---- reading -------------------------------------------------------------------
    def read_lines(self, duration):
        """Lines the board printed during ``duration`` seconds (also logged/echoed)."""
        out = []
        end = time.monotonic() + duration
        while time.monotonic() < end:
            out += self.poll()
        return out

    def poll(self):
        """Read what is there (up to ~50 ms); return complete lines."""
        try:
            data = self.serial.read(self.serial.in_waiting or 1)
        except (serial.SerialException, OSError) as e:
            self._reopen(e)
            return []
        if not data:
            return []
        self._buf += data
        lines = []
        while b"\n" in self._buf:
            raw, self._buf = self._buf.split(b"\n", 1)
            text = raw.replace(b"\r", b"").decode("utf-8", "replace")
            text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
            lines.append(text)
            self._emit(text)
            if any(m in text for m in RESET_MARKERS):
                self.resets += 1
                self._note("board reset detected")
        return lines

    def send(self, data):
        try:
            self.serial.write(data)
        except (serial.SerialException, OSError) as e:
            self._reopen(e)
            self.serial.write(data)

    # ---- diagnostics ------------------------------------------------------------------
    def diag(self, timeout=20.0, retry_s=2.0):
        """Ask for diagnostics until the agent answers (it may be booting)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.send(b"\rdiag\r")
            ask_end = min(end, time.monotonic() + retry_s)
            while time.monotonic() < ask_end:
                for line in self.poll():
                    i = line.find(DIAG_PREFIX)
                    if i >= 0:
                        try:
                            return json.loads(line[i + len(DIAG_PREFIX):])
                        except ValueError:
                            pass
        raise ConsoleError(f"no diagnostics from the board on {self.port} within {timeout:.0f} s "
                           "(is the agent running? a board at the REPL does not answer)")


def format_diag(d):
    """The diagnostics as a short readable block."""
    def kib(v):
        return "n/a" if v is None else f"{v / 1024:.1f} KiB"

    m = d.get("mqtt", {})
    conn = "connected" if d.get("connected") else "NOT connected"
    lines = [
        f"device     {d.get('dev')} on {d.get('board')} ({d.get('runtime')}, fw {d.get('fw')}), "
        f"up {d.get('uptime_s')} s",
        f"broker     {d.get('broker')} {'TLS' if d.get('tls') else 'plain'}: {conn} "
        f"(connects {m.get('connects', 0)}, reconnects {m.get('reconnects', 0)}, failures {m.get('failures', 0)})",
        f"last error {d.get('last_error') or '-'}",
        f"heap       free {kib(d.get('heap_free'))}, used {kib(d.get('heap_used'))}",
        f"seq        {d.get('seq')}",
    ]
    shards = d.get("shards") or {}
    if not shards:
        lines.append("shards     none active")
    for name in sorted(shards):
        info = shards[name]
        detail = ", ".join(f"{k} {v}" for k, v in sorted(info.items())) if isinstance(info, dict) else str(info)
        lines.append(f"shard      {name}: {detail}")
    for ago, level, text in d.get("errors") or []:
        lines.append(f"recent     {ago} s ago {level}: {text}")
    counts = d.get("log_counts") or {}
    lines.append(f"log        {counts.get('error', 0)} errors, {counts.get('warn', 0)} warnings since boot")
    return "\n".join(lines)


def default_log_path(port):
    name = os.path.basename(port).replace("/", "_")
    return f"capshard-console-{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
