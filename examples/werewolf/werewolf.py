"""Play werewolf games with ``Trainer.dev``: one trainable player (``Player1``) against four fixed ones.

    python examples/werewolf/werewolf.py                     # 8 games on the fake server, scripted moves
    python examples/werewolf/werewolf.py --model embedded    # 6 real games on the embedded default model

The game and its rules are in ``game.py``. The players are plain AgentScope agents; the runner turns the
AgentScope adapter on, which names every span after its player, so the trainee's calls are the training
data (``agent_match="^Player1$"``) and the other players' calls are left out. Each game's reward is its
outcome for the trainee's side. The games run concurrently in one runner, each in its own rollout.

``nox -s example_werewolf`` runs the real games (the embedded Qwen2.5 0.5B model on the CPU plays every
seat, the opponents with their fixed prompts) and prints the trainee's win rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, List, Optional

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))  # game.py, next to this file

from game import TRAINEE, TRAINEE_MATCH, GameResult, WerewolfAgent, make_tasks, scripted_moves, side_of  # noqa: E402

import agentlightning as agl  # noqa: E402
from agentlightning.adapter.llm_calls import find_llm_calls  # noqa: E402
from agentlightning.adapter.triplet import TracerTraceToTriplet  # noqa: E402


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["fake", "embedded"], default="fake")
    parser.add_argument("--games", type=int, default=None, help="default: 8 on the fake server, 6 on the model")
    parser.add_argument("--concurrency", type=int, default=4, help="games played at once")
    parser.add_argument("--max-tokens", type=int, default=20, help="per answer (the embedded model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    games = args.games or (8 if args.model == "fake" else 6)
    console = Console()

    with ExitStack() as stack:
        if args.model == "fake":
            from agentlightning_testing.fake_openai import FakeOpenAIServer

            server = stack.enter_context(FakeOpenAIServer(policy=scripted_moves))
            llm = agl.LLM(endpoint=server.base_url, model="fake-model")
        else:
            from agentlightning_embedded import ModelServer, ensure_default_model

            # Deprecation notices of the model libraries are not the games' progress.
            warnings.filterwarnings("ignore", category=FutureWarning)
            console.print("starting the embedded default model ...")
            model = stack.enter_context(
                ModelServer.from_pretrained(str(ensure_default_model()), port=0, served_model_name="default")
            )
            sampling = {"temperature": 0.7, "max_tokens": args.max_tokens}
            llm = agl.LLM(endpoint=model.base_url, model="default", sampling_parameters=sampling)
        # The trainee's model is the one an algorithm would train; the opponents' stays as it is.
        resources = {"llm": llm, "opponents": llm.model_copy()}
        run_dir = Path(tempfile.mkdtemp(prefix="agl-werewolf-"))
        baseline = agl.Baseline(max_queue_length=games)
        # The trainee's triplets: its calls only, each with the game's outcome. Without the LLM proxy (as
        # here) they have no token ids; under Trainer.fit the proxy records them.
        adapter = TracerTraceToTriplet(agent_match=TRAINEE_MATCH, reward_match="final", require_token_ids=False)
        trainer = agl.Trainer(
            algorithm=baseline,
            adapter=adapter,
            n_runners=1,
            runner=agl.LitAgentRunner(agl.OtelTracer(), concurrency=args.concurrency),
            run_dir=run_dir,
            initial_resources=resources,
        )

        def game_over(game: str, result: GameResult) -> None:
            role = result.roles[TRAINEE]
            console.print(
                f"{game}: the {result.winner} won on day {result.days} ({TRAINEE} was the {role}; "
                f"{sum(result.calls.values())} calls, {result.seconds:.0f} s)"
            )

        agent = WerewolfAgent(on_game_over=game_over)
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer.dev(agent, make_tasks(games, args.seed))
        elapsed = time.perf_counter() - started

    reports = sorted(baseline.reports, key=lambda r: int(r.rollout.input["seed"]))
    table = Table(title=f"{games} werewolf games, {TRAINEE} trained ({run_dir / 'store.db'})")
    for column in ("game", f"{TRAINEE} is", "winner", "reward", "days", "default moves", "LLM calls", "triplets", "s"):
        table.add_column(column)
    for report in reports:
        result = agent.results.get(report.rollout.input["game"])
        if result is None:  # the rollout failed: its error is in the store
            table.add_row(report.rollout.input["game"], report.rollout.input["trainee_role"], report.rollout.status)
            continue
        table.add_row(
            report.rollout.input["game"],
            result.roles[TRAINEE],
            result.winner,
            str(report.final_reward),
            str(result.days),
            f"{sum(result.invalid_moves.values())}/{sum(result.moves.values())}",
            str(len(find_llm_calls(report.spans))),
            str(len(report.adapted or [])),
            f"{result.seconds:.0f}",
        )
    console.print(table)
    summary = summarize(reports, agent.results, elapsed, time.process_time() - cpu_started)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(console, summary)


def summarize(reports: List[Any], results: Dict[str, GameResult], elapsed: float, cpu: float) -> Dict[str, Any]:
    """The run's figures (also written to ``<run dir>/summary.json``)."""
    finished = [r for r in reports if r.rollout.status == "succeeded" and r.rollout.input["game"] in results]
    played = [results[r.rollout.input["game"]] for r in finished]
    n = max(1, len(finished))
    by_side = {
        side: [
            r.final_reward or 0.0 for r in finished if side_of(results[r.rollout.input["game"]].roles[TRAINEE]) == side
        ]
        for side in ("village", "werewolf")
    }
    trainee_calls = sum(result.calls[TRAINEE] for result in played)
    all_calls = sum(len(find_llm_calls(r.spans)) for r in finished)
    return {
        "games": len(reports),
        "finished": len(finished),
        "trainee_win_rate": sum(r.final_reward or 0.0 for r in finished) / n,
        "trainee_wins_by_side": {side: [int(sum(rewards)), len(rewards)] for side, rewards in by_side.items()},
        "village_won": sum(1 for result in played if result.winner == "village"),
        "mean_days": sum(result.days for result in played) / n,
        "llm_calls_per_game": all_calls / n,
        "trainee_calls_per_game": trainee_calls / n,
        "trainee_triplets": sum(len(r.adapted or []) for r in finished),
        "other_calls_left_out": all_calls - trainee_calls,
        "default_moves": [
            sum(sum(result.invalid_moves.values()) for result in played),
            sum(sum(result.moves.values()) for result in played),
        ],
        "mean_game_seconds": sum(result.seconds for result in played) / n,
        "wall_seconds_per_game": elapsed / max(1, len(reports)),
        "wall_seconds": elapsed,
        "cpu_seconds": cpu,
    }


def print_summary(console: Console, s: Dict[str, Any]) -> None:
    village, werewolf = s["trainee_wins_by_side"]["village"], s["trainee_wins_by_side"]["werewolf"]
    default, moves = s["default_moves"]
    console.print(
        f"{TRAINEE}'s win rate: {s['trainee_win_rate']:.0%} over {s['games']} games ({s['finished']} finished; "
        f"as the village {village[0]}/{village[1]}, as the werewolf {werewolf[0]}/{werewolf[1]}; "
        f"the village won {s['village_won']})"
    )
    console.print(
        f"per game: {s['mean_days']:.1f} days, {s['llm_calls_per_game']:.1f} LLM calls "
        f"({s['trainee_calls_per_game']:.1f} of {TRAINEE}), {s['mean_game_seconds']:.0f} s "
        f"({s['wall_seconds_per_game']:.0f} s of wall clock per game, games overlapping); default moves {default} of {moves}"
    )
    console.print(
        f"training data: {s['trainee_triplets']} triplets, all of {TRAINEE} ({TRAINEE_MATCH!r}); "
        f"{s['other_calls_left_out']} calls of the other players left out"
    )
    console.print(f"{s['wall_seconds']:.1f} s wall, {s['cpu_seconds'] / 60:.1f} CPU-minutes")


if __name__ == "__main__":
    main()
