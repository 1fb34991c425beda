"""The one output-versus-input guard of every export and every prediction.

An output may never be the input slide, the input label store, a path inside either of
them, or a folder that holds either of them (replacing such a folder would delete the
input). Paths are compared after resolving symbolic links (:func:`os.path.realpath`), so a
link to the slide is the slide.
"""

from __future__ import annotations

import os
from pathlib import Path

from napari_sgnet.errors import StoreError

__all__ = ["check_output_path"]


def _inside(child: str, parent: str) -> bool:
    return child != parent and child.startswith(parent.rstrip(os.sep) + os.sep)


def check_output_path(
    out: str | os.PathLike[str],
    *,
    slide: str | os.PathLike[str] | None = None,
    store: str | os.PathLike[str] | None = None,
    what: str = "output",
) -> None:
    """Refuse an output path that is, is inside, or contains an input.

    Parameters
    ----------
    out : str or Path
        The file or folder about to be written (or replaced).
    slide, store : str or Path, optional
        The input slide file (or OME-Zarr folder) and the input label store.
    what : str
        What ``out`` is, for the message (``"output"``, ``"label store"``).

    Raises
    ------
    StoreError
        Naming the output and the input it would overwrite.
    """
    target = os.path.realpath(out)
    for inp, label in ((slide, "input slide"), (store, "input label store")):
        if inp is None:
            continue
        source = os.path.realpath(inp)
        if target == source:
            problem = f"the {what} would replace the {label} {inp}"
        elif _inside(target, source):
            problem = f"the {what} would be written inside the {label} {inp}"
        elif _inside(source, target):
            problem = f"the {what} would replace a folder that holds the {label} {inp}"
        else:
            continue
        raise StoreError(Path(out), f"{problem}; choose another output path")
