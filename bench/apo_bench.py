"""APO benchmark: ours vs the APO of ``agentlightning==0.3.0`` vs GEPA, same task, model and rollout budget.

One model endpoint serves the agent and the optimizer of every system: the embedded default model
(``agl serve-model``, started here, ``--max-tokens`` capping the replies of the optimizers that set
no limit) or any OpenAI-compatible endpoint given with ``--url``. The task is examples/apo's meeting
room selection (bench/_apo_task.py: the listing in the request, the exact reward), the same seeded
training and validation requests for every system, greedy agent decoding. Each system runs in a
process of its own (the peer and GEPA in their own venvs) and reports its best validation score (the
mean reward on the whole validation set of its best prompts), the rollouts and optimizer calls it
used, their tokens and its minutes. Budget: ``--max-rollouts`` and ``--max-optimizer-calls`` for
ours (hard limits) and GEPA (``max_metric_calls`` and a stop callback on its reflection calls); the
peer has no budget option, so its beam is sized to the largest shape within both (``peer_shape()``) and
what it used is counted in its store and on its HTTP client. The seed prompts' validation score
("before") is measured once per seed against the same endpoint, outside every system's budget.

    python bench/apo_bench.py --peer-python P --gepa-python G            # embedded model, 1 seed
    python bench/apo_bench.py --url http://host/v1 --model NAME --seeds 0 1 2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SYSTEMS = ("ours", "peer", "gepa")


# ----------------------------------------------------------------------------------------- ours
def run_ours(args: argparse.Namespace) -> Dict[str, Any]:
    """Our APO through a real Trainer (runners, LLM proxy, SQLite store), both templates in turn."""
    from _apo_task import AGENT_MAX_TOKENS, SEED_PROMPTS, datasets, messages_for, score_reply
    from openai import AsyncOpenAI

    import agentlightning as agl
    from agentlightning.types import NamedResources, ProxyLLM, Rollout

    class BenchRoomAgent(agl.LitAgent[Dict[str, Any]]):
        async def rollout_async(self, task: Dict[str, Any], resources: NamedResources, rollout: Rollout) -> float:
            llm = resources["main_llm"]
            if isinstance(llm, ProxyLLM):
                llm = llm.with_attempted_rollout(rollout)  # type: ignore[arg-type]
            assert isinstance(llm, agl.LLM)
            prompts = {name: resources[name].template for name in SEED_PROMPTS}  # type: ignore[union-attr]
            client = AsyncOpenAI(base_url=llm.endpoint, api_key="unused", max_retries=0)
            try:
                reply = await client.chat.completions.create(
                    model=llm.model,
                    messages=messages_for(prompts, task),  # type: ignore[arg-type]
                    **llm.sampling_parameters,  # type: ignore[arg-type]
                )
            finally:
                await client.close()
            return score_reply(task, reply.choices[0].message.content)

    train, val = datasets(args.seed, args.train, args.val, args.rooms)
    resources: NamedResources = {
        name: agl.PromptTemplate(template=text, engine="f-string") for name, text in SEED_PROMPTS.items()
    }
    resources["main_llm"] = agl.LLM(endpoint=args.url, model=args.model)
    run_dir = Path(args.run_dir or f"agl_runs/apo-bench-ours-{args.seed}-{int(time.time())}")
    trainer = agl.Trainer(
        algorithm={
            "type": "apo",
            "optimizer": {"base_url": args.optimizer_url or args.url, "model": args.optimizer_model or args.model},
            # Both templates from one optimizer call (the critique and the new text in one reply): the
            # 6-call budget then affords 5 candidates (the rollout budget binds) where the peer's
            # critique-then-edit affords 3. --ours-proposal picks another proposal (bench/README.md).
            "mode": "joint",
            "proposal": args.ours_proposal,
            "beam_width": 2,
            "branch_factor": 3,
            "rounds": 4,  # the budgets end the run first
            "gradient_batch_size": args.gradient_batch_size,
            "max_rollouts": args.max_rollouts,
            "max_optimizer_calls": args.max_optimizer_calls,
            "seed": args.seed,
            "sampling": {"temperature": 0.0, "max_tokens": AGENT_MAX_TOKENS},
            "optimizer_max_tokens": args.optimizer_max_tokens,
            "optimizer_timeout": 1800.0,
        },
        runner=agl.LitAgentRunner(agl.OtelTracer(), concurrency=args.concurrency),
        store=f"sqlite:///{run_dir / 'store.db'}",
        run_dir=run_dir,
        initial_resources=resources,
    )
    started = time.perf_counter()
    with trainer:
        trainer.fit(BenchRoomAgent(), train, val_dataset=val)
    apo: Any = trainer.algorithm
    return {
        "system": f"ours (agentlightning-apo, {args.ours_proposal})",
        "seed": args.seed,
        "best_val": apo.best.score,
        "seed_val": apo.candidates[0].score,
        "best_prompts": apo.get_best_prompts(),
        "rollouts": apo.budget.rollouts,
        "optimizer_calls": apo.budget.optimizer_calls,
        "optimizer_tokens": apo.budget.tokens,
        "minutes": (time.perf_counter() - started) / 60,
        "candidates": sum(c.score is not None for c in apo.candidates),
        "critiques": [c.critique for c in apo.candidates if c.critique],
    }


# ----------------------------------------------------------------------------------------- driver
def peer_rollouts(val: int, beam_width: int, branch_factor: int, rounds: int, gradient_batch_size: int) -> int:
    """Rollouts of the 0.3 APO: seed on the validation set; per round, the parents' training batches,
    beam + candidates scored on the validation set, the leader scored again on the whole validation set."""
    total, beam = val, 1
    for _ in range(rounds):
        candidates = beam_width * branch_factor
        total += candidates * gradient_batch_size + (beam + candidates) * val + val
        beam = min(beam_width, beam + candidates)
    return total


def peer_shape(budget: int, val: int, gradient_batch_size: int, max_calls: Optional[int] = None) -> Dict[str, int]:
    """The largest 0.3 beam (rounds, then branches) whose rollouts stay within ``budget`` and whose optimizer
    calls (a critique and an edit per candidate) within ``max_calls`` (at least one round of one candidate)."""
    best = {"beam_width": 1, "branch_factor": 1, "rounds": 1}
    for rounds in range(1, 6):
        for beam_width in (1, 2):
            for branch_factor in range(1, 5):
                used = peer_rollouts(val, beam_width, branch_factor, rounds, gradient_batch_size)
                calls = 2 * beam_width * branch_factor * rounds
                shape = {"beam_width": beam_width, "branch_factor": branch_factor, "rounds": rounds}
                if max_calls is not None and calls > max_calls:
                    continue
                if used <= budget and used > peer_rollouts(val, **best, gradient_batch_size=gradient_batch_size):
                    best = shape
    return best


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_embedded_server(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "agl"),
        "serve-model",
        "--port",
        str(port),
        "--served-model-name",
        args.model,
        "--max-tokens",
        str(args.optimizer_max_tokens),
        "--max-batch-size",
        "16",
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    log_path = Path(args.out_dir) / "serve-model.log"
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    args.url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"agl serve-model exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return process
        except OSError:
            time.sleep(2)
    process.terminate()
    raise SystemExit("agl serve-model did not answer /health within 10 minutes")


def run_system(system: str, seed: int, args: argparse.Namespace) -> Dict[str, Any]:
    common = ["--url", args.url, "--model", args.model, "--seed", str(seed)]
    common += ["--train", str(args.train), "--val", str(args.val), "--rooms", str(args.rooms)]
    common += [
        "--optimizer-url",
        args.optimizer_url or args.url,
        "--optimizer-model",
        args.optimizer_model or args.model,
    ]
    if system == "ours":
        command = [sys.executable, str(HERE / "apo_bench.py"), "--worker", *common]
        command += ["--max-rollouts", str(args.max_rollouts), "--gradient-batch-size", str(args.gradient_batch_size)]
        command += ["--max-optimizer-calls", str(args.max_optimizer_calls), "--ours-proposal", args.ours_proposal]
        command += ["--optimizer-max-tokens", str(args.optimizer_max_tokens), "--concurrency", str(args.concurrency)]
        command += ["--run-dir", str(Path(args.out_dir) / f"ours-seed{seed}")]
    elif system == "peer":
        shape = peer_shape(args.max_rollouts, args.val, args.gradient_batch_size, args.max_optimizer_calls)
        command = [args.peer_python, str(HERE / "peer_apo_bench.py"), *common]
        command += [f"--{k.replace('_', '-')}={v}" for k, v in shape.items()]
        command += ["--gradient-batch-size", str(args.gradient_batch_size)]
        command += ["--optimizer-max-tokens", str(args.optimizer_max_tokens)]
    else:
        command = [args.gepa_python, str(HERE / "gepa_apo_bench.py"), *common]
        command += ["--max-rollouts", str(args.max_rollouts), "--optimizer-max-tokens", str(args.optimizer_max_tokens)]
        command += ["--max-optimizer-calls", str(args.max_optimizer_calls)]
        command += ["--concurrency", str(args.concurrency), "--run-dir", str(Path(args.out_dir) / f"gepa-seed{seed}")]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "CREWAI_DISABLE_TELEMETRY": "true"}
    log_path = Path(args.out_dir) / f"{system}-seed{seed}.log"
    print(f"--- {system}, seed {seed} (log: {log_path})", flush=True)
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        try:
            # The peer's AgentOps writes agentops.log into its working folder: the run's folder.
            cwd = args.out_dir if system == "peer" else None
            completed = subprocess.run(
                command, stdout=subprocess.PIPE, stderr=log, env=env, timeout=args.timeout, cwd=cwd
            )
        except subprocess.TimeoutExpired:
            return {"system": system, "seed": seed, "error": f"timed out after {args.timeout} s"}
        except OSError as exc:  # the interpreter is missing, say
            return {"system": system, "seed": seed, "error": f"could not start {command[0]}: {exc}"}
    out = completed.stdout.decode(errors="replace")
    log_path.with_suffix(".out").write_text(out)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        return {"system": system, "seed": seed, "error": f"exit {completed.returncode}; see {log_path}"}
    result: Dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    result["wall_minutes"] = (time.perf_counter() - started) / 60
    print(
        f"    best val {result['best_val']:.3f}, {result['rollouts']} rollouts, {result['optimizer_calls']} optimizer "
        f"calls, {result['optimizer_tokens']} tokens, {result['minutes']:.1f} min",
        flush=True,
    )
    return result


def seed_prompt_score(seed: int, args: argparse.Namespace) -> float:
    """The seed prompts' mean reward on a seed's validation set: every system's starting point."""
    from _apo_task import AGENT_MAX_TOKENS, SEED_PROMPTS, datasets, messages_for, score_reply
    from openai import OpenAI

    _, val = datasets(seed, args.train, args.val, args.rooms)
    client = OpenAI(base_url=args.url, api_key="unused", max_retries=1, timeout=args.timeout)

    def play(task: Dict[str, Any]) -> float:
        reply = client.chat.completions.create(
            model=args.model,
            messages=messages_for(SEED_PROMPTS, task),  # type: ignore[arg-type]
            temperature=0.0,
            max_tokens=AGENT_MAX_TOKENS,
        )
        return score_reply(task, reply.choices[0].message.content)

    with ThreadPoolExecutor(args.concurrency) as pool:
        return statistics.mean(pool.map(play, val))


def table(results: List[Dict[str, Any]], before: Dict[int, float]) -> str:
    """One row per system and seed, then each system's medians."""
    rows = [
        "| system | seed | best val (before → after) | rollouts | optimizer calls | optimizer tokens | minutes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for system in SYSTEMS:
        runs = sorted((r for r in results if r.get("key") == system), key=lambda r: r["seed"])
        done = [r for r in runs if "error" not in r]
        for r in runs:
            start = f"{before[r['seed']]:.3f}" if r["seed"] in before else "-"
            if "error" in r:
                rows.append(f"| {system} | {r['seed']} | {start} → ({r['error']}) | - | - | - | - |")
                continue
            cells = [r["system"], str(r["seed"]), f"{start} → {r['best_val']:.3f}", str(r["rollouts"])]
            cells += [str(r["optimizer_calls"]), str(r.get("optimizer_tokens", "-")), f"{r['minutes']:.1f}"]
            rows.append("| " + " | ".join(cells) + " |")
        if len(done) > 1:
            starts = [before[r["seed"]] for r in done if r["seed"] in before]
            median_start = f"{statistics.median(starts):.3f}" if starts else "-"
            tokens = [r["optimizer_tokens"] for r in done if "optimizer_tokens" in r]
            cells = [
                f"**{system}, median of {len(done)}**",
                "",
                f"{median_start} → {statistics.median(r['best_val'] for r in done):.3f}",
                f"{statistics.median(r['rollouts'] for r in done):g}",
                f"{statistics.median(r['optimizer_calls'] for r in done):g}",
                f"{statistics.median(tokens):g}" if tokens else "-",
                f"{statistics.median(r['minutes'] for r in done):.1f}",
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--url", default=None, help="an OpenAI API root serving --model (default: start agl serve-model)"
    )
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument(
        "--optimizer-url", default=None, help="an OpenAI API root for every system's optimizer (default: --url)"
    )
    parser.add_argument("--optimizer-model", default=None, help="the optimizer's model (default: --model)")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-rollouts", type=int, default=54, help="the rollout budget of every system")
    parser.add_argument("--max-optimizer-calls", type=int, default=6, help="the optimizer call budget of every system")
    parser.add_argument("--train", type=int, default=8)
    parser.add_argument("--val", type=int, default=8)
    parser.add_argument("--rooms", type=int, default=4, help="rooms in each request's listing")
    parser.add_argument("--gradient-batch-size", type=int, default=2)
    parser.add_argument(
        "--ours-proposal",
        choices=("one_call", "append", "critique_then_edit"),
        default="one_call",
        help="how our APO turns a critique into candidates (APO's proposal option)",
    )
    parser.add_argument(
        "--optimizer-max-tokens", type=int, default=250, help="the longest critique or edit (the 0.5B rambles)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="rollouts in flight at once")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the embedded server")
    parser.add_argument(
        "--parallel", action="store_true", help="run every system and seed at once against the one endpoint"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one system's run may take")
    parser.add_argument("--peer-python", default=None, help="the interpreter of the agentlightning==0.3.0 venv")
    parser.add_argument("--gepa-python", default=None, help="the interpreter of GEPA's venv")
    parser.add_argument("--out-dir", default=None, help="logs and run folders (default: bench/results/apo-<time>)")
    parser.add_argument("--json", nargs="?", const="", default=None, metavar="PATH")
    # One system's run (used by the driver itself for ours).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print("RESULT " + json.dumps(run_ours(args), default=str), flush=True)
        return
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    args.out_dir = str(Path(args.out_dir or HERE / "results" / f"apo-{stamp}").resolve())
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    for system, option in (("peer", "peer_python"), ("gepa", "gepa_python")):
        if system in args.systems and not getattr(args, option):
            parser.error(f"--{option.replace('_', '-')} is needed to run {system}")
        if getattr(args, option):  # the peer runs in another working folder
            setattr(args, option, os.path.abspath(getattr(args, option)))
    server = None
    if args.url is None:
        print("starting agl serve-model (the embedded default model) ...", flush=True)
        server = start_embedded_server(args)
    print(
        f"agent: {args.url} {args.model}; optimizer: {args.optimizer_url or args.url} "
        f"{args.optimizer_model or args.model}; budget {args.max_rollouts} rollouts, {args.max_optimizer_calls} "
        f"optimizer calls; seeds {args.seeds}",
        flush=True,
    )
    results: List[Dict[str, Any]] = []
    before: Dict[int, float] = {}
    runs = [(system, seed) for seed in args.seeds for system in args.systems]
    json_path = Path(args.json or HERE / "results" / f"apo_bench-{stamp}.json") if args.json is not None else None

    def record(system: str, result: Dict[str, Any]) -> None:
        result["key"] = system
        results.append(result)
        if json_path is None:
            return
        # Written after every run, so a long benchmark stopped half way keeps what it measured.
        json_path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "benchmark": "apo",
            "time": stamp,
            "endpoint": args.url if server is None else "agl serve-model (embedded default model)",
            "model": args.model,
            "optimizer": {
                "url": args.optimizer_url or "the agent's endpoint",
                "model": args.optimizer_model or args.model,
            },
            "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "seed", "run_dir", "json")},
            "peer_shape": peer_shape(args.max_rollouts, args.val, args.gradient_batch_size, args.max_optimizer_calls),
            "seed_prompt_val": before,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "results": results,
        }
        json_path.write_text(json.dumps(document, indent=2, default=str))

    try:
        for seed in args.seeds:
            before[seed] = seed_prompt_score(seed, args)
            print(f"seed {seed}: the seed prompts score {before[seed]:.3f} on the validation set", flush=True)
        if args.parallel:
            # Every system at once against the one server (it decodes their requests in shared batches):
            # scores, rollouts and calls are unchanged; minutes then measure the shared run, not one system.
            with ThreadPoolExecutor(len(runs)) as pool:
                futures = {pool.submit(run_system, system, seed, args): system for system, seed in runs}
                for future in as_completed(futures):
                    record(futures[future], future.result())
        else:
            for system, seed in runs:
                record(system, run_system(system, seed, args))
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:  # busy decoding: it does not stop at once
                server.kill()
                server.wait()
    print("\n" + table(results, before))
    if json_path is not None:
        print(f"results: {json_path}")


if __name__ == "__main__":
    main()
