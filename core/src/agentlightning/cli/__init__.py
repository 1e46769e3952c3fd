"""The ``agl`` command line.

Each command group lives in its own module exposing ``add_parser(subparsers)``, which adds an
``argparse`` sub-parser and sets ``handler`` (``(argparse.Namespace) -> int``) as its default.
Adding ``agl store serve`` means adding one sub-parser in :mod:`agentlightning.cli.store`; a new
group means one module and one line in :data:`COMMAND_MODULES`.

A handler signals an expected failure (bad input, unknown URI, missing file) by raising
:class:`CLIError`: ``main`` prints it as one line on stderr and returns its exit code, without a
traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = ["COMMAND_MODULES", "CLIError", "build_parser", "main"]

PROG = "agl"

COMMAND_MODULES: tuple[str, ...] = (
    "agentlightning.cli.plugins",
    "agentlightning.cli.proxy",
    "agentlightning.cli.store",
)
"""Modules that each add one top-level command group."""

Handler = Callable[[argparse.Namespace], int]


class CLIError(Exception):
    """An expected failure: printed as ``agl: error: <message>`` and turned into ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _CommandModule(Protocol):
    def add_parser(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


def _version_text() -> str:
    from agentlightning import __version__

    return f"agentlightning {__version__} (Python {sys.version.split()[0]})"


def _print_help(parser: argparse.ArgumentParser) -> Handler:
    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def build_parser() -> argparse.ArgumentParser:
    """The full ``agl`` parser, with every command group added."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Agent Lightning: train any AI agent from its traces.",
    )
    parser.add_argument("--version", action="version", version=_version_text(), help="Print the version and exit.")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="Show full tracebacks on errors and log at DEBUG level.",
    )
    parser.set_defaults(handler=_print_help(parser))
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        module: _CommandModule = importlib.import_module(module_name)
        module.add_parser(subparsers)
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``agl`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        # A command that runs another program's options (`agl quickstart --steps 8`) sets
        # `forward_extra_args`; for every other command unknown options stay usage errors.
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "forward_extra_args", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.extra_args = extra
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except CLIError as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- an unexpected failure: one line, the traceback on --debug
        if args.debug:
            raise
        print(
            f"{PROG}: error: {type(exc).__name__}: {_one_line(str(exc))} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
