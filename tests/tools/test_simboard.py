"""The simulated board is a real serial device: mpremote and pyserial drive it
as they drive an ESP32, it boots main.py, and a soft reset restarts it."""

import os

from boardtools import mpremote, read_until, wait_for

from capshard.console import Console


def test_mpremote_runs_code_copies_files_and_soft_resets(simboard):
    board = simboard()
    p = mpremote(board.port, "exec", "import sys; print('impl', sys.implementation.name)")
    assert p.returncode == 0 and "impl micropython" in p.stdout, p.stderr
    with open(os.path.join(board.board_dir, "..", "hello.py"), "w") as f:
        f.write("print('hello from the board fs')\n")
    p = mpremote(board.port, "fs", "cp", os.path.join(board.board_dir, "..", "hello.py"), ":hello.py",
                 "+", "exec", "import hello")
    assert p.returncode == 0 and "hello from the board fs" in p.stdout, p.stderr
    assert os.path.exists(os.path.join(board.board_dir, "hello.py"))  # the board's own filesystem
    before = board.boots()
    p = mpremote(board.port, "soft-reset", "+", "exec", "print('after reset')")
    assert p.returncode == 0 and "after reset" in p.stdout, p.stderr
    assert wait_for(lambda: board.boots() > before, 5)  # the process really restarted


def test_boots_main_py_streams_to_pyserial_and_ctrl_c_reaches_the_repl(simboard):
    board = simboard()
    with open(os.path.join(board.board_dir, "main.py"), "w") as f:
        f.write("import time\nprint('main running')\nwhile True:\n    time.sleep(0.05)\n")
    with Console(board.port) as con:
        con.send(b"\x04")  # soft reset at the friendly REPL: boot again, now with main.py
        lines = read_until(con, lambda ls: "main running" in ls, 5)
        assert any("capshard-sim boot" in ln for ln in lines), lines
        assert "main running" in lines and con.resets >= 1, lines
        con.send(b"\x03")  # interrupts main.py, like Ctrl-C on a board's UART
        lines = read_until(con, lambda ls: any("KeyboardInterrupt" in ln for ln in ls), 5)
        assert any("KeyboardInterrupt" in ln for ln in lines), lines
        con.send(b"print(6 * 7)\r")
        assert read_until(con, lambda ls: any(ln.strip().endswith("42") for ln in ls), 3)
