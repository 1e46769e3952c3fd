// A small client of the Agent Lightning store's REST API (docs/runner-protocol.md), on Node's fetch.

export class StoreError extends Error {
  constructor(status, body, what) {
    super(`${what}: HTTP ${status} ${body?.error ?? ""}: ${body?.message ?? JSON.stringify(body)}`);
    this.status = status;
    this.body = body;
  }
}

export class StoreClient {
  /** `url`: the store server, e.g. http://127.0.0.1:4747; `token`: its bearer token, if it has one. */
  constructor(url, { token } = {}) {
    this.url = url.replace(/\/+$/, "");
    this.api = `${this.url}/v1/agl`;
    this.headers = { "content-type": "application/json" };
    if (token) this.headers.authorization = `Bearer ${token}`;
  }

  async request(method, path, body, { notFoundIsNull = false } = {}) {
    const response = await fetch(`${this.api}${path}`, {
      method,
      headers: this.headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    const parsed = text ? JSON.parse(text) : null;
    if (response.status === 404 && notFoundIsNull) return null;
    if (!response.ok) throw new StoreError(response.status, parsed, `${method} ${path}`);
    return parsed;
  }

  /** Registers the worker, or records a heartbeat of it (PATCH creates unknown workers). */
  workerHeartbeat(workerId, stats) {
    return this.request("PATCH", `/workers/${encodeURIComponent(workerId)}`, { heartbeat_stats: stats });
  }

  /** The next queued rollout with a new attempt for `workerId`, or null when the queue is empty. */
  async dequeue(workerId) {
    const rollouts = await this.request("POST", "/queues/rollouts/dequeue", { limit: 1, worker_id: workerId });
    return rollouts[0] ?? null;
  }

  /** The resources a rollout names, or the latest ones when it names none; null if there are none. */
  async resourcesFor(rollout) {
    const path = rollout.resources_id ? `/resources/${encodeURIComponent(rollout.resources_id)}` : "/resources/latest";
    const found = await this.request("GET", path, undefined, { notFoundIsNull: true });
    return found?.resources ?? null;
  }

  /** PATCH the attempt: a heartbeat (`{last_heartbeat_time}`), a status, metadata. Returns the attempt. */
  updateAttempt(rolloutId, attemptId, fields) {
    return this.request("PATCH", `/rollouts/${rolloutId}/attempts/${attemptId}`, fields);
  }

  getRollout(rolloutId) {
    return this.request("GET", `/rollouts/${rolloutId}`, undefined, { notFoundIsNull: true });
  }
}
