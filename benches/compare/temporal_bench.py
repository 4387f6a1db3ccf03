"""Worker and closed-loop load generator for the Temporal side of benches/compare.sh.

    python temporal_bench.py worker --address 127.0.0.1:27233
    python temporal_bench.py drive --address 127.0.0.1:27233 --in-flight 32 --duration 20 \
        --warmup 5 --server-pids 123 --handler-pids 456 [--clk-tck 100]

The worker runs in a process of its own so that its CPU time can be charged separately: unlike
Waggle's job worker, a Temporal worker also runs the workflow code, which is part of the
orchestration. `drive` measures the way `waggle bench` does (cli/src/bench.rs): N slots each start
the workflow and wait for its result, then start the next at once. A workflow counts when it was
started after the warm-up and finished before the end; throughput is those workflows over the
measured seconds, and the percentiles are nearest-rank over their latencies. Any failed workflow
stops the run. CPU time (user + system, from /proc/PID/stat) is read at the start and at the end of
the measured window, for the server processes and for the worker; the load generator's own CPU is
charged to no one, as the bench's is not charged to Waggle. `drive` prints one JSON object.
"""

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
import uuid
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from temporal_workflow import TASK_QUEUE, OneActivity, step


def cpu_seconds(pid: int, clk_tck: int) -> float:
    """CPU seconds (user + system) used by a process so far.

    The command name in field 2 may hold spaces, so the fields are counted from the closing
    parenthesis: utime and stime are the 12th and 13th after it.
    """
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / clk_tck


def resident_mb(pids: list[int]) -> float:
    """Resident memory in MB (VmRSS of /proc/PID/status), summed over the processes."""
    kb = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    kb += int(line.split()[1])
    return kb / 1000


def runnable_tasks() -> float | None:
    """Runnable tasks on the machine right now (procs_running of /proc/stat), sampled as `waggle bench`
    does to show how busy the machine was; the load generator competes for the same cores."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("procs_running "):
                return float(line.split()[1])
    return None


def percentile(sorted_values: list[float], p: float) -> float:
    """The same nearest-rank rule as `waggle bench`: sorted[round((n - 1) * p)], halves rounded up."""
    if not sorted_values:
        return 0.0
    return sorted_values[int((len(sorted_values) - 1) * p + 0.5)]


async def run_worker(args: argparse.Namespace) -> None:
    client = await Client.connect(args.address)
    worker = Worker(client, task_queue=TASK_QUEUE, workflows=[OneActivity], activities=[step])
    print("temporal worker polling", TASK_QUEUE, flush=True)
    await worker.run()


async def drive(args: argparse.Namespace) -> None:
    client = await Client.connect(args.address)
    measure_from = time.monotonic() + args.warmup
    end = measure_from + args.duration
    latencies: list[float] = []

    async def slot() -> None:
        while time.monotonic() < end:
            begun = time.monotonic()
            await client.execute_workflow(
                OneActivity.run,
                id=f"compare-{uuid.uuid4()}",
                task_queue=TASK_QUEUE,
                run_timeout=timedelta(seconds=60),
            )
            done = time.monotonic()
            if begun >= measure_from and done <= end:
                latencies.append((done - begun) * 1000.0)

    def charged(pids: list[int]) -> float:
        return sum(cpu_seconds(pid, args.clk_tck) for pid in pids)

    slots = asyncio.gather(*(slot() for _ in range(args.in_flight)))

    async def checkpoint(at: float) -> tuple[float, float]:
        # Wake at `at`, or at once if a slot failed (gather then raises here).
        await asyncio.wait([slots], timeout=max(0.0, at - time.monotonic()))
        if slots.done() and slots.exception() is not None:
            raise slots.exception()
        return charged(args.server_pids), charged(args.handler_pids)

    before = await checkpoint(measure_from)
    runnable: list[float] = []

    async def sample() -> None:
        while True:
            value = runnable_tasks()
            if value is not None:
                runnable.append(value)
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    try:
        after = await checkpoint(end)
    finally:
        sampler.cancel()
    rss = (resident_mb(args.server_pids), resident_mb(args.handler_pids))
    await slots

    latencies.sort()
    n = len(latencies)

    def per_unit_us(pids: list[int], a: float, b: float):
        return (b - a) / n * 1e6 if pids and n else None

    figures = {
        "in_flight": args.in_flight,
        "duration_s": args.duration,
        "count": n,
        "per_second": n / args.duration,
        "p50_ms": percentile(latencies, 0.50),
        "p95_ms": percentile(latencies, 0.95),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else 0.0,
        "server_cpu_us": per_unit_us(args.server_pids, before[0], after[0]),
        "handler_cpu_us": per_unit_us(args.handler_pids, before[1], after[1]),
        "server_rss_mb": rss[0] if args.server_pids else None,
        "handler_rss_mb": rss[1] if args.handler_pids else None,
        "mean_runnable_tasks": sum(runnable) / len(runnable) if runnable else None,
    }
    print(json.dumps(figures), flush=True)


def pid_list(value: str) -> list[int]:
    return [int(p) for p in value.split(",") if p]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run the workflow and activity worker")
    worker.add_argument("--address", default="127.0.0.1:27233")
    driver = sub.add_parser("drive", help="run the closed-loop load and print its figures as JSON")
    driver.add_argument("--address", default="127.0.0.1:27233")
    driver.add_argument("--in-flight", type=int, default=32)
    driver.add_argument("--duration", type=float, default=20)
    driver.add_argument("--warmup", type=float, default=5)
    driver.add_argument("--server-pids", type=pid_list, default=[])
    driver.add_argument("--handler-pids", type=pid_list, default=[])
    driver.add_argument("--clk-tck", type=int, default=100)
    args = parser.parse_args()
    if args.command == "worker":
        asyncio.run(run_worker(args))
        return
    # The SDK's native core keeps threads of its own, and the interpreter's finalization sometimes
    # aborts on them ("PyGILState_Release ... finalizing") after the figures are out, which would
    # turn a good run into a failed one. Leave without finalizing once stdout is flushed.
    status = 0
    try:
        asyncio.run(drive(args))
    except BaseException:  # noqa: BLE001 - report anything, then leave the same way
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
