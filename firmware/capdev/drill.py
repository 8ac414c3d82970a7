# Failover drills: STATE_DIR/faults.json {"fail_health": [shard ids]} makes
# those shards report themselves unhealthy, so an operator (or the demo) can
# watch restart, failover and recovery on a live device. Only someone with
# access to the device's files can arm it. Loaded only while a drill file
# exists.
import json

from capdev import log


def arm(manager, raw):
    """Make the running shards named in the drill file ``raw`` unhealthy (once each)."""
    try:
        failing = json.loads(raw).get("fail_health", [])
    except (ValueError, AttributeError):
        return
    for shard in failing:
        inst = manager.shard(shard)
        if inst is not None and not getattr(inst, "drilled", False):
            inst.drilled = True
            inst.health = _unhealthy
            log.warn("fault drill: " + shard + " now reports itself unhealthy")


def _unhealthy():
    return {"ok": False, "reason": "fault drill"}
