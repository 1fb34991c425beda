"""Input ablations of a context model, as a model wrapper the unchanged tile loop runs.

:class:`AblatedModel` wraps a segmentation model with a surrounding-context branch (SGNet)
and changes what it sees, or which head it answers with; the predictor, the tile loop and
the sinks run it like any model (it has the wrapped model's ``.config`` and returns
``{"logits": (B, K, P, P)}``). Inputs are the normalised tensors the predictor hands over,
so "blank" means the normalised mean colour: zeros.

Ablations (:data:`ABLATIONS`)
-----------------------------
``local-blank``
    The local patch replaced by zeros (the mean colour); the surrounding patch unchanged.
``context-blank``
    The surrounding patch replaced by zeros; the local patch unchanged.
``context-shuffle``
    Each tile gets the surrounding patch of another tile of its batch: a rotation by one,
    tile ``i`` gets the context of tile ``(i + 1) mod B`` (a derangement for ``B >= 2``; the
    tile loop batches tiles in row-major order, so this is mostly the context of the next
    tile along the row, a spatial shift by one tile). A batch of one tile cannot be
    deranged: it keeps its own context, so run with a batch size of at least 2.
``aux-only``
    SGNet's auxiliary head alone: its ``(B, K, aP, aP)`` logits over the surrounding patch
    cropped to the local patch's box and resampled to ``P x P`` (bilinear,
    :meth:`napari_sgnet.model.sgnet.SegmentationModel.crop_to_local`). The wrapped model must
    keep its auxiliary head: the wrapper hides it from
    :func:`napari_sgnet.model.fuse.prepare_for_inference`, which drops only a top-level
    ``aux_head``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from napari_sgnet.model.crop import BoxLike
from napari_sgnet.model.sgnet import SegmentationModel

__all__ = ["ABLATIONS", "AblatedModel", "ablation_applies", "parse_ablations"]

#: The ablation names, in report order.
ABLATIONS: tuple[str, ...] = ("local-blank", "context-blank", "context-shuffle", "aux-only")


def parse_ablations(text: str | None) -> list[str]:
    """``"all"`` or a comma list of :data:`ABLATIONS` names -> the names (report order).

    Raises
    ------
    ValueError
        For an unknown name.
    """
    if not text:
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    if "all" in names:
        return list(ABLATIONS)
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; known: {', '.join(ABLATIONS)} or all")
    return [n for n in ABLATIONS if n in names]


def ablation_applies(model: nn.Module, name: str) -> str | None:
    """``None`` when ``name`` can run on ``model``, else why not (one line)."""
    config = getattr(model, "config", None)
    if config is None or not getattr(config, "use_context", False):
        return "the model has no context branch"
    if name == "aux-only" and getattr(model, "aux_head", None) is None:
        return "the model has no auxiliary head"
    return None


class AblatedModel(nn.Module):
    """A context model run under one ablation (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        A model with ``.config`` (``use_context`` true) whose
        ``forward(local, context, local_box_in_context)`` returns ``{"logits": ...}`` (and,
        for ``aux-only``, ``"aux"``).
    ablation : str
        One of :data:`ABLATIONS`.

    Raises
    ------
    ValueError
        For an unknown ablation or one that does not apply to ``model``.
    """

    def __init__(self, model: nn.Module, ablation: str) -> None:
        super().__init__()
        if ablation not in ABLATIONS:
            raise ValueError(f"unknown ablation {ablation!r}; known: {', '.join(ABLATIONS)}")
        why = ablation_applies(model, ablation)
        if why is not None:
            raise ValueError(f"ablation {ablation!r} does not apply: {why}")
        self.inner = model
        self.ablation = ablation
        self.config: Any = model.config

    def forward(
        self,
        local: torch.Tensor,
        context: torch.Tensor | None = None,
        local_box_in_context: BoxLike = None,
    ) -> dict[str, torch.Tensor]:
        """The wrapped model's output under the ablation: ``{"logits": (B, K, P, P)}``."""
        if context is None:
            raise ValueError("an ablated context model needs the surrounding patch: pass context=")
        if self.ablation == "local-blank":
            local = torch.zeros_like(local)
        elif self.ablation == "context-blank":
            context = torch.zeros_like(context)
        elif self.ablation == "context-shuffle":
            context = torch.roll(context, shifts=-1, dims=0)  # tile i gets tile i + 1's
        out = self.inner(local, context=context, local_box_in_context=local_box_in_context)
        if self.ablation != "aux-only":
            return {"logits": out["logits"]}
        aux = out.get("aux") if isinstance(out, dict) else None
        if aux is None:
            raise ValueError("aux-only: the model returned no auxiliary output")
        logits = SegmentationModel.crop_to_local(aux.float(), local, context, local_box_in_context)
        return {"logits": logits}
