"""What a device should run when it is born. Until the allocator is wired in,
a minimal agreement: every device gets the same baseline profile."""

MINIMAL_BASELINE = [{
    "op": "activate", "shard": "null-cipher", "ver": "1.0.0", "slot": "vpn.cipher",
    "module": "capdev.shards.null_cipher", "cpu": 10, "mem_kb": 4, "bw_kbps": 0,
    "prio": "high", "dur_s": 0, "alt": None,
}]


def minimal_baseline(device_id, birth):
    return [dict(op) for op in MINIMAL_BASELINE]
