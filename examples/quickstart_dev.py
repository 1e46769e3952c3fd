"""Dry-run a plain-Python agent with ``Trainer.dev`` on a SQLite store and print every rollout.

python examples/quickstart_dev.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

import agentlightning as agl

TASKS = [
    {"question": "2 + 3", "answer": 5},
    {"question": "7 * 6", "answer": 42},
    {"question": "10 - 4", "answer": 6},
    {"question": "9 / 3", "answer": 3},
    {"question": "2 ** 5", "answer": 32},
    {"question": "17 % 5", "answer": 2},
]


@agl.rollout
def calculator_agent(task: dict, prompt_template: agl.PromptTemplate) -> float:
    """A tiny agent: 'reasons' with the prompt, computes, and is rewarded for the right answer."""
    prompt = prompt_template.format(question=task["question"])
    agl.emit_message(prompt)
    with agl.operation(name="evaluate") as op:
        op.set_input(expression=task["question"])
        result = eval(task["question"], {"__builtins__": {}})  # the tasks above are trusted literals
        op.set_output(result)
    return 1.0 if result == task["answer"] else 0.0


def main() -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="agl-quickstart-"))
    baseline = agl.Baseline(max_queue_length=4)
    trainer = agl.Trainer(
        algorithm=baseline,
        n_runners=2,
        run_dir=run_dir,
        initial_resources={"prompt_template": agl.PromptTemplate(template="Compute: {question}", engine="f-string")},
    )
    trainer.dev(calculator_agent, TASKS[:4], val_dataset=TASKS[4:])

    table = Table(title=f"Trainer.dev on {run_dir / 'store.db'}")
    for column in ("rollout", "mode", "input", "status", "reward", "spans"):
        table.add_column(column)
    for report in baseline.reports:
        r = report.rollout
        table.add_row(
            r.rollout_id, str(r.mode), r.input["question"], r.status, str(report.final_reward), str(len(report.spans))
        )
    Console().print(table)


if __name__ == "__main__":
    main()
