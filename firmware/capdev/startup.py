# What the agent runs to get going, then never again until a reboot (or a
# restart of its traffic monitor): reading and checking its config, bringing
# back the last good profile, building the traffic monitor. Cold: the agent
# unloads it with trim() (agent.COLD).
import gc

import capdev
from capdev import log


def load_config(board_path, ident_path):
    """(board, identity) read and checked at boot, or (None, reason). The
    config code is unloaded afterwards: it is not needed again until reboot."""
    from capdev import config

    try:
        return config.load_board(board_path), config.load_identity(ident_path)
    except config.ConfigError as e:
        return None, str(e)
    finally:
        config = None
        capdev.unload("capdev.config")
        gc.collect()


# What the running agent reads of its board config; the rest (description,
# flash size, identity and state paths...) was needed at boot only.
_BOARD_KEYS = ("board", "broker", "capacities", "free_heap_floor_kb", "shards", "traffic_sources",
               "rnma", "vpn")


def running_board(board):
    """The part of ``board`` the agent keeps."""
    kept = {}
    for name in _BOARD_KEYS:
        if name in board:
            kept[name] = board[name]
    return kept


def restore(agent):
    """Bring back the last good profile after a reboot, before the provider
    is reachable: the device keeps serving on its own."""
    agent.manager.set_baseline(agent.store.baseline)
    ops = list(agent.store.profile.values())
    if ops:
        results = agent.manager.apply(ops)
        log.info("restored " + str(len(ops)) + " shard(s) from the persisted profile: "
                 + ", ".join(r["shard"] + "=" + r["code"] for r in results))
    agent._record_profile()


def start_monitoring(agent):
    """The monitoring agent on synthetic traffic: (monitor, traffic source)."""
    # Imported here: a board without a traffic source never pays for it.
    from capdev.rnma.live import SyntheticTraffic
    from capdev.rnma.monitor import Monitor
    from capdev.rnma.report import ReportBuilder

    opts = agent.board.get("rnma", {})
    report = ReportBuilder(agent.device_id, opts.get("report_min_interval_ms", 10000),
                           opts.get("report_max_interval_ms", 300000), opts.get("hold_ms", 30000))
    monitor = Monitor(agent.device_id, opts.get("max_flows", 64), report=report)
    traffic = SyntheticTraffic(agent.state_dir + "/traffic.json")
    traffic.pump(monitor, 0)  # starts the shapes now: their buffers come from a fresh heap
    return monitor, traffic
