"""Types shared by the correction loaders: sources, loaded sets and errors."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from napari_sgnet.errors import UserInputError
from napari_sgnet.io.labelstore import LabelStore
from napari_sgnet.io.pyramid import Pyramid
from napari_sgnet.training.finetune.splits import Region
from napari_sgnet.training.patches import PatchFolder

__all__ = [
    "CorrectionSet",
    "FinetuneError",
    "NoCorrectionsError",
    "PatchCorrections",
    "SourceLike",
    "StoreCorrections",
]


class FinetuneError(UserInputError):
    """Fine-tuning cannot run on this input; the message names the file and the problem."""


class NoCorrectionsError(FinetuneError):
    """The sources hold no committed corrections."""


@dataclass(frozen=True)
class StoreCorrections:
    """A label store and the slide it belongs to.

    Parameters
    ----------
    store : path or LabelStore
        The store folder (opened read-only) or an open store.
    slide : path or Pyramid, optional
        The slide; default: the file recorded in the store (its ``slide.source``).
    """

    store: str | os.PathLike[str] | LabelStore
    slide: str | os.PathLike[str] | Pyramid | None = None


@dataclass(frozen=True)
class PatchCorrections:
    """An exported patch folder (``manifest.json`` + ``items/``)."""

    folder: str | os.PathLike[str] | PatchFolder


SourceLike = Union[  # noqa: UP007 - a runtime alias must work on Python 3.10
    StoreCorrections, PatchCorrections, LabelStore, PatchFolder, str, os.PathLike[str]
]


@dataclass(eq=False)
class CorrectionSet:
    """Corrections of one source at the model's working level.

    Attributes
    ----------
    kind : {"store", "patches"}
    path : Path
        The store or patch folder.
    regions : list of Region
        Split units (see :mod:`.splits`).
    image : Pyramid or None
        The slide (stores only) and ``level``, its working level.
    folder : PatchFolder or None
        The patch folder (patch sources only).
    description : dict
        JSON provenance (path, slide, counts).
    """

    kind: str
    path: Path
    regions: list[Region]
    image: Pyramid | None = None
    level: int = 0
    folder: PatchFolder | None = None
    description: dict[str, Any] = field(default_factory=dict)
