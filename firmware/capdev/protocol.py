# Wire protocol v1: topic names, message kinds, codes and size limits; the
# instruction field checks are in schema.py (loaded only to check one).
# docs/protocol.md is the human-readable contract; keep the two in step.

VERSION = 1
PREFIX = "capshard/v1/dev/"

# Device -> provider
BIRTH = "birth"
QOS = "qos"
ACK = "ack"
STATE = "state"
HEALTH = "health"
# Provider -> device
INSTRUCTION = "inst"

MAX_INSTRUCTION_BYTES = 4096
MAX_REPORT_BYTES = 1024
MAX_OPS = 16
MAX_ID_LEN = 64

OPS = ("activate", "deactivate", "adjust")
PRIORITIES = ("high", "medium", "low")
PRIORITY_RANK = {"high": 3, "medium": 2, "low": 1}

# Ack codes, modelled on LwM2M Object 9 update results.
ACTIVATED = "activated"
DEACTIVATED = "deactivated"
ADJUSTED = "adjusted"
REJECTED = "rejected"
FAILED = "failed"
DEFERRED = "deferred"
DUPLICATE = "duplicate"


def topic(device_id, kind):
    return PREFIX + device_id + "/" + kind


def split_topic(name):
    """(device_id, kind) for a capshard topic, or None for anything else."""
    if not name.startswith(PREFIX):
        return None
    rest = name[len(PREFIX):]
    parts = rest.split("/")
    if len(parts) != 2 or not parts[0]:
        return None
    return parts[0], parts[1]
