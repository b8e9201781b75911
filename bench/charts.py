"""PNG charts of the benchmarks, for BENCHMARKS.md.

    charts.py seed RESULTS_DIR OUT_DIR
        One chart per spawn rate of bench/seed_protocol.sh's runs: users,
        req/s and p99 over time (from orders-loadtest's Locust-format
        `<scenario>-<rate>_stats_history.csv`), each scenario a line, with
        the seed's own results at that spawn rate (its README's table) as
        dashed lines.
    charts.py bars CSV OUT_FILE
        A bar chart of req/s and server CPU us per request per case of
        bench/http.sh (its RESULTS_CSV: case,req_s,cpu_us).

Run by the bench scripts with the bench venv's matplotlib (bench/venv.sh).
"""

import csv
import glob
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The seed's results (its README, "Hasil Load testing"): spawn rate ->
# (architecture 1 users, RPS), (architecture 2 users, RPS).
SEED = {25: ((825, 259), (1425, 534)), 50: ((900, 234), (2850, 1106)), 100: ((1200, 202), (3900, 1145))}
COLORS = {"seed": "#1f77b4", "seed-paged": "#2ca02c", "by-id": "#9467bd"}


def history(path):
    """(seconds since the first row, users, req/s, p99 so far) per row."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
    if not rows:
        return [], [], [], []
    t0 = int(rows[0]["Timestamp"])
    num = lambda v: float(v) if v not in ("", "N/A") else float("nan")
    return (
        [int(r["Timestamp"]) - t0 for r in rows],
        [num(r["User Count"]) for r in rows],
        [num(r["Requests/s"]) for r in rows],
        [num(r["99%"]) for r in rows],
    )


def seed_charts(results, out):
    runs = {}
    for path in glob.glob(os.path.join(results, "*_stats_history.csv")):
        m = re.match(r"(.+)-(\d+)_stats_history\.csv$", os.path.basename(path))
        if m:
            runs.setdefault(int(m.group(2)), []).append((m.group(1), path))
    os.makedirs(out, exist_ok=True)
    for rate, scenarios in sorted(runs.items()):
        fig, (users_ax, rps_ax, p99_ax) = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
        for scenario, path in sorted(scenarios):
            t, users, rps, p99 = history(path)
            color = COLORS.get(scenario, None)
            users_ax.plot(t, users, label=scenario, color=color)
            rps_ax.plot(t, rps, label=scenario, color=color)
            p99_ax.plot(t, p99, label=scenario, color=color)
        if rate in SEED:
            for arch, (users, rps), style in ((1, SEED[rate][0], ":"), (2, SEED[rate][1], "--")):
                users_ax.axhline(users, color="#d62728", linestyle=style, label=f"seed, architecture {arch}")
                rps_ax.axhline(rps, color="#d62728", linestyle=style, label=f"seed, architecture {arch}")
        users_ax.set_ylabel("users")
        rps_ax.set_ylabel("req/s")
        p99_ax.set_ylabel("p99 so far (ms)")
        p99_ax.set_yscale("log")
        p99_ax.set_xlabel("seconds")
        names = ", ".join(sorted(n for n, _ in scenarios))
        users_ax.set_title(f"{names}, spawn rate {rate}/s: orders-server -w 1 on one core")
        for ax in (users_ax, rps_ax, p99_ax):
            ax.grid(alpha=0.3)
        users_ax.legend(fontsize=8, loc="upper left")
        rps_ax.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        name = os.path.join(out, f"seed-protocol-{rate}.png")
        fig.savefig(name, dpi=80)
        plt.close(fig)
        print(name)


def bars(results_csv, out):
    with open(results_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    names = [r["case"] for r in rows]
    fig, (rps_ax, cpu_ax) = plt.subplots(1, 2, figsize=(11, 0.5 * len(rows) + 2))
    rps_ax.barh(names, [float(r["req_s"]) for r in rows], color="#2ca02c")
    rps_ax.set_xlabel("req/s (one server core)")
    cpu = [float(r["cpu_us"]) if r["cpu_us"] not in ("", "-") else 0.0 for r in rows]
    cpu_ax.barh(names, cpu, color="#1f77b4")
    cpu_ax.set_xlabel("server CPU us per request")
    cpu_ax.set_yticklabels([])
    for ax in (rps_ax, cpu_ax):
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("bench/http.sh: orders-server against its baselines (same invocation)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    print(out)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "seed":
        seed_charts(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "bars":
        bars(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
