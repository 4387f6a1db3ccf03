// Closed-loop load generator for the Restate side of benches/compare.sh.
//
// It measures the way `waggle bench` does (cli/src/bench.rs), so that the two sets of figures can
// sit in one table: N slots each call the handler through the ingress and wait for its result, then
// call again at once. A call counts when it began after the warm-up and returned before the end;
// throughput is those calls over the measured seconds, and the percentiles are nearest-rank over
// their latencies. Any failed call stops the run, as a failed create does in `waggle bench`.
//
// It also charges CPU time to the processes it is given, read from /proc/PID/stat (user + system
// time) at the start and at the end of the measured window: the Restate server, and separately the
// service's Node process, which runs the SDK's half of the protocol (journal replay, step
// acknowledgement) as well as the handler. The load generator's own CPU is not charged to anyone,
// as the bench's is not charged to Waggle.
//
// Usage:
//   node restate-load.mjs --url http://127.0.0.1:27080/WaggleCompare/oneStep --in-flight 32 \
//     --duration 20 --warmup 5 --server-pids 123 --handler-pids 456 [--clk-tck 100]
// Prints one JSON object on stdout.
import http from "node:http";
import { readFileSync } from "node:fs";

function parseArgs(argv) {
  const args = { inFlight: 32, duration: 20, warmup: 5, serverPids: [], handlerPids: [], clkTck: 100 };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${name} needs a value`);
    const pids = () => value.split(",").filter(Boolean).map(Number);
    switch (name) {
      case "--url": args.url = new URL(value); break;
      case "--in-flight": args.inFlight = Number(value); break;
      case "--duration": args.duration = Number(value); break;
      case "--warmup": args.warmup = Number(value); break;
      case "--server-pids": args.serverPids = pids(); break;
      case "--handler-pids": args.handlerPids = pids(); break;
      case "--clk-tck": args.clkTck = Number(value); break;
      default: throw new Error(`unknown argument ${name}`);
    }
  }
  if (!args.url) throw new Error("--url is required");
  return args;
}

// Seconds of CPU (user + system) a process has used so far. The command name in field 2 may hold
// spaces, so the fields are counted from the closing parenthesis: utime and stime are the 12th and
// 13th after it.
function cpuSeconds(pid, clkTck) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / clkTck;
}

const sumCpu = (pids, clkTck) => pids.reduce((sum, pid) => sum + cpuSeconds(pid, clkTck), 0);

// Resident memory in MB (VmRSS of /proc/PID/status), summed over the processes.
function residentMb(pids) {
  let kb = 0;
  for (const pid of pids) {
    const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"));
    if (line) kb += Number(line.split(/\s+/)[1]);
  }
  return kb / 1000;
}

// Runnable tasks on the machine right now (procs_running of /proc/stat), sampled as `waggle bench`
// does to show how busy the machine was; the load generator competes for the same cores.
function runnableTasks() {
  const line = readFileSync("/proc/stat", "utf8").split("\n").find((l) => l.startsWith("procs_running "));
  return line ? Number(line.split(" ")[1]) : null;
}

// The same nearest-rank rule as `waggle bench`: sorted[round((n - 1) * p)].
function percentile(sorted, p) {
  return sorted.length ? sorted[Math.round((sorted.length - 1) * p)] : 0;
}

// One call through the ingress: POST with an empty JSON body, resolve when the whole answer is in.
function call(agent, url) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: "POST",
        headers: { "content-type": "application/json", "content-length": 0 },
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () =>
          res.statusCode === 200 ? resolve(body) : reject(new Error(`HTTP ${res.statusCode}: ${body.slice(0, 300)}`)),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end();
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
const nowMs = () => performance.now();

async function main() {
  const args = parseArgs(process.argv.slice(2));
  // One keep-alive connection per slot, as each `waggle bench` slot reuses its channel.
  const agent = new http.Agent({ keepAlive: true, maxSockets: args.inFlight });
  const measureFrom = nowMs() + args.warmup * 1000;
  const end = measureFrom + args.duration * 1000;
  const latencies = [];

  const slot = async () => {
    while (nowMs() < end) {
      const begun = nowMs();
      await call(agent, args.url);
      const done = nowMs();
      if (begun >= measureFrom && done <= end) latencies.push(done - begun);
    }
  };
  const slots = Promise.all(Array.from({ length: args.inFlight }, slot));
  // A failing slot rejects `slots` at once; don't wait out the timers before reporting it.
  const failed = slots.then(() => null, (err) => err);

  const checkpoint = async (at) => {
    const err = await Promise.race([sleep(at - nowMs()).then(() => null), failed]);
    if (err) throw err;
    return { server: sumCpu(args.serverPids, args.clkTck), handler: sumCpu(args.handlerPids, args.clkTck) };
  };
  const before = await checkpoint(measureFrom);
  const runnable = [];
  const sampler = setInterval(() => {
    const tasks = runnableTasks();
    if (tasks !== null) runnable.push(tasks);
  }, 250);
  const after = await checkpoint(end).finally(() => clearInterval(sampler));
  const rss = { server: residentMb(args.serverPids), handler: residentMb(args.handlerPids) };
  await slots;
  agent.destroy();

  latencies.sort((a, b) => a - b);
  const n = latencies.length;
  const perUnitUs = (a, b) => (n && args.serverPids.length + args.handlerPids.length ? ((b - a) / n) * 1e6 : null);
  const figures = {
    in_flight: args.inFlight,
    duration_s: args.duration,
    count: n,
    per_second: n / args.duration,
    p50_ms: percentile(latencies, 0.5),
    p95_ms: percentile(latencies, 0.95),
    p99_ms: percentile(latencies, 0.99),
    max_ms: n ? latencies[n - 1] : 0,
    server_cpu_us: args.serverPids.length ? perUnitUs(before.server, after.server) : null,
    handler_cpu_us: args.handlerPids.length ? perUnitUs(before.handler, after.handler) : null,
    server_rss_mb: args.serverPids.length ? rss.server : null,
    handler_rss_mb: args.handlerPids.length ? rss.handler : null,
    mean_runnable_tasks: runnable.length ? runnable.reduce((a, b) => a + b, 0) / runnable.length : null,
  };
  console.log(JSON.stringify(figures));
}

main().catch((err) => {
  console.error(`restate-load: ${err.stack ?? err}`);
  process.exit(1);
});
