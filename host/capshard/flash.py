"""Put capshard on a MicroPython board over its serial port, with mpremote.

Steps, each reported as it happens:

1. build: compile what the board config ships to .mpy (host/capshard/build.py)
   and check it fits the board's flash budget;
2. provision: the device's identity file (id, per-device instruction key from
   the keystore, broker credentials) and the broker CA; secrets go to the
   board only, never to the screen or a log;
3. compare: hash every file on the board (one round trip) and copy only what
   differs;
4. stage: write the differing files under ``.stage/`` and verify their hashes
   on the board. The running firmware is untouched: an interruption here
   leaves the previous firmware booting;
5. commit: write the journal ``fw.commit`` (atomically), move the staged files
   into place, remove obsolete ones, delete the journal. If this is
   interrupted, ``main.py`` finishes the same journal at the next boot;
6. verify every deployed file's hash on the board, then reset it.
"""

import hashlib
import json
import os
import time

from . import boards, build
from .keys import Keystore
from .paths import FIRMWARE_DIR, REPO_ROOT

STAGE = ".stage/"
JOURNAL = "fw.commit"
MANIFEST = "fw.json"
BOARD_FILE = "board.json"
CHUNK = 1024  # bytes per raw-REPL write: well inside a small board's heap
SECRET_FILES = ("device.json",)


class FlashError(RuntimeError):
    """Flashing cannot go on; the text says why and what state the board is in."""


class Image:
    """What a board should hold: relative path -> bytes, and their hashes."""

    def __init__(self, board, files):
        self.board = board
        self.files = files
        self.hashes = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}

    def size(self):
        return sum(len(d) for d in self.files.values())


def build_image(board, identity, ca_der=None, out_dir=None, say=print):
    """Compile and provision; returns the Image (firmware, configs, manifest)."""
    if board["runtime"] != "micropython":
        raise FlashError(f"board {board['board']!r} runs {board['runtime']}: it is deployed by copying "
                         "firmware/ to it, not flashed (see docs/operations.md)")
    out_dir = out_dir or os.path.join(REPO_ROOT, "build", "boards", board["board"])
    t = time.monotonic()
    outputs = build.compile_for_board(board, out_dir)
    files = {}
    for rel in outputs:
        with open(os.path.join(out_dir, rel), "rb") as f:
            files[rel.replace(os.sep, "/")] = f.read()
    modules = sum(1 for r in files if r.endswith(".mpy"))
    say(f"build: {modules} modules + main.py, {sum(map(len, files.values())) / 1024:.1f} KiB "
        f"in {time.monotonic() - t:.1f} s")
    files[BOARD_FILE] = (json.dumps(board, indent=1, sort_keys=True) + "\n").encode()
    ident_rel = (board.get("identity") or {}).get("file", "device.json")
    files[ident_rel] = json.dumps(identity, sort_keys=True).encode()
    if board["broker"].get("tls"):
        if ca_der is None:
            raise FlashError(f"board {board['board']!r} uses TLS but no broker CA was given "
                             "(--broker-dir or --ca)")
        files[board["broker"]["ca_file"]] = ca_der
    manifest = {"board": board["board"], "files": {r: hashlib.sha256(d).hexdigest() for r, d in files.items()}}
    files[MANIFEST] = json.dumps(manifest, sort_keys=True).encode()
    image = Image(board, files)
    budget = board.get("flash_kb")
    if budget and image.size() > budget * 1024:
        raise FlashError(f"image of {image.size() / 1024:.1f} KiB exceeds the flash budget of board "
                         f"{board['board']!r} ({budget} KiB, field 'flash_kb')")
    say(f"provision: device {identity['device_id']} (key {identity['kid']}), "
        f"{len(files)} files, {image.size() / 1024:.1f} KiB of {budget or '?'} KiB flash budget")
    return image


def prepare_board(board_name, device_id, keystore_path, broker=None, broker_host=None,
                  broker_port=None, ca_file=None, dry_run=False):
    """Board config + identity for one device. ``broker`` is a deploy_broker
    Deployment: it supplies address, TLS CA and this device's credentials.
    A new device's key is saved to the keystore (not on a dry run)."""
    board = boards.load(board_name)
    board = json.loads(json.dumps(board))  # a copy we may adjust for this deployment
    keystore = Keystore.load(keystore_path) if os.path.exists(keystore_path) else Keystore(path=keystore_path)
    if device_id not in keystore:
        keystore.provision(device_id)
        if not dry_run:
            keystore.save(keystore_path)
    identity = keystore.identity(device_id)
    ca_der = None
    if broker is not None:
        password = broker.device_password(device_id)
        if password is None:
            raise FlashError(f"device {device_id!r} has no broker credentials: "
                             f"run `capshard broker add-device {broker.directory} {device_id}` first")
        identity["broker_user"] = device_id
        identity["broker_password"] = password
        board["broker"]["host"] = broker.host
        board["broker"]["port"] = broker.port
        board["broker"]["tls"] = True
        board["broker"].setdefault("ca_file", "ca.der")
        if board["broker"]["ca_file"].startswith("/"):
            board["broker"]["ca_file"] = "ca.der"
        ca_der = broker.ca_der()
    if broker_host:
        board["broker"]["host"] = broker_host
    if broker_port:
        board["broker"]["port"] = broker_port
    if ca_file:
        with open(ca_file, "rb") as f:
            ca_der = _to_der(f.read())
    identity["broker"] = {"host": board["broker"]["host"], "port": board["broker"]["port"]}
    boards.check(board, f"{boards.path_for(board_name)} (as deployed)")
    return board, identity, ca_der


def _to_der(data):
    if data.startswith(b"-----"):
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return data


# ---- code run on the board (MicroPython, raw REPL) --------------------------------
# The commit is main.py's own roll-forward (finish_update), sent from its
# source so the flash and the boot can never disagree on the journal.
_HASH_HELPER = """
import json, hashlib, binascii
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    while True:
        b = f.read(512)
        if not b:
            break
        h.update(b)
    f.close()
    return binascii.hexlify(h.digest()).decode()
"""


def board_helpers():
    """main.py's definitions (without its final boot() call) plus a hasher."""
    with open(os.path.join(FIRMWARE_DIR, "main.py")) as f:
        src = f.read()
    body, sep, tail = src.rpartition("\nboot()")
    if not sep or tail.strip():
        raise FlashError("firmware/main.py must end with the call boot()")
    return body + "\n" + _HASH_HELPER


class BoardLink:
    """mpremote's serial transport, in the raw REPL, with our helpers loaded."""

    def __init__(self, port):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self._error = TransportError
        try:
            self.t = SerialTransport(port, baudrate=115200)
            # Ctrl-C stops the running agent; the soft reset gives a clean VM
            # without running main.py (raw REPL).
            self.t.enter_raw_repl(soft_reset=True)
            self.t.exec(board_helpers())
        except (self._error, OSError) as e:
            raise FlashError(f"cannot talk to the board on {port}: {e}") from None
        self.port = port

    def run(self, code):
        try:
            return self.t.exec(code).decode()
        except (self._error, OSError) as e:
            raise FlashError(f"board {self.port}: {e}") from None

    def json(self, expr):
        out = self.run(f"print(json.dumps({expr}))").strip().splitlines()
        return json.loads(out[-1])

    def write(self, rel, data, progress=None):
        try:
            self.t.fs_writefile(rel, data, chunk_size=CHUNK, progress_callback=progress)
        except (self._error, OSError) as e:
            raise FlashError(f"board {self.port}: writing {rel} failed: {e}") from None

    def reset(self):
        """Soft reset from the friendly REPL: the board boots main.py (on an
        ESP32 as on the simulated board)."""
        self.t.exit_raw_repl()
        self.t.serial.write(b"\x04")
        time.sleep(0.1)

    def close(self):
        try:
            self.t.close()
        except Exception:
            pass


def flash(port, image, dry_run=False, reset=True, say=print, interrupt_after=None):
    """Deploy ``image`` to the board on ``port``. Returns a summary dict.

    ``interrupt_after``: stop (raise FlashError) after staging that many
    files, or with "journal" once the journal is written but nothing is moved,
    as an unplugged cable would; used to test interrupted flashes."""
    link = BoardLink(port)
    try:
        if link.json("_exists(JOURNAL)"):
            say("board: an earlier update was interrupted after staging; completing it first")
            if not dry_run:
                link.run("finish_update()")
        paths = sorted(image.files)
        on_board = link.json(f"{{p: _h(p) for p in {paths!r}}}")
        old = link.json("json.load(open('fw.json'))['files'] if _exists('fw.json') else {}")
        changed = [p for p in paths if on_board.get(p) != image.hashes[p]]
        obsolete = sorted(p for p in old if p not in image.files)
        # The manifest changes whenever anything does; alone it is bookkeeping.
        if changed == [MANIFEST] and not obsolete:
            changed = []
        say(f"board: {len(paths) - len(changed)} of {len(paths)} files up to date, "
            f"{len(changed)} to copy, {len(obsolete)} to remove")
        summary = {"copied": changed, "removed": obsolete, "unchanged": len(paths) - len(changed)}
        if dry_run:
            for p in changed:
                say(f"  would copy {p} ({len(image.files[p])} bytes)")
            for p in obsolete:
                say(f"  would remove {p}")
            if reset:
                link.reset()  # connecting stopped the agent: let the board boot again
            return summary
        if changed or obsolete:
            try:
                _stage(link, image, changed, say, None if interrupt_after == "journal" else interrupt_after)
                plan = json.dumps({"files": changed, "remove": obsolete})
                link.run(f"f = open(JOURNAL + '.tmp', 'w')\nf.write({plan!r})\nf.close()\n"
                         "os.rename(JOURNAL + '.tmp', JOURNAL)")
            except FlashError as e:
                raise FlashError(f"{e}; nothing was committed: the board still boots its previous "
                                 "firmware") from None
            try:
                if interrupt_after == "journal":
                    raise FlashError("interrupted after writing the journal")
                link.run("finish_update()")
            except FlashError as e:
                raise FlashError(f"{e}; the new firmware is staged and verified: the board completes "
                                 "the update at its next boot (or run the flash again)") from None
            say(f"commit: {len(changed)} files in place, {len(obsolete)} removed")
        final = link.json(f"{{p: _h(p) for p in {paths!r}}}")
        bad = [p for p in paths if final.get(p) != image.hashes[p]]
        if bad:
            raise FlashError(f"verify failed for {', '.join(bad)}: the board needs a reflash")
        say(f"verify: {len(paths)} files match")
        if reset:
            link.reset()
            say("reset: the board is booting the new firmware")
        return summary
    finally:
        link.close()


def _stage(link, image, changed, say, interrupt_after):
    link.run(f"for p in {[STAGE + p for p in changed]!r}:\n    _makedirs(p)")
    total = sum(len(image.files[p]) for p in changed)
    done = 0
    for i, rel in enumerate(changed, 1):
        if interrupt_after is not None and i > interrupt_after:
            raise FlashError(f"interrupted after staging {interrupt_after} of {len(changed)} files")
        data = image.files[rel]
        link.write(STAGE + rel, data)
        done += len(data)
        # Names only: a secret file's content never reaches the screen.
        say(f"copy {i}/{len(changed)} {rel} ({len(data)} bytes, {100 * done // max(total, 1)}%)")
    staged = link.json(f"{{p: _h('{STAGE}' + p) for p in {changed!r}}}")
    bad = [p for p in changed if staged.get(p) != image.hashes[p]]
    if bad:
        raise FlashError(f"staged copy corrupt for {', '.join(bad)}; the previous firmware is untouched")
    say(f"stage: {len(changed)} files verified on the board")
