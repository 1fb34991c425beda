"""Options every subcommand spells the same way: ``--json [PATH]``, ``--quiet``/``--no-progress``.

- ``--json`` or ``--json -`` prints the command's result as JSON on stdout instead of its
  text; ``--json PATH`` (a ``.json`` file) writes it there and keeps the text.
- ``--quiet`` (``-q``) and ``--no-progress`` are one option: no progress bars.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from napari_sgnet.errors import OptionError

__all__ = ["add_json_option", "emit_json", "json_on_stdout", "json_problem"]


def add_json_option(parser: argparse.ArgumentParser | Any, what: str) -> None:
    """Add ``--json [PATH]`` (what: ``"the summaries"``)."""
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help=f"{what} as JSON: on stdout instead of the text (--json, --json -), or also "
        "written to PATH (a .json file)",
    )


def json_on_stdout(args: argparse.Namespace) -> bool:
    """Whether ``--json`` asked for JSON on stdout (instead of the text)."""
    return getattr(args, "json", None) == "-"


def json_problem(value: Any) -> str | None:
    """Why a ``--json`` value cannot be the output file, or None."""
    if value is None or value == "-":
        return None
    path = Path(str(value))
    if path.suffix.lower() != ".json":
        return (
            f"--json {value}: the output file must end in .json (to print JSON on stdout, "
            "write --json - or put --json after the other arguments)"
        )
    if path.is_dir():
        return f"--json {value}: is a folder"
    return None


def emit_json(data: Any, target: str | Path | None) -> None:
    """Print ``data`` as JSON (``target`` ``"-"``) or write it to the file ``target``.

    Raises
    ------
    OptionError
        The file cannot be written.
    """
    if target is None:
        return
    text = json.dumps(data, indent=2)
    if str(target) == "-":
        print(text)
        return
    path = Path(target)
    try:
        path.write_text(text + "\n")
    except OSError as exc:
        raise OptionError(f"--json {path}: cannot write it ({exc.strerror or exc})") from exc
    print(f"JSON written to {path}", file=sys.stderr)
