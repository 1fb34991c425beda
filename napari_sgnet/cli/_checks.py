"""Range and finiteness checks of every numeric command-line option, in one table.

:func:`check_args` runs on the parsed options of every subcommand before it starts, so
``--mpp nan``, ``--workers -1`` or ``--batch-size 0`` is refused as ``error: --mpp must be
...`` (exit 2) instead of a traceback later. The checks are the shared validator's
(:mod:`napari_sgnet.validate`); a numeric option missing from the table still has to be
finite.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

from napari_sgnet.cli._output import json_problem
from napari_sgnet.errors import OptionError
from napari_sgnet.validate import MPP_RANGE, check_int, check_number

__all__ = ["OUTPUT_FOLDERS", "RULES", "Rule", "check_args", "check_output_folder"]


@dataclass(frozen=True)
class Rule:
    """Bounds of one option: ``integer`` or a float; ``lo_open`` excludes ``lo``."""

    lo: float | None = None
    hi: float | None = None
    integer: bool = False
    lo_open: bool = False
    unit: str = ""


_MPP = Rule(*MPP_RANGE, unit="µm/px")
_SEED = Rule(0, 2**63 - 1, integer=True)
_COUNT = Rule(1, 10**9, integer=True)

#: Per command, bounds that differ from :data:`RULES` (``train --workers`` counts DataLoader
#: processes, where 0 means "load in the main process").
COMMAND_RULES: dict[str, dict[str, Rule]] = {
    "train": {"workers": Rule(0, 64, integer=True)},
}

#: Option destination -> its bounds.
RULES: dict[str, Rule] = {
    "mpp": _MPP,
    "model_mpp": _MPP,
    "batch_size": Rule(1, 4096, integer=True),
    "workers": Rule(1, 1024, integer=True),
    "threads": Rule(1, 1024, integer=True),
    "size": Rule(1, 10**7, integer=True),
    "height": Rule(1, 10**7, integer=True),
    "patch_size": Rule(1, 4096, integer=True),
    "tile_size": Rule(1, 65536, integer=True),
    "overlap": Rule(0, 4096, integer=True),
    "level": Rule(0, 64, integer=True),
    "sci_width": Rule(1, 4096, integer=True),
    "sci_heads": Rule(1, 64, integer=True),
    "sci_blocks": Rule(0, 32, integer=True),
    "steps": Rule(0, 10**9, integer=True),
    "checkpoint_every": Rule(0, 10**9, integer=True),
    "val_every": Rule(0, 10**9, integer=True),
    "fit_tiles": _COUNT,
    "held_out_tiles": _COUNT,
    "quality": Rule(1, 100, integer=True),
    "seed": _SEED,
    "synthetic_seed": _SEED,
    "synthetic_version": Rule(1, 100, integer=True),
    "version": Rule(1, 100, integer=True),
    "lr": Rule(0, 10, lo_open=True),
    "holdout": Rule(0, 1, lo_open=True),
    "tissue_fraction": Rule(0, 1),
    "noise": Rule(0, 255),
    "blur": Rule(0, 1000),
    "boundary_tolerance": Rule(0, 10000),
    "region_size": Rule(0, 1e9, lo_open=True, unit="µm"),
    "min_area": Rule(0, 1e18),
    "simplify": Rule(0, 1e9),
}


#: Subcommand -> the option naming the folder it creates (checked before anything runs).
OUTPUT_FOLDERS: dict[str, str] = {
    "synth": "out_dir",
    "train": "out",
    "finetune": "out",
    "predict": "out",
    "demo": "out",
}


def check_output_folder(path: str | os.PathLike[str], name: str) -> None:
    """Refuse an output folder that cannot be created or written, before anything is.

    Parameters
    ----------
    path : path-like
        The folder (it may not exist yet).
    name : str
        The option, for the message (``"--out"``).

    Raises
    ------
    OptionError
        The path is a file, sits below a file, or its nearest existing folder is not
        writable.
    """
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise OptionError(f"{name} {target}: exists and is not a folder")
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OptionError(
            f"{name} {target}: cannot create the folder, {probe} is a file, not a folder"
        )
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise OptionError(f"{name} {target}: cannot create or write it ({probe} is not writable)")


def _flag(parser: argparse.ArgumentParser | None, dest: str) -> str:
    """The option's own spelling (``--batch-size``) for the message."""
    if parser is not None:
        for action in parser._actions:
            if action.dest == dest and action.option_strings:
                return max(action.option_strings, key=len)
    return "--" + dest.replace("_", "-")


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> None:
    """Check every numeric option in ``args`` against :data:`RULES` (others: finite).

    Raises
    ------
    OptionError
        Naming the option, its bounds and the value given.
    """
    problem = json_problem(getattr(args, "json", None))
    if problem is not None:
        raise OptionError(problem)
    folder_dest = OUTPUT_FOLDERS.get(str(getattr(args, "command", "")))
    folder = getattr(args, folder_dest, None) if folder_dest else None
    if folder_dest and folder is not None:
        check_output_folder(folder, _flag(parser, folder_dest) if folder_dest != "out_dir"
                            else "OUT_DIR")
    for dest, value in sorted(vars(args).items()):
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        rule = COMMAND_RULES.get(str(getattr(args, "command", "")), {}).get(dest, RULES.get(dest))
        name = _flag(parser, dest)
        if rule is None:
            if isinstance(value, float) and not math.isfinite(value):
                check_number(value, name)  # raises: must be finite
            continue
        if rule.integer:
            check_int(value, name, lo=None if rule.lo is None else int(rule.lo),
                      hi=None if rule.hi is None else int(rule.hi))
        else:
            check_number(value, name, lo=rule.lo, hi=rule.hi, lo_inclusive=not rule.lo_open,
                         unit=rule.unit)
