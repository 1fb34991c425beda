"""The one error hierarchy of napari-sgnet.

- :class:`SGNetError` is the root of every error the package raises on purpose.
- :class:`UserInputError` is the branch for problems a person can fix (a bad file, a wrong
  option, a missing device): the CLI and the dock show these as plain messages.
- Anything else that reaches the CLI or the dock is a bug: it is logged with its traceback.

Slide and store errors name the file and the problem, so that they can be shown to a person
as they are, without a traceback from deep inside a codec.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "CorruptSlideError",
    "DeviceError",
    "Failure",
    "OptionError",
    "ResourceLimitError",
    "SGNetError",
    "SlideError",
    "StoreError",
    "UnsupportedSlideError",
    "UserInputError",
    "describe_failure",
    "report_failure",
]


class SGNetError(Exception):
    """Root of every error napari-sgnet raises on purpose."""


class UserInputError(SGNetError, ValueError):
    """A problem with what the user gave (file, option, device): shown as a message.

    It is also a :class:`ValueError`, so callers that caught ``ValueError`` keep working.
    """


class OptionError(UserInputError):
    """A setting (command-line option, dock field, config key) has a value that is not allowed."""


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


class ResourceLimitError(SlideError):
    """The file declares more pixels, larger tiles or a bigger read than the limits allow
    (see :func:`napari_sgnet.validate.resource_limits`); the message names the numbers."""


class StoreError(SlideError):
    """A label store or export target is invalid, foreign, or read-only."""


FailureKind = Literal["user", "system", "bug"]


@dataclass(frozen=True)
class Failure:
    """How a front end (the CLI, the dock) should show an exception.

    Attributes
    ----------
    message : str
        One line to show the person: the error's own message for a user error, otherwise the
        exception type and message with a note of what kind of failure it is.
    kind : {"user", "system", "bug"}
        ``"user"`` for a :class:`UserInputError` (the person can fix it); ``"system"`` for an
        :class:`OSError` that is not one (disk full, permissions, network file systems);
        ``"bug"`` for anything else: an error napari-sgnet did not expect.
    """

    message: str
    kind: FailureKind

    @property
    def is_user_error(self) -> bool:
        """Whether the error is the user's to fix, shown without a traceback."""
        return self.kind == "user"


def describe_failure(exc: BaseException) -> Failure:
    """Classify ``exc`` and word the message a front end shows for it.

    Parameters
    ----------
    exc : BaseException
        The error that stopped a command or a background task.

    Returns
    -------
    Failure
        The message to show and whether it is a user error (see :class:`Failure`).

    Notes
    -----
    Only :class:`UserInputError` counts as a user error. A bare :class:`ValueError` from a
    library (numpy, zarr, a codec) is an internal bug: code that means "the user's input is
    wrong" raises a :class:`UserInputError` subclass, naming the file or option concerned.
    """
    text = str(exc).strip()
    if isinstance(exc, UserInputError):
        return Failure(text or type(exc).__name__, "user")
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if isinstance(exc, OSError):
        return Failure(f"system error: {what}", "system")
    return Failure(
        f"internal error (a bug in napari-sgnet, please report it with the logged traceback): "
        f"{what}",
        "bug",
    )


def report_failure(
    exc: BaseException, logger: logging.Logger, context: str | None = None
) -> Failure:
    """Describe ``exc`` and log it with its traceback unless it is a user error.

    Parameters
    ----------
    exc : BaseException
        The error that stopped a command or a background task.
    logger : logging.Logger
        Where the traceback of a system error or bug goes (at ``ERROR`` level).
    context : str, optional
        What was being done ("predict slide.svs", "fine-tuning"); prefixed to the log record.

    Returns
    -------
    Failure
        As :func:`describe_failure`: the caller shows ``failure.message`` (``error: ...`` on
        stderr, a napari notification) and picks an exit code from ``failure.kind``.
    """
    failure = describe_failure(exc)
    if not failure.is_user_error:
        prefix = f"{context}: " if context else ""
        logger.error("%s%s", prefix, failure.message, exc_info=exc)
    return failure
