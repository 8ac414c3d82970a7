# Diagnostics on the serial console. `capshard console` writes the line
# "diag"; the board answers with one line "DIAG {json}": identity, uptime,
# connection state, active shards, heap and the last warnings and errors.
# It reads the console without blocking the agent (a poll, then one byte).
import json
import sys

import capdev
from capdev import log, platform

try:
    import asyncio
    import select
except ImportError:  # a port without select: no console diagnostics
    select = None

REQUEST = b"diag"
PREFIX = "DIAG "
KEEP_RECENT = 5
POLL_MS = 200

_recent = []  # [ticks_ms, level, text] of the last warnings and errors
_started = platform.ticks_ms()
_capturing = False  # (MicroPython functions take no attributes: a flag here)


def capture_log():
    """Remember the last warnings/errors for `diag`. Wraps the log's single
    writer, so every module's log.warn/log.error is seen without changing them."""
    global _capturing
    if _capturing:
        return
    _capturing = True
    writer = log.log

    def logged(level, text):
        if level == "error" or level == "warn":
            _recent.append([platform.ticks_ms(), level, text[:160]])
            if len(_recent) > KEEP_RECENT:
                _recent.pop(0)
        writer(level, text)

    log.log = logged


def snapshot(agent):
    """What the console shows; plain JSON types only."""
    client = agent.client
    now = platform.ticks_ms()
    summary = getattr(agent, "shard_summary", None)
    if summary is not None:
        shards = summary()
    else:
        shards = {}
        for shard in agent.store.profile:
            shards[shard] = {"state": "active"}
    return {
        "dev": agent.device_id,
        "board": agent.board["board"],
        "fw": capdev.VERSION,
        "runtime": platform.RUNTIME,
        "uptime_s": platform.ticks_diff(now, _started) // 1000,
        "connected": bool(client is not None and client.connected),
        "broker": agent.broker["host"] + ":" + str(agent.broker["port"]),
        "tls": bool(agent.board["broker"].get("tls")),
        "last_error": client.last_error if client is not None else None,
        "mqtt": _counters(client),
        "seq": agent.store.last_seq,
        "shards": shards,
        "heap_free": platform.heap_free(),
        "heap_used": platform.heap_used(),
        "errors": [[platform.ticks_diff(now, t) // 1000, lv, tx] for t, lv, tx in _recent],
        "log_counts": log.counts(),
    }


def _counters(client):
    out = {}
    if client is not None:
        for name in ("connects", "reconnects", "failures", "rx", "tx"):
            out[name] = client.counters.get(name, 0)
    return out


def answer(agent):
    print(PREFIX + json.dumps(snapshot(agent)))


async def serve(agent):
    """Answer `diag` lines on the console until stdin closes."""
    if select is None:
        return
    stream = getattr(sys.stdin, "buffer", sys.stdin)
    stream = getattr(stream, "raw", stream)  # unbuffered where there is a choice
    poller = select.poll()
    poller.register(sys.stdin, select.POLLIN)
    line = b""
    while True:
        if not poller.poll(0):
            await asyncio.sleep(POLL_MS / 1000)
            continue
        ch = stream.read(1)
        if not ch:
            return  # stdin closed: nobody to answer
        if ch == b"\r" or ch == b"\n":
            if line.strip() == REQUEST:
                try:
                    answer(agent)
                except Exception as e:  # diagnostics must never stop the agent
                    log.error("diag failed: " + repr(e))
            line = b""
        elif len(line) < 32:
            line += ch
