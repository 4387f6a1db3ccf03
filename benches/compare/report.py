"""Prints benches/compare.sh's table and ratios from the figures each run left in RESULTS_DIR.

    python3 report.py RESULTS_DIR

RESULTS_DIR holds, per system, either SYSTEM.json (one JSON object: `waggle bench --json`'s for
Waggle, restate-load.mjs's or temporal_bench.py's for the others) or SYSTEM.skipped (one line: why
it did not run). Waggle's figures are renamed to the fields the other two print, so one table holds
all three. Only the standard library is used, so the report needs no install.
"""

import json
import sys
import textwrap
from pathlib import Path

# What one unit of work is called for each system, and which processes each CPU column charges.
SYSTEMS = [
    ("waggle", "Waggle", "instance"),
    ("restate", "Restate", "invocation"),
    ("temporal", "Temporal", "workflow"),
]
CHARGED = {
    "waggle": "server: the `waggle dev` process (gateway, broker, engine and storage in one); its job "
    "worker runs inside the `waggle bench` load generator and is not charged",
    "restate": "server: the `restate-server` process; handler: the service's Node process (the SDK's "
    "side of the journal protocol plus the handler)",
    "temporal": "server: the `temporal server start-dev` process (all services and SQLite in one); "
    "handler: the Python worker (runs the workflow code and the activity)",
}


def load(results: Path, key: str):
    """The figures of one system in the common shape, or the reason it was skipped."""
    skipped = results / f"{key}.skipped"
    if skipped.exists():
        return None, skipped.read_text().strip()
    path = results / f"{key}.json"
    if not path.exists():
        return None, "no result (the run failed; see its output above)"
    figures = json.loads(path.read_text().strip().splitlines()[-1])
    if key == "waggle":
        figures = {
            "in_flight": figures["in_flight"],
            "count": figures["instances"],
            "per_second": figures["instances_per_second"],
            "p50_ms": figures["p50_ms"],
            "p95_ms": figures["p95_ms"],
            "p99_ms": figures["p99_ms"],
            "max_ms": figures["max_ms"],
            "server_cpu_us": figures.get("server_cpu_us_per_instance"),
            "handler_cpu_us": None,
            "server_rss_mb": figures.get("resident_mb"),
            "handler_rss_mb": None,
            "mean_runnable_tasks": figures.get("mean_runnable_tasks"),
        }
    return figures, None


def waggle_probes(results: Path) -> str:
    """The disk and CPU probes of Waggle's run, to set beside other days' figures; '' if absent."""
    path = results / "waggle.json"
    if not path.exists():
        return ""
    raw = json.loads(path.read_text().strip().splitlines()[-1])
    parts = []
    if raw.get("fsync_probe_p50_ms") is not None:
        parts.append(f"fsync p50 {raw['fsync_probe_p50_ms']:.2f} ms, p99 {raw['fsync_probe_p99_ms']:.2f} ms")
    if raw.get("cpu_probe_ms") is not None:
        parts.append(f"CPU probe {raw['cpu_probe_ms']:.0f} ms")
    return "; ".join(parts)


def fmt(value, digits=0):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def with_handler(figures):
    """CPU per unit of the server and the handler process together (the server's alone if no handler)."""
    server, handler = figures.get("server_cpu_us"), figures.get("handler_cpu_us")
    if server is None:
        return None
    return server + (handler or 0.0)


def ratio(a, b):
    """a / b to three significant figures, so that a ratio far from 1 still reads (317x, 0.00448x)."""
    return "n/a" if a is None or b in (None, 0) else f"{a / b:.3g}x"


def main() -> None:
    results = Path(sys.argv[1])
    rows, skipped = {}, {}
    for key, _, _ in SYSTEMS:
        figures, reason = load(results, key)
        if figures is None:
            skipped[key] = reason
        else:
            rows[key] = figures

    header = (
        f"{'system':<9} {'unit':<10} {'in-flight':>9} {'units/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'server CPU':>11} {'+handler':>9} {'server RSS':>10} {'run-q':>6}"
    )
    print(header)
    print(f"{'':<76} {'µs/unit':>11} {'µs/unit':>9} {'MB':>10}")
    for key, name, unit in SYSTEMS:
        if key not in rows:
            print(f"{name:<9} skipped: {skipped[key]}")
            continue
        f = rows[key]
        print(
            f"{name:<9} {unit:<10} {f['in_flight']:>9} {fmt(f['per_second']):>9} {fmt(f['p50_ms'], 1):>8} "
            f"{fmt(f['p95_ms'], 1):>8} {fmt(f['p99_ms'], 1):>8} {fmt(f['max_ms'], 1):>8} "
            f"{fmt(f['server_cpu_us']):>11} {fmt(f['handler_cpu_us']):>9} {fmt(f['server_rss_mb']):>10} "
            f"{fmt(f.get('mean_runnable_tasks'), 1):>6}"
        )

    probes = waggle_probes(results)
    if probes:
        print(f"Probes `waggle bench` took just before its measurement: {probes}.")
    print()
    print("run-q: mean number of runnable tasks on the machine while measuring (load generators included).")
    print("CPU charged (user + system time over the measured window, divided by the units completed in it):")
    for key, name, _ in SYSTEMS:
        if key in rows:
            print(textwrap.fill(f"{name}: {CHARGED[key]}", width=100, initial_indent="  ", subsequent_indent="    "))

    waggle = rows.get("waggle")
    others = [(key, name) for key, name, _ in SYSTEMS if key != "waggle" and key in rows]
    if waggle and others:
        print()
        print("Waggle divided by each (throughput: above 1 means Waggle does more per second;")
        print("latency and CPU: below 1 means Waggle takes less; '+handler' sets Waggle's server CPU")
        print("against the other's server and handler processes together):")
        for key, name in others:
            f = rows[key]
            print(
                f"  vs {name:<9} throughput {ratio(waggle['per_second'], f['per_second'])}, "
                f"p50 {ratio(waggle['p50_ms'], f['p50_ms'])}, p99 {ratio(waggle['p99_ms'], f['p99_ms'])}, "
                f"server CPU/unit {ratio(waggle['server_cpu_us'], f['server_cpu_us'])}, "
                f"+handler {ratio(with_handler(waggle), with_handler(f))}"
            )


if __name__ == "__main__":
    main()
