# Device log: one line per event on the console (serial on a board, stdout
# here). Never pass secrets to it.
from capdev import platform

_counts = {"error": 0, "warn": 0}


def log(level, text):
    if level in _counts:
        _counts[level] += 1
    print("[" + str(platform.ticks_ms()) + "] " + level + ": " + text)


def info(text):
    log("info", text)


def warn(text):
    log("warn", text)


def error(text):
    log("error", text)


def counts():
    return dict(_counts)
