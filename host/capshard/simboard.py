"""A simulated board: MicroPython's unix port behind a pseudo-terminal.

The port (``/dev/pts/N``) is a real serial device to mpremote and pyserial.
Behind it the simulator runs ``micropython`` in the board's own filesystem
directory (its cwd, like a board's flash), feeding it the bytes typed on the
port and copying its output back. It behaves like a board:

- it boots: prints a banner, runs ``main.py`` if there is one, then the REPL;
- Ctrl-C interrupts a running program (delivered as SIGINT, as a board's UART
  interrupt would), and is a plain character at a prompt;
- a soft reset (Ctrl-D at the REPL), ``sys.exit()`` or ``machine.soft_reset()``
  ends the process; the simulator prints ``MPY: soft reboot`` and starts it
  again: from the raw REPL it comes back in the raw REPL without running
  ``main.py`` (what mpremote expects), otherwise it boots ``main.py``.

Output is dropped while nobody reads the port, as a UART does, so the board
never stalls on a full terminal buffer.
"""

import ctypes
import errno
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import tty

from .fwrun import micropython_binary

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
PROMPTS = (b">>> ", b"... ", RAW_BANNER + b">", b"\x04>")
PORT_BACKLOG = 4096  # unread bytes on the port beyond which output is dropped
RESTART_DELAY_S = 0.2
CTRL_C_GRACE_S = 0.05  # time for the REPL to show its prompt before Ctrl-C counts as an interrupt  # a program that exits at once must not spin the CPU


def _die_with_parent():
    """Child pre-exec: own session, and SIGKILL when the simulator dies."""
    os.setsid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class SimBoard:
    def __init__(self, board_dir, heap_kb=128, micropython=None, say=None):
        self.board_dir = os.path.abspath(board_dir)
        os.makedirs(self.board_dir, exist_ok=True)
        self.heap_kb = heap_kb
        self.micropython = micropython or micropython_binary()
        self.say = say or (lambda text: print(f"[simboard] {text}", file=sys.stderr, flush=True))
        self.master = self.slave = None
        self.port = None
        self.child = None
        self.boots = 0
        self.raw = False  # the child's REPL is the raw REPL (tracked from input)
        self.at_prompt = False  # the child waits at a prompt (tracked from output)
        self.dropped = 0
        self._tail = b""
        self._swallow = False  # hide the friendly banner while re-entering raw REPL
        self._stopping = False
        self._ctrl_c_at = None  # deadline of a Ctrl-C not yet delivered
        self._held = bytearray()  # input that arrived after it

    # ---- the port ---------------------------------------------------------------
    def open_port(self):
        self.master, self.slave = os.openpty()
        # The slave stays open here so the port survives clients closing it;
        # raw mode: bytes pass unchanged, like a UART.
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.port = os.ttyname(self.slave)
        return self.port

    def _unread(self):
        buf = fcntl.ioctl(self.slave, termios.FIONREAD, struct.pack("i", 0))
        return struct.unpack("i", buf)[0]

    def _to_port(self, data):
        if self._unread() > PORT_BACKLOG:
            self.dropped += len(data)  # nobody is listening
            return
        deadline = time.monotonic() + 0.5
        while data:
            try:
                data = data[os.write(self.master, data):]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.dropped += len(data)  # a reader that stopped reading
                    return
                select.select([], [self.master], [], 0.05)

    # ---- the MicroPython process --------------------------------------------------
    def _spawn(self, reason):
        self.boots += 1
        raw = self.raw and reason == "soft reboot"
        argv = [self.micropython, "-X", f"heapsize={self.heap_kb}k", "-i"]
        if not raw and os.path.exists(os.path.join(self.board_dir, "main.py")):
            argv.append("main.py")
        else:
            argv += ["-c", ""]
        env = dict(os.environ)
        env["MICROPYPATH"] = ":.frozen:lib"  # a board's sys.path: root, frozen, /lib
        env.pop("PYTHONPATH", None)
        self._to_port(f"\r\ncapshard-sim boot {self.boots} ({reason}): MicroPython unix port, "
                      f"heap {self.heap_kb} KiB, fs {self.board_dir}\r\n".encode())
        self.child = subprocess.Popen(
            argv, cwd=self.board_dir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, bufsize=0, preexec_fn=_die_with_parent)
        os.set_blocking(self.child.stdout.fileno(), False)
        os.set_blocking(self.child.stdin.fileno(), False)
        self.at_prompt = False
        self._tail = b""
        self._ctrl_c_at = None
        self._held = bytearray()
        if raw:
            # A board soft-reset in the raw REPL comes back in the raw REPL.
            self._swallow = True
            self._to_child(b"\x01")
        else:
            self.raw = False
        self.say(f"boot {self.boots} ({reason}): {' '.join(argv[3:])}")

    def _to_child(self, data):
        if self.child is None or self.child.poll() is not None:
            return  # rebooting: input is lost, as on a board
        fd = self.child.stdin.fileno()
        deadline = time.monotonic() + 1.0
        while data:
            try:
                data = data[os.write(fd, data):]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return  # a program that never reads its console: input overflows, as on a UART
                select.select([], [fd], [], 0.05)
            except OSError:
                return  # the process is ending

    def _from_child(self):
        try:
            data = os.read(self.child.stdout.fileno(), 4096)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            return False
        self._tail = (self._tail + data)[-64:]
        self.at_prompt = any(self._tail.endswith(p) for p in PROMPTS)
        if self._swallow:
            i = self._tail.find(RAW_BANNER)
            if i < 0:
                return True
            self._swallow = False
            data = self._tail[i:]
        self._to_port(data)
        return True

    def _input(self, data):
        if self._ctrl_c_at is not None:
            self._held += data  # after a pending Ctrl-C, keep the byte order
            return
        out = bytearray()
        for i, b in enumerate(data):
            c = bytes((b,))
            if c == b"\x03" and not self.at_prompt:
                # Running, or about to print a prompt? Decide once the
                # program had a moment to answer (see _settle_ctrl_c).
                self._to_child(bytes(out))
                self._ctrl_c_at = time.monotonic() + CTRL_C_GRACE_S
                self._held = bytearray(data[i + 1:])
                return
            if c == b"\x01":
                self.raw = True
            elif c == b"\x02":
                self.raw = False
            elif c == b"\x04" or (c == b"\r" and not self.raw):
                self.at_prompt = False
            out += c
        if out:
            self._to_child(bytes(out))

    def _settle_ctrl_c(self):
        """A Ctrl-C at a prompt is a character; during a program it is an
        interrupt (SIGINT), and the byte itself is consumed, as on a board."""
        if self._ctrl_c_at is None:
            return
        if self.at_prompt:
            self._to_child(b"\x03")
        elif time.monotonic() >= self._ctrl_c_at:
            if self.child is not None and self.child.poll() is None:
                self.child.send_signal(signal.SIGINT)
        else:
            return
        self._ctrl_c_at = None
        held, self._held = bytes(self._held), bytearray()
        if held:
            self._input(held)

    def _reap(self):
        rc = self.child.wait()
        self.child.stdin.close()
        self.child.stdout.close()
        self.child = None
        if self._stopping:
            return
        if rc not in (0, 1):
            self._to_port(f"\r\ncapshard-sim: MicroPython ended with code {rc}\r\n".encode())
        self._to_port(b"MPY: soft reboot\r\n")
        time.sleep(RESTART_DELAY_S)
        self._spawn("soft reboot")

    # ---- main loop -------------------------------------------------------------------
    def run(self, stop=None):
        """Serve until ``stop()`` is true (or forever)."""
        if self.port is None:
            self.open_port()
        self._spawn("power on")
        while not self._stopping and not (stop and stop()):
            fds = [self.master]
            if self.child is not None:
                fds.append(self.child.stdout.fileno())
            try:
                ready, _, _ = select.select(fds, [], [], 0.01 if self._ctrl_c_at else 0.2)
            except InterruptedError:
                continue
            if self.master in ready:
                try:
                    data = os.read(self.master, 4096)
                except BlockingIOError:
                    data = b""
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    data = b""
                if data:
                    self._input(data)
            if self.child is not None and self.child.stdout.fileno() in ready:
                if not self._from_child():
                    self._reap()
            self._settle_ctrl_c()
        self.stop()

    def stop(self):
        self._stopping = True
        child, self.child = self.child, None
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(3)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for fd in (self.master, self.slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.master = self.slave = None


def serve(board_dir, heap_kb=128, link=None):
    """Run a simulated board until SIGINT/SIGTERM; prints the port first."""
    board = SimBoard(board_dir, heap_kb=heap_kb)
    port = board.open_port()
    if link:
        if os.path.islink(link):
            os.remove(link)
        os.symlink(port, link)
    print(port, flush=True)
    board.say(f"port {port}{' (link ' + link + ')' if link else ''}; board filesystem {board.board_dir}")

    def _stop(signum, frame):
        board._stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        board.run()
    finally:
        board.stop()
        if link and os.path.islink(link):
            os.remove(link)
    return 0
