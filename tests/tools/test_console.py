"""`capshard console`: host timestamps, a session log, and a console that
survives the board going away and coming back (a USB board re-enumerating)."""

import os
import re
import subprocess
import threading

from boardtools import CLI, read_until

from capshard.console import Console, format_diag

STAMP = re.compile(r"^\d\d:\d\d:\d\d\.\d\d\d ")


def test_stream_is_timestamped_logged_and_reconnects_after_the_port_vanishes(simboard, tmp_path):
    link = str(tmp_path / "ttyBOARD")
    first = simboard(link=link, name="b1")
    main_py = "import time\nfor i in range(1000):\n    print('tick', i)\n    time.sleep(0.1)\n"
    for d in ("b1", "b2"):
        os.makedirs(tmp_path / d, exist_ok=True)
        (tmp_path / d / "main.py").write_text(main_py)
    log = str(tmp_path / "session.log")
    con = Console(link, log_path=log, reopen_s=15)
    try:
        con.open()
        con.send(b"\x04")  # reboot: main.py starts ticking
        assert read_until(con, lambda ls: any(ln.startswith("tick") for ln in ls), 3)
        first.stop()  # the port disappears...
        second = threading.Timer(0.5, lambda: simboard(link=link, name="b2"))
        second.start()
        read_until(con, lambda ls: con.reopens, 6)  # ...and comes back under the same name
        second.join()
        assert con.reopens == 1
        con.send(b"\x04")
        assert read_until(con, lambda ls: any(ln.startswith("tick") for ln in ls), 3)
    finally:
        con.close()
    text = open(log).read().splitlines()
    assert all(STAMP.match(ln) for ln in text), text[:5]
    assert any("port lost" in ln for ln in text) and any("port back" in ln for ln in text)
    assert any(ln.endswith(" tick 0") for ln in text)


def test_cli_streams_with_timestamps_and_diag_without_agent_fails_clearly(simboard, tmp_path):
    board = simboard()
    log = str(tmp_path / "cli.log")
    p = subprocess.run([*CLI, "console", board.port, "--duration", "1", "--log", log],
                       input="", capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and os.path.exists(log)
    p = subprocess.run([*CLI, "console", board.port, "--diag", "--timeout", "2", "--no-log"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "no diagnostics from the board" in p.stderr


def test_diag_formatting_names_every_part():
    d = {"dev": "gw-1", "board": "esp32", "runtime": "micropython", "fw": "0.1.0", "uptime_s": 5,
         "connected": False, "broker": "10.0.0.1:8883", "tls": True, "last_error": "OSError: 113",
         "mqtt": {"connects": 0, "failures": 3}, "seq": 0, "heap_free": 20480, "heap_used": 90112,
         "shards": {"null-cipher": {"state": "running"}}, "errors": [[2, "warn", "x"]],
         "log_counts": {"error": 1, "warn": 1}}
    text = format_diag(d)
    for part in ("gw-1 on esp32", "TLS: NOT connected", "failures 3", "OSError: 113", "free 20.0 KiB",
                 "null-cipher: state running", "2 s ago warn: x", "1 errors, 1 warnings"):
        assert part in text, part
