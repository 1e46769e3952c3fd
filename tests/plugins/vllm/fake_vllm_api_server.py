"""A stand-in for ``vllm.entrypoints.openai.api_server`` used by the fast tests (standard library only).

The tests copy this file to ``<tmp>/vllm/entrypoints/openai/api_server.py`` and put ``<tmp>`` on the
server's ``PYTHONPATH``, so ``VLLMServer`` launches it exactly as it launches vLLM. It answers the
endpoints ``VLLMServer`` uses and appends what it saw (its command line, environment, requests) as JSON
lines to ``$FAKE_VLLM_RECORD``. It also starts a child process, like vLLM's engine core, so tests can
check that stopping the server ends the whole process group.

``$FAKE_VLLM_MODE``: ``ok`` (default), ``crash`` (print an error and exit 3), ``hang`` (never listen),
``ignore_term`` (ignore SIGTERM), ``port_taken_once`` (the first launch fails like a port clash).
``$FAKE_VLLM_RELOAD=fail`` makes ``/collective_rpc`` answer 500. Chat completions alternate between two
fixed replies, with token ids and logprobs, enough for GRPO to train on.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Set

RECORDED_ENV = (
    "VLLM_CPU_KVCACHE_SPACE",
    "VLLM_CPU_OMP_THREADS_BIND",
    "HF_HUB_OFFLINE",
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING",
    "VLLM_SERVER_DEV_MODE",
)


def record(event: Dict[str, Any]) -> None:
    with open(os.environ["FAKE_VLLM_RECORD"], "a", encoding="utf-8") as out:
        out.write(json.dumps(event) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default=None)
    args, _unknown = parser.parse_known_args()
    mode = os.environ.get("FAKE_VLLM_MODE", "ok")

    if mode == "port_taken_once":
        marker = Path(os.environ["FAKE_VLLM_RECORD"] + ".port-clash")
        if not marker.exists():
            marker.touch()
            record({"event": "port_clash", "port": args.port})
            print(f"OSError: [Errno 98] Address already in use: ('{args.host}', {args.port})", flush=True)
            sys.exit(1)
    if mode == "crash":
        print("RuntimeError: fake engine failed to initialise", flush=True)
        sys.exit(3)
    if mode == "ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    record(
        {
            "event": "start",
            "argv": sys.argv[1:],
            "env": {key: os.environ.get(key) for key in RECORDED_ENV},
            "pid": os.getpid(),
            "engine_pid": engine.pid,
            "port": args.port,
        }
    )
    if mode == "hang":
        time.sleep(3600)

    served = args.served_model_name or args.model
    adapters: Set[str] = set()
    replies = [0]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *log_args: Any) -> None:
            print(format % log_args, flush=True)

        def _answer(self, status: int, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._answer(200, {})
            elif self.path == "/v1/models":
                data = [{"id": served, "object": "model"}] + [{"id": name, "object": "model"} for name in adapters]
                self._answer(200, {"object": "list", "data": data})
            else:
                self._answer(404, {"error": "not found"})

        def _chat(self, body: Dict[str, Any]) -> None:
            """A reply that alternates between two fixed texts, with token ids and logprobs as vLLM reports
            them when asked (``return_token_ids``, ``logprobs``); small ids fit any tokenizer."""
            if body.get("model") not in {served, *adapters}:
                self._answer(404, {"error": f"model {body.get('model')!r} is not served"})
                return
            replies[0] += 1
            text, ids = ("aeiou", [5, 6, 7]) if replies[0] % 2 else ("xyz", [8, 9, 10])
            choice: Dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": {"content": [{"token": str(i), "logprob": -1.0} for i in ids]},
            }
            payload: Dict[str, Any] = {
                "id": f"chatcmpl-{replies[0]}",
                "object": "chat.completion",
                "model": body["model"],
            }
            if body.get("return_token_ids"):
                choice["token_ids"] = ids
                payload["prompt_token_ids"] = [1, 2, 3, 4]
            payload["choices"] = [choice]
            payload["usage"] = {"prompt_tokens": 4, "completion_tokens": len(ids), "total_tokens": 4 + len(ids)}
            self._answer(200, payload)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            record({"event": "request", "path": self.path, "body": body})
            route = self.path.split("?", 1)[0]
            if route == "/v1/load_lora_adapter":
                if body["lora_name"] in adapters and not body.get("load_inplace"):
                    self._answer(400, {"error": "already loaded"})
                    return
                adapters.add(body["lora_name"])
                self._answer(200, {})
            elif route == "/v1/unload_lora_adapter":
                if body["lora_name"] not in adapters:
                    self._answer(404, {"error": "not loaded"})
                    return
                adapters.discard(body["lora_name"])
                self._answer(200, {})
            elif route == "/collective_rpc":
                if os.environ.get("FAKE_VLLM_RELOAD") == "fail":
                    self._answer(500, {"error": "reload failed"})
                    return
                self._answer(200, {"results": [None]})
            elif route == "/v1/chat/completions":
                self._chat(body)
            elif route == "/reset_prefix_cache":
                self._answer(200, {"success": True})
            else:
                self._answer(404, {"error": "not found"})

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"fake vLLM serving {served} on {args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        engine.terminate()


if __name__ == "__main__":
    main()
