// The Restate side of benches/compare.sh: a service whose one handler does one durable step.
//
// Waggle's bench BPMN process has one service task, so each instance costs the engine one job
// handed to a worker and one completion written back. The nearest Restate equivalent is a handler
// that does one `ctx.run`: the SDK sends the step's result to the server, which journals it (appends
// it to its durable log) and acknowledges it before the handler may go on, and the invocation's
// output is journaled before the ingress answers the caller. The step itself does nothing, as Waggle's bench
// worker does nothing but complete its job.
//
// Usage: node restate-service.mjs PORT
// The SDK logs two INFO lines per invocation by default; compare.sh sets RESTATE_LOGGING=WARN so
// that the figures measure the service, not its console.
//
// The SDK calls Promise.withResolvers (Node 22 and later); on Node 20 the standard's own definition
// is installed first, which is why the SDK is imported dynamically below rather than at the top.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new this((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}
const restate = await import("@restatedev/restate-sdk");

const port = Number(process.argv[2] ?? process.env.PORT ?? 27180);

const bench = restate.service({
  name: "WaggleCompare",
  handlers: {
    // One durable step, then return its result to the caller waiting on the ingress.
    oneStep: async (ctx) => {
      const value = await ctx.run("step", () => 1);
      return value;
    },
  },
});

restate.serve({ services: [bench], port }).then(
  (bound) => console.log(`restate-service listening on ${bound}`),
  (err) => {
    console.error("restate-service could not listen:", err);
    process.exit(1);
  },
);
