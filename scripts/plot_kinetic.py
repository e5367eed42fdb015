#!/usr/bin/env python3
"""Draw `hektor-bench kinetic` output: max/mean node CPU and query p99 over time, per leg.

Usage: python3 scripts/plot_kinetic.py RUN.jsonl OUT.png

RUN.jsonl holds the bench's JSON lines: one per leg and second ({"leg", "t_s", "qps",
"p99_ms", "node_cpu", "max_over_mean", "epoch"}) and one summary per leg ({"summary": true,
"move_at_s", "hot_spots": [{"onset_s", "relief_s"}]}). Needs matplotlib
(pip install -r scripts/requirements-bench.txt).
"""

import json
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: pip install -r scripts/requirements-bench.txt",
              file=sys.stderr)
        return 1
    ticks, summaries = {}, {}
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            if row.get("summary"):
                summaries[row["leg"]] = row
            elif "t_s" in row:
                ticks.setdefault(row["leg"], []).append(row)
    if not ticks:
        print(f"no per-second lines in {sys.argv[1]}", file=sys.stderr)
        return 1
    colors = {"static": "tab:gray", "kinetic": "tab:blue"}
    fig, (load_ax, p99_ax, cpu_ax) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    for leg, rows in ticks.items():
        t = [r["t_s"] for r in rows]
        color = colors.get(leg)
        load_ax.plot(t, [r["max_over_mean"] for r in rows], label=leg, color=color)
        p99_ax.plot(t, [r["p99_ms"] for r in rows], label=leg, color=color)
        if leg == "kinetic":
            for i in range(len(rows[0]["node_cpu"])):
                cpu_ax.plot(t, [r["node_cpu"][i] for r in rows], label=f"node {'abc'[i]}")
            # Map changes (epoch steps) of the kinetic leg.
            last = rows[0].get("epoch")
            for r in rows[1:]:
                if r.get("epoch") is not None and last is not None and r["epoch"] != last:
                    for ax in (load_ax, p99_ax, cpu_ax):
                        ax.axvline(r["t_s"], color="tab:green", alpha=0.4, linestyle=":")
                last = r.get("epoch", last)
    for leg, s in summaries.items():
        for spot in s.get("hot_spots", []):
            for ax in (load_ax, p99_ax, cpu_ax):
                ax.axvline(spot["onset_s"], color="tab:red", alpha=0.5, linestyle="--")
    load_ax.axhline(1.25, color="black", linewidth=0.8, linestyle="--", label="goal 1.25")
    load_ax.set_ylabel("max / mean node CPU")
    p99_ax.set_ylabel("query p99 (ms)")
    p99_ax.set_yscale("log")
    cpu_ax.set_ylabel("kinetic: CPU (cores)")
    cpu_ax.set_xlabel("seconds (red dashed: hot spot onset; green dotted: map change)")
    for ax in (load_ax, p99_ax, cpu_ax):
        ax.legend(loc="upper right", fontsize="small")
        ax.grid(alpha=0.3)
    title = "hektor-bench kinetic"
    if "kinetic" in summaries:
        k = summaries["kinetic"]
        title += f" — relief {k.get('relief_s')} s, {k.get('splits')} splits, " \
                 f"{k.get('queries_failed')} failed queries"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
