"""The one error hierarchy of napari-sgnet.

- :class:`SGNetError` is the root of every error the package raises on purpose.
- :class:`UserInputError` is the branch for problems a person can fix (a bad file, a wrong
  option, a missing device): the CLI and the dock show these as plain messages.
- Anything else that reaches the CLI or the dock is a bug: it is logged with its traceback.

Slide and store errors name the file and the problem, so that they can be shown to a person
as they are, without a traceback from deep inside a codec.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CorruptSlideError",
    "DeviceError",
    "SGNetError",
    "SlideError",
    "StoreError",
    "UnsupportedSlideError",
    "UserInputError",
]


class SGNetError(Exception):
    """Root of every error napari-sgnet raises on purpose."""


class UserInputError(SGNetError, ValueError):
    """A problem with what the user gave (file, option, device): shown as a message.

    It is also a :class:`ValueError`, so callers that caught ``ValueError`` keep working.
    """


class DeviceError(UserInputError):
    """The requested compute device (``cuda``, ``cuda:N``, ``mps``) is not available here."""


class SlideError(UserInputError):
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
