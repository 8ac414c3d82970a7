# Board entry point: MicroPython runs this file at every boot. It finishes a
# firmware update that a flash left half-committed, then starts the agent with
# the files at the board's root. A config or firmware problem is printed and
# the boot stops at the REPL (no crash loop), so the operator can reflash.
import os
import sys

JOURNAL = "fw.commit"  # written by `capshard flash` once every staged file is verified
STAGE = ".stage/"
BOARD = "board.json"
NEEDS_REFLASH = "capshard: FIRMWARE INCOMPLETE: reflash with `capshard flash` ("


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _makedirs(rel):
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if not _exists(d):
            os.mkdir(d)


def finish_update():
    """Roll a half-done commit forward; False when the board needs a reflash.

    Every staged file was hash-checked before the journal was written, so
    moving them into place completes the new firmware. Each step can be
    repeated after a power cut."""
    import json

    try:
        with open(JOURNAL) as f:
            plan = json.load(f)
    except OSError:
        return True  # no update pending
    except ValueError:
        print(NEEDS_REFLASH + "update journal unreadable)")
        return False
    for rel in plan["files"]:
        staged = STAGE + rel
        if _exists(staged):
            _makedirs(rel)
            try:
                os.rename(staged, rel)  # atomic replace on LittleFS and POSIX
            except OSError:
                os.remove(rel)  # FAT cannot rename over a file
                os.rename(staged, rel)
        elif not _exists(rel):
            print(NEEDS_REFLASH + rel + " missing)")
            return False
    for rel in plan["remove"]:
        try:
            os.remove(rel)
        except OSError:
            pass
    os.remove(JOURNAL)
    print("capshard: completed an interrupted firmware update (" + str(len(plan["files"])) + " files)")
    return True


def boot():
    if not finish_update():
        return
    try:
        # capdev from the ROMFS partition when there is one (code runs in
        # place, off the heap); otherwise from the filesystem as before.
        import romboot

        romboot.mount()
        romboot = None
        del sys.modules["romboot"]  # not needed again: its code leaves the heap
    except ImportError:
        pass
    except Exception as e:  # romboot.RomError: a broken image must not stop the boot
        print("capshard: ROMFS not used: " + str(e))
    try:
        from capdev import config
    except ImportError as e:
        print(NEEDS_REFLASH + "firmware missing: " + str(e) + ")")
        return
    try:
        board = config.load_board(BOARD)
        ident = config.load_identity(config.identity_path(board, ""))
        ctx = config.ssl_context(board, "")
    except config.ConfigError as e:
        print("capshard: boot stopped: " + str(e))
        return
    import asyncio
    from capdev import agent, diag

    state_dir = board.get("state_dir", "state")
    if not _exists(state_dir):
        os.mkdir(state_dir)
    import capdev

    config = None  # the config code is not needed again until reboot
    capdev.unload("capdev.config")
    diag.capture_log()
    a = agent.Agent(board, ident, state_dir, ssl=ctx)

    async def run():
        asyncio.create_task(diag.serve(a))
        await a.run()

    print("capshard: starting " + ident["device_id"] + " on " + board["board"])
    asyncio.run(run())


boot()
