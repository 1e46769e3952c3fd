"""Play werewolf games with ``Trainer.dev``: one trainable player (``Player1``) against four fixed ones.

    python examples/werewolf/werewolf.py                     # 8 games on the fake server, scripted moves
    python examples/werewolf/werewolf.py --model embedded    # 3 real games on the embedded default model

The game and its rules are in ``game.py``. The players are plain AgentScope agents; the runner turns the
AgentScope adapter on, which names every span after its player, so the trainee's calls are the training
data (``agent_match="^Player1$"``) and the other players' calls are left out. Each game's reward is its
outcome for the trainee's side. The games run concurrently in one runner, each in its own rollout.

``nox -s example_werewolf`` runs the real games (the embedded Qwen2.5 0.5B model on the CPU plays every
seat, the opponents with their fixed prompts) and prints the trainee's win rate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import List, Optional

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
    parser.add_argument("--games", type=int, default=None, help="default: 8 on the fake server, 3 on the model")
    parser.add_argument("--concurrency", type=int, default=4, help="games played at once")
    parser.add_argument("--max-tokens", type=int, default=32, help="per move (the embedded model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    games = args.games or (8 if args.model == "fake" else 3)
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
            console.print(f"{game}: the {result.winner} won on day {result.days} ({TRAINEE} was the {role})")

        agent = WerewolfAgent(on_game_over=game_over)
        started = time.perf_counter()
        trainer.dev(agent, make_tasks(games, args.seed))
        elapsed = time.perf_counter() - started

    table = Table(title=f"{games} werewolf games, {TRAINEE} trained ({run_dir / 'store.db'})")
    for column in ("game", f"{TRAINEE} is", "winner", "reward", "days", "invalid moves", "LLM calls", f"of {TRAINEE}"):
        table.add_column(column)
    wins = 0.0
    for report in sorted(baseline.reports, key=lambda r: int(r.rollout.input["seed"])):
        game = report.rollout.input["game"]
        result = agent.results[game]
        trainee_calls = report.adapted or []
        wins += report.final_reward or 0.0
        table.add_row(
            game,
            result.roles[TRAINEE],
            result.winner,
            str(report.final_reward),
            str(result.days),
            str(sum(result.invalid_moves.values())),
            str(len(find_llm_calls(report.spans))),
            str(len(trainee_calls)),
        )
    console.print(table)
    finished = [report for report in baseline.reports if report.rollout.status == "succeeded"]
    village = sum(1 for report in finished if agent.results[report.rollout.input["game"]].winner == "village")
    console.print(
        f"{TRAINEE}'s win rate: {wins / max(1, len(baseline.reports)):.0%} over {len(baseline.reports)} games "
        f"({len(finished)} finished; the village won {village}, the werewolf {len(finished) - village}); "
        f"{elapsed:.1f} s"
    )
    sides = sorted({side_of(agent.results[r.rollout.input["game"]].roles[TRAINEE]) for r in finished})
    console.print(f"{TRAINEE} played for: {', '.join(sides)}; only its calls are training data ({TRAINEE_MATCH!r}).")


if __name__ == "__main__":
    main()
