#!/usr/bin/env node
// An Agent Lightning runner in Node.js: takes rollouts from the store over HTTP and runs the agent of
// agent.js on them, following docs/runner-protocol.md. No Python runs in this process.
//
//   node runner.js --store http://127.0.0.1:4747 [--concurrency 2] [--max-rollouts 8]
//
// Per rollout: dequeue (a new attempt), read its resources (the LLM is the proxy's route of this
// attempt), heartbeat while the agent runs, export the agent's spans with OTLP/HTTP (every span
// carries the rollout and attempt ids), record the returned reward as a span, flush, and set the
// attempt's status. A timeout, a cancel or the store ending the attempt aborts the agent.

import os from "node:os";
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";

import { context, createContextKey, diag, DiagConsoleLogger, DiagLogLevel, propagation, trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, NodeTracerProvider } from "@opentelemetry/sdk-trace-node";

import { calculatorAgent } from "./agent.js";
import { StoreClient } from "./store.js";

const ROLLOUT_ID = "agentlightning.rollout_id";
const ATTEMPT_ID = "agentlightning.attempt_id";
const REWARD_SPAN = "agentlightning.annotation";
const TERMINAL_ROLLOUT_STATUSES = new Set(["succeeded", "failed", "cancelled"]);

const { values: options } = parseArgs({
  options: {
    store: { type: "string", default: process.env.AGL_STORE_URL ?? "http://127.0.0.1:4747" },
    "worker-id": { type: "string", default: `node-${os.hostname()}-${process.pid}` },
    concurrency: { type: "string", default: "1" },
    "max-rollouts": { type: "string" },
    "poll-interval": { type: "string", default: "0.2" },
    "heartbeat-interval": { type: "string", default: "5" },
    "exit-when-idle": { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});
if (options.help) {
  console.log(`usage: node runner.js [options]
  --store URL              the store server (default: $AGL_STORE_URL or http://127.0.0.1:4747)
  --worker-id ID           this runner's worker id (default: node-<host>-<pid>)
  --concurrency N          rollouts run at once (default: 1)
  --max-rollouts N         stop after taking N rollouts
  --poll-interval S        seconds between polls of an empty queue (default: 0.2)
  --heartbeat-interval S   seconds between heartbeats (default: 5)
  --exit-when-idle S       stop after S seconds without a rollout
AGL_STORE_TOKEN is sent as the bearer token. Ctrl-C finishes the rollouts in flight, then stops.`);
  process.exit(0);
}
const workerId = options["worker-id"];
const concurrency = Number(options.concurrency);
const maxRollouts = options["max-rollouts"] === undefined ? Infinity : Number(options["max-rollouts"]);
const pollSeconds = Number(options["poll-interval"]);
const heartbeatSeconds = Number(options["heartbeat-interval"]);
const idleExitSeconds = options["exit-when-idle"] === undefined ? Infinity : Number(options["exit-when-idle"]);
const token = process.env.AGL_STORE_TOKEN;
const store = new StoreClient(options.store, { token });

// -- tracing: the agent's spans go to the store's OTLP/HTTP endpoint, stamped with their rollout --------
diag.setLogger(new DiagConsoleLogger(), DiagLogLevel.WARN); // a refused export is printed, not silent
const rolloutKey = createContextKey("agentlightning rollout");

/** Copies the rollout and attempt ids of the current context onto every span that starts in it. */
class RolloutIdsProcessor {
  onStart(span, parentContext) {
    const ids = parentContext.getValue(rolloutKey);
    if (ids) span.setAttributes({ [ROLLOUT_ID]: ids.rolloutId, [ATTEMPT_ID]: ids.attemptId });
  }
  onEnd() {}
  forceFlush() {
    return Promise.resolve();
  }
  shutdown() {
    return Promise.resolve();
  }
}

const exporter = new OTLPTraceExporter({
  url: `${store.url}/v1/traces`,
  headers: token ? { Authorization: `Bearer ${token}` } : {},
});
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ "service.name": "node-calculator-agent", "agentlightning.worker_id": workerId }),
  spanProcessors: [new RolloutIdsProcessor(), new BatchSpanProcessor(exporter)],
});
provider.register(); // the global tracer provider and the AsyncLocalStorage context manager
const tracer = trace.getTracer("agentlightning-node-runner");

// -- one rollout ------------------------------------------------------------------------------------
/** The agent's LLM: the first LLM resource; a proxy LLM becomes this attempt's route of the proxy. */
function llmFor(resources, rolloutId, attemptId) {
  const found = Object.values(resources ?? {}).find((r) => r.resource_type === "proxy_llm" || r.resource_type === "llm");
  if (!found) throw new Error(`no LLM among the resources (${Object.keys(resources ?? {}).join(", ") || "none"})`);
  let baseURL = found.endpoint.replace(/\/+$/, "");
  if (found.resource_type === "proxy_llm") {
    const v1 = baseURL.endsWith("/v1");
    baseURL = `${v1 ? baseURL.slice(0, -3) : baseURL}/rollout/${rolloutId}/attempt/${attemptId}${v1 ? "/v1" : ""}`;
  }
  return {
    baseURL,
    model: found.model,
    apiKey: found.api_key,
    samplingParameters: found.sampling_parameters ?? {},
    headers: {},
  };
}

async function runRollout(rollout) {
  const rolloutId = rollout.rollout_id;
  const attemptId = rollout.attempt.attempt_id;
  const started = Date.now();
  const abort = new AbortController();
  let abortReason = null; // "timeout" or "cancelled"
  const stop = (reason, why) => {
    if (abortReason !== null) return;
    abortReason = reason;
    abort.abort(new Error(why));
  };

  // Heartbeats keep the store's watchdog from declaring the attempt unresponsive; their answers say
  // whether the store timed the attempt out, and the rollout's status whether it was cancelled.
  const beat = async ({ checkCancel = true } = {}) => {
    try {
      const attempt = await store.updateAttempt(rolloutId, attemptId, { last_heartbeat_time: Date.now() / 1000 });
      if (attempt.status === "timeout") return stop("timeout", `the store timed out attempt ${attemptId}`);
      if (!checkCancel) return;
      const current = await store.getRollout(rolloutId);
      if (current && TERMINAL_ROLLOUT_STATUSES.has(current.status)) {
        stop("cancelled", `rollout ${rolloutId} became ${current.status} while running`);
      }
    } catch (error) {
      console.warn(`[${workerId}] heartbeat of ${attemptId} failed: ${error.message}`);
    }
  };
  const timers = [setInterval(beat, heartbeatSeconds * 1000)];
  const timeoutSeconds = rollout.config?.timeout_seconds;
  if (timeoutSeconds != null) {
    const left = rollout.attempt.start_time * 1000 + timeoutSeconds * 1000 - Date.now();
    timers.push(setTimeout(() => stop("timeout", `exceeded timeout_seconds=${timeoutSeconds}`), Math.max(0, left)));
  }
  await beat({ checkCancel: false }); // the first heartbeat moves the attempt from preparing to running

  let status = "succeeded";
  let reward = null;
  let failure = null;
  const rolloutContext = context.active().setValue(rolloutKey, { rolloutId, attemptId });
  try {
    const llm = llmFor(await store.resourcesFor(rollout), rolloutId, attemptId);
    reward = await context.with(rolloutContext, () =>
      tracer.startActiveSpan("agentlightning.rollout", async (root) => {
        try {
          // A W3C traceparent on the model calls: the proxy nests its LLM spans under this rollout's span.
          llm.headers = {};
          propagation.inject(context.active(), llm.headers);
          const aborted = new Promise((_, reject) => abort.signal.addEventListener("abort", () => reject(abort.signal.reason)));
          const value = await Promise.race([calculatorAgent(rollout.input, llm, { signal: abort.signal }), aborted]);
          if (typeof value === "number") {
            // The final reward, in the layout of agentlightning's emit_reward.
            tracer
              .startSpan(REWARD_SPAN, {
                attributes: { "agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": value },
              })
              .end();
          }
          return value;
        } finally {
          root.end();
        }
      }),
    );
  } catch (error) {
    status = abortReason === "timeout" ? "timeout" : "failed";
    failure = error;
  } finally {
    timers.forEach(clearInterval);
  }

  await provider.forceFlush(); // every span reaches the store before the attempt ends
  const fields = { status };
  if (failure) fields.metadata = { error: { type: failure.name, message: String(failure.message ?? failure) } };
  try {
    await store.updateAttempt(rolloutId, attemptId, fields);
  } catch (error) {
    if (error.status !== 409) throw error;
    // The store ended the attempt first (its watchdog): its verdict stands; keep the error on record.
    console.warn(`[${workerId}] attempt ${attemptId} already ended: ${error.body?.message}`);
    if (fields.metadata) await store.updateAttempt(rolloutId, attemptId, { metadata: fields.metadata });
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(2);
  const detail = failure ? ` (${failure.message})` : ` reward ${reward}`;
  console.log(`[${workerId}] ${rolloutId} ${attemptId} ${status}${detail} in ${seconds} s`);
}

// -- the loop ---------------------------------------------------------------------------------------
let stopping = false;
let taken = 0;
let completed = 0;
let idleSince = Date.now();

async function slot() {
  while (!stopping && taken < maxRollouts) {
    let rollout;
    try {
      rollout = await store.dequeue(workerId);
    } catch (error) {
      console.warn(`[${workerId}] dequeue failed: ${error.message}`);
    }
    if (!rollout) {
      if ((Date.now() - idleSince) / 1000 >= idleExitSeconds) break;
      await sleep(pollSeconds * 1000);
      continue;
    }
    taken += 1;
    try {
      await runRollout(rollout);
    } catch (error) {
      console.error(`[${workerId}] rollout ${rollout.rollout_id}: ${error.stack ?? error}`);
    }
    completed += 1;
    idleSince = Date.now();
  }
}

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    if (stopping) process.exit(130);
    stopping = true; // finish the rollouts in flight, take no new ones
    console.log(`[${workerId}] ${signal}: finishing the rollouts in flight`);
  });
}

const workerStats = () => ({ language: "javascript", pid: process.pid, host: os.hostname(), completed });
await store.workerHeartbeat(workerId, workerStats());
const workerBeat = setInterval(() => store.workerHeartbeat(workerId, workerStats()).catch(() => {}), heartbeatSeconds * 1000);
console.log(`[${workerId}] runner ready: store ${store.url}, concurrency ${concurrency}`);
await Promise.all(Array.from({ length: concurrency }, slot));
clearInterval(workerBeat);
await provider.shutdown();
console.log(`[${workerId}] stopped after ${completed} rollout(s)`);
