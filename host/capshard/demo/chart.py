"""A PNG of allocations over time: one row per (device, shard), a bar while
the device reported the shard running, and the scenario steps marked."""

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402


def intervals(samples, period=0.5):
    """(device, shard) -> [(start, end)] from the timeline samples."""
    spans = {}
    open_at = {}
    last_seen = {}
    for t, device_id, shards, _ in samples:
        for shard in shards:
            key = (device_id, shard)
            if key not in open_at or t - last_seen[key] > 2 * period:
                if key in open_at:
                    spans.setdefault(key, []).append((open_at[key], last_seen[key] + period))
                open_at[key] = t
            last_seen[key] = t
    for key, start in open_at.items():
        spans.setdefault(key, []).append((start, last_seen[key] + period))
    return spans


def draw(timeline, path):
    spans = intervals(timeline.samples)
    rows = sorted(spans)
    if not rows:
        return None
    steps = len(timeline.marks)
    fig, ax = plt.subplots(figsize=(12, 0.35 * len(rows) + 2.6 + 0.2 * steps))
    devices = sorted({d for d, _ in rows})
    colours = {d: plt.cm.tab10(i % 10) for i, d in enumerate(devices)}
    for y, key in enumerate(rows):
        ax.broken_barh([(a, b - a) for a, b in spans[key]], (y - 0.35, 0.7), color=colours[key[0]])
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{d}: {s}" for d, s in rows], fontsize=8)
    ax.invert_yaxis()
    for i, (t, title) in enumerate(timeline.marks):
        ax.axvline(t, color="grey", linewidth=0.8, linestyle="--")
        ax.annotate(str(i + 1), (t, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                    textcoords="offset points", fontsize=8, ha="center", va="bottom")
    ax.set_xlabel("seconds since the provider started")
    ax.set_title("capshard demo: the shards each device runs as its traffic changes", pad=14)
    legend = "\n".join(f"{i + 1}. {title}" for i, (_, title) in enumerate(timeline.marks))
    fig.text(0.01, 0.005, legend, fontsize=8, va="bottom", ha="left", family="monospace")
    fig.tight_layout(rect=(0, 0.015 + 0.0125 * steps, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
