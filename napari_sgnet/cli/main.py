"""``napari-sgnet`` console entry point: one subcommand per module in this package.

Each subcommand module defines ``register(subparsers)`` which adds its parser and
sets ``func`` to a callable ``(args) -> int`` returning the exit code. The CLI is
thin: it parses, calls one core function, and shows progress.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from napari_sgnet.cli._checks import check_args
from napari_sgnet.errors import report_failure

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CANCELLED",
    "EXIT_ERROR",
    "EXIT_OK",
    "build_parser",
    "exit_code_for",
    "main",
]

log = logging.getLogger(__name__)

#: Exit codes: success; an internal error or system error (traceback logged); bad input (the
#: message says what to fix; also argparse's code for a bad command line); Ctrl-C.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130

#: Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS: tuple[str, ...] = (
    "demo",
    "info",
    "synth",
    "train",
    "evaluate",
    "export",
    "import",
    "export_model",
    "predict",
    "check",
    "finetune",
    "calibrate_ood",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="napari-sgnet",
        description="Ultra-high-resolution slide segmentation with SGNet.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"napari_sgnet.cli.{name}_cmd")
        module.register(sub)
    for command in sub.choices.values():  # one spelling everywhere: --quiet = --no-progress
        if "--quiet" not in command._option_string_actions:
            command.add_argument("--quiet", "-q", "--no-progress", dest="quiet",
                                 action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "quiet", False) or getattr(args, "progress", True) is False or getattr(
        args, "no_progress", False
    ):
        os.environ["TQDM_DISABLE"] = "1"  # the bars drawn by code that takes no option
    try:
        check_args(args, _subparser(parser, args.command))
        return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # user errors: a message; anything else: traceback logged too
        return exit_code_for(exc, f"napari-sgnet {args.command}")


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found = action.choices.get(command)
            return found if isinstance(found, argparse.ArgumentParser) else None
    return None


def exit_code_for(exc: BaseException, context: str | None = None) -> int:
    """Show ``exc`` on stderr as ``error: ...`` and return the exit code it calls for.

    A :class:`~napari_sgnet.errors.UserInputError` is shown as its message alone
    (:data:`EXIT_BAD_INPUT`); anything else is logged with its traceback first and, being a
    system error or a bug rather than bad input, returns :data:`EXIT_ERROR`.
    """
    failure = report_failure(exc, log, context)
    print(f"error: {failure.message}", file=sys.stderr)
    return EXIT_BAD_INPUT if failure.is_user_error else EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
