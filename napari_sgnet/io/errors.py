"""Typed errors for slide and store input/output.

Every error names the file and the problem, so that the CLI and napari can show
it to a person as it is, without a traceback from deep inside a codec.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CorruptSlideError",
    "SlideError",
    "StoreError",
    "UnsupportedSlideError",
]


class SlideError(Exception):
    """Base class: a slide could not be opened or read.

    Parameters
    ----------
    path : str or Path
        The file or folder concerned.
    problem : str
        What is wrong, in words a user understands.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UnsupportedSlideError(SlideError):
    """The file is readable but of a kind napari-sgnet does not support."""


class CorruptSlideError(SlideError):
    """The file claims a supported format but is empty, truncated or corrupt."""


class StoreError(SlideError):
    """A label store or export target is invalid, foreign, or read-only."""
