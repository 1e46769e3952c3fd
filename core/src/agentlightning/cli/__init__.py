"""The ``agl`` command line: every command (the core's own too) is registered through
``agl_register_commands``. A handler raises :class:`CLIError` for an expected failure, printed as
one line (a traceback only with ``--debug``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

__all__ = ["CLIError", "build_parser", "main"]

PROG = "agl"

logger = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]


class CLIError(Exception):
    """An expected failure: printed as ``agl: error: <message>`` and turned into ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _version_text() -> str:
    from agentlightning import __version__

    return f"agentlightning {__version__} (Python {sys.version.split()[0]})"


def _print_help(parser: argparse.ArgumentParser) -> Handler:
    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def build_parser() -> argparse.ArgumentParser:
    """The full ``agl`` parser, with every registered command added (in name order)."""
    from agentlightning.plugins import registered

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
    commands = registered("commands")
    for name in sorted(commands):
        try:
            commands[name](subparsers)  # a LazyObject imports its module first
        except Exception as exc:  # noqa: BLE001 -- one broken command must not break `agl`
            logger.warning("agl: leaving out the command %r: %s: %s", name, type(exc).__name__, exc)
            continue
        if name not in subparsers.choices:
            logger.warning("agl: the command registered as %r added no sub-parser of that name", name)
    return parser


def _unknown_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """A clear message when the first word names no installed command (argparse would only list choices)."""
    from agentlightning.plugins import install_hint

    first = next((word for word in argv if not word.startswith("-")), None)
    subparsers = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if first is None or subparsers is None or first in subparsers.choices:
        return None
    installed = ", ".join(sorted(subparsers.choices))
    return f"unknown command {first!r}; installed commands: {installed}. {install_hint('commands', first)}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``agl`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    unknown = _unknown_command(parser, argv)
    if unknown is not None:
        print(f"{PROG}: error: {unknown}", file=sys.stderr)
        return 2
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
