"""capdev.diag, on both runtimes, with a real (not connected) agent: it answers
the console's `diag` line with one JSON line and keeps the last errors."""

import json

from capshard import boards


def test_diag_answers_on_the_console_and_keeps_recent_errors(fw, tmp_path):
    board = boards.load("simulated")
    ident = {"device_id": "dg-1", "kid": "dg-1#1", "key": "11" * 32}
    (tmp_path / "board.json").write_text(json.dumps(board))
    (tmp_path / "device.json").write_text(json.dumps(ident))
    code = f"""
import asyncio
from capdev import agent, config, diag, log
root = {str(tmp_path)!r}
b = config.load_board(root + "/board.json")
a = agent.Agent(b, config.load_identity(root + "/device.json"), root)
diag.capture_log()
diag.capture_log()  # idempotent: errors are not recorded twice
for i in range(7):
    log.error("failure " + str(i))
log.warn("careful")
asyncio.run(diag.serve(a))  # answers each 'diag' line, returns at end of input
"""
    # Compiling the agent from source needs more heap than running it as .mpy.
    out = fw.run(code, heap_kb=1024, input="hello\ndiag\n\rdiag\r\n", timeout=60)
    answers = [ln for ln in out.splitlines() if ln.startswith("DIAG ")]
    assert len(answers) == 2, out
    d = json.loads(answers[0][5:])
    assert d["dev"] == "dg-1" and d["board"] == "simulated" and d["connected"] is False
    assert d["runtime"] == fw.runtime and d["tls"] is False
    assert [e[2] for e in d["errors"]] == ["failure 3", "failure 4", "failure 5", "failure 6", "careful"]
    assert d["log_counts"] == {"error": 7, "warn": 1}
    assert d["shards"] == {} and d["seq"] == 0
    if fw.runtime == "micropython":
        assert d["heap_free"] > 0 and d["heap_used"] > 0
    assert "failure 6" in out  # the log itself still prints
