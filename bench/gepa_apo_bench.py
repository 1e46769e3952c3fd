"""GEPA (``gepa`` on PyPI) on the benchmark's task; run by apo_bench.py in GEPA's own venv.

GEPA evolves both templates (``system_prompt``, ``request_prompt``) with the same agent, endpoint
and reflection model as the others; ``max_metric_calls`` is the rollout budget (one metric call is one
task played) and a stop callback ends the run before a reflection call over ``--max-optimizer-calls``. The
reflective dataset shows the reflection model what our critique sees: the agent's
conversation and its reward. A candidate whose templates do not format (a lost ``{request}``, stray
braces) scores 0. Prints one JSON line: the result.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _apo_task import AGENT_MAX_TOKENS, SEED_PROMPTS, datasets, messages_for, score_reply  # noqa: E402
from gepa import EvaluationBatch, GEPAAdapter, optimize  # noqa: E402
from openai import OpenAI  # noqa: E402

REWARD_SCALE = "1.0: the right room; 0.5: a room that fits but is not the right one; 0.0: a wrong room or no answer"


class RoomAdapter(GEPAAdapter[Dict[str, Any], Dict[str, Any], str]):
    def __init__(self, client: OpenAI, model: str, concurrency: int) -> None:
        self.client = client
        self.model = model
        self.pool = ThreadPoolExecutor(concurrency)
        self.rollouts = 0
        self._lock = threading.Lock()

    def _play(self, prompts: Mapping[str, str], task: Dict[str, Any]) -> Dict[str, Any]:
        with self._lock:
            self.rollouts += 1
        try:
            messages = messages_for(prompts, task)
        except (KeyError, IndexError, ValueError) as exc:  # the templates do not format: the agent fails
            return {"messages": [], "reply": f"(the prompt templates do not format: {exc!r})", "score": 0.0}
        reply = self.client.chat.completions.create(
            model=self.model,
            messages=messages,  # type: ignore[arg-type]
            temperature=0.0,
            max_tokens=AGENT_MAX_TOKENS,
        )
        text = reply.choices[0].message.content or ""
        return {"messages": messages, "reply": text, "score": score_reply(task, text)}

    def evaluate(
        self, batch: List[Dict[str, Any]], candidate: Dict[str, str], capture_traces: bool = False
    ) -> EvaluationBatch[Dict[str, Any], str]:
        played = list(self.pool.map(lambda task: self._play(candidate, task), batch))
        return EvaluationBatch(
            outputs=[p["reply"] for p in played],
            scores=[p["score"] for p in played],
            trajectories=played if capture_traces else None,
        )

    def make_reflective_dataset(
        self,
        candidate: Dict[str, str],
        eval_batch: EvaluationBatch[Dict[str, Any], str],
        components_to_update: List[str],
    ) -> Mapping[str, Sequence[Mapping[str, Any]]]:
        records = []
        for played in eval_batch.trajectories or []:
            conversation = "\n".join(f"{m['role']}: {m['content']}" for m in played["messages"])
            records.append(
                {
                    "Inputs": conversation,
                    "Generated Outputs": played["reply"],
                    "Feedback": f"reward {played['score']:.2f} ({REWARD_SCALE})",
                }
            )
        return {name: records for name in components_to_update}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--optimizer-url", required=True)
    parser.add_argument("--optimizer-model", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, required=True)
    parser.add_argument("--val", type=int, required=True)
    parser.add_argument("--rooms", type=int, required=True)
    parser.add_argument("--max-rollouts", type=int, required=True)
    parser.add_argument("--minibatch", type=int, default=2)
    parser.add_argument("--optimizer-max-tokens", type=int, default=250)
    parser.add_argument("--max-optimizer-calls", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--run-dir", default=None)
    args = parser.parse_args()
    train, val = datasets(args.seed, args.train, args.val, args.rooms)
    client = OpenAI(base_url=args.url, api_key="unused", max_retries=1, timeout=1800)
    optimizer = OpenAI(base_url=args.optimizer_url, api_key="unused", max_retries=1, timeout=1800)
    calls = {"n": 0, "tokens": 0}

    def reflection_lm(prompt: str) -> str:
        calls["n"] += 1
        reply = optimizer.chat.completions.create(
            model=args.optimizer_model,
            messages=[{"role": "user", "content": prompt}],
            temperature=1.0,
            max_tokens=args.optimizer_max_tokens,
        )
        calls["tokens"] += reply.usage.total_tokens if reply.usage else 0
        return reply.choices[0].message.content or ""

    def calls_spent(_state: Any) -> bool:  # checked before each iteration, which makes one reflection call
        return args.max_optimizer_calls is not None and calls["n"] >= args.max_optimizer_calls

    adapter = RoomAdapter(client, args.model, args.concurrency)
    started = time.perf_counter()
    result = optimize(
        seed_candidate=dict(SEED_PROMPTS),
        trainset=train,
        valset=val,
        adapter=adapter,
        reflection_lm=reflection_lm,
        reflection_minibatch_size=args.minibatch,
        max_metric_calls=args.max_rollouts,
        module_selector="round_robin",
        run_dir=args.run_dir,
        seed=args.seed,
        display_progress_bar=False,
        stop_callbacks=[calls_spent],
    )
    minutes = (time.perf_counter() - started) / 60
    best = result.best_candidate
    summary = {
        "system": f"GEPA {_version()}",
        "seed": args.seed,
        "best_val": result.val_aggregate_scores[result.best_idx],
        "seed_val": result.val_aggregate_scores[0],
        "best_prompts": best if isinstance(best, dict) else {"system_prompt": best},
        "rollouts": adapter.rollouts,
        "optimizer_calls": calls["n"],
        "optimizer_tokens": calls["tokens"],
        "minutes": minutes,
        "candidates": len(result.val_aggregate_scores),
    }
    print("RESULT " + json.dumps(summary), flush=True)


def _version() -> str:
    from importlib.metadata import version

    return version("gepa")


if __name__ == "__main__":
    main()
