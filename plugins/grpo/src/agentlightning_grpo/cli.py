"""``agl quickstart``: train a calculator agent with GRPO on the embedded default model, before/after."""

from __future__ import annotations

import argparse

from agentlightning.cli import CLIError

__all__ = ["add_parser", "run_quickstart"]

INSTALL_HINT = (
    "the quickstart needs torch and the default model: from a clone of the repository run "
    "'pip install nox && nox -s quickstart', or pip install torch==2.13.0 (CPU) then "
    "pip install ./core './plugins/embedded[default-model]' ./plugins/grpo"
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="Train a tool-using calculator agent with GRPO and print its accuracy before and after.",
        description=(
            "Measures a calculator agent's held-out accuracy on the embedded default model "
            "(Qwen2.5-Coder-0.5B-Instruct), trains it with GRPO for a few steps on this machine, measures again, "
            "and prints both. Other options go to the run: --steps N, --tasks-per-step N, --group-size N, "
            "--val-size N, --learning-rate X, --temperature X, --max-tokens N, --dtype D, --run-dir DIR, --resume, "
            "--model PATH, --seed N, --serving NAME (embedded or vllm) "
            "(details: agl quickstart --options)."
        ),
    )
    parser.add_argument("--options", action="store_true", help="Describe the run's options and exit.")
    parser.set_defaults(handler=run_quickstart, forward_extra_args=True)


def run_quickstart(args: argparse.Namespace) -> int:
    try:
        from agentlightning_grpo.quickstart import main
    except ImportError as exc:
        raise CLIError(f"{INSTALL_HINT} ({exc})") from exc
    exit_code: int = main(["--help"] if args.options else list(args.extra_args))
    return exit_code
