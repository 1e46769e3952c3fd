"""Prompt, then weights, in one run on one store: APO finds the meeting-room agent's prompts, GRPO then
trains the model's weights starting from them.

``agl.Chain(APO(...), GRPO(...))`` runs the two algorithms in turn with the same Trainer, runners and
store. APO publishes its best prompts as a resources version; the chain hands that version to GRPO
as its initial resources, and GRPO publishes each new policy beside those prompts, so every GRPO
rollout plays the optimized prompts. (tests/plugins/grpo/test_prompt_then_weights.py runs the same
chain on a tiny model.)

    python examples/apo/prompt_then_weights.py                      # embedded model: agent, optimizer, policy
    python examples/apo/prompt_then_weights.py --optimizer-url URL --optimizer-model NAME

Needs ``agentlightning-apo``, ``agentlightning-grpo`` and ``agentlightning-embedded[default-model]``;
on a 2-core CPU the default settings take about an hour.
"""

from __future__ import annotations

import argparse
import warnings
from typing import List, Optional

from room_selector import REQUEST_PROMPT, SYSTEM_PROMPT, RoomSelector
from room_tasks import make_tasks

import agentlightning as agl
from agentlightning_apo import APO
from agentlightning_grpo import GRPO


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=12)
    parser.add_argument("--val", type=int, default=8)
    parser.add_argument("--apo-rollouts", type=int, default=60, help="APO's rollout budget")
    parser.add_argument("--grpo-steps", type=int, default=4)
    parser.add_argument("--optimizer-url", help="APO's optimizer endpoint; default: the embedded model")
    parser.add_argument("--optimizer-model", default="default")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)

    optimizer = {"base_url": args.optimizer_url, "model": args.optimizer_model} if args.optimizer_url else None
    apo = APO(
        optimizer=optimizer,
        rounds=3,
        gradient_batch_size=3,
        max_rollouts=args.apo_rollouts,
        sampling={"temperature": 0.7, "max_tokens": 160},
        serving_options={"max_batch_size": 16},
        seed=args.seed,
    )
    grpo = GRPO(n_steps=args.grpo_steps, tasks_per_step=2, val_every=0, sampling={"max_tokens": 160})
    trainer = agl.Trainer(
        algorithm=agl.Chain(apo, grpo),
        runner=agl.LitAgentRunner(agl.OtelTracer(), concurrency=16),
        run_dir=args.run_dir,
        initial_resources={
            "system_prompt": agl.PromptTemplate(template=SYSTEM_PROMPT, engine="f-string"),
            "request_prompt": agl.PromptTemplate(template=REQUEST_PROMPT, engine="f-string"),
        },
    )
    with trainer:
        trainer.fit(
            RoomSelector(), make_tasks(args.train, args.seed + 1), val_dataset=make_tasks(args.val, args.seed + 2)
        )
    assert apo.best is not None
    print(f"\nAPO: validation score {apo.candidates[0].score} -> {apo.best.score}; GRPO trained from its prompts:")
    for name, text in apo.get_best_prompts().items():
        print(f"--- {name} ---\n{text}")


if __name__ == "__main__":
    main()
