"""SGNet (general branch + surrounding-context branch, late fusion) and its baselines."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from napari_sgnet.config import ModelConfig
from napari_sgnet.model.context import ContextBranch
from napari_sgnet.model.crop import BoxLike, crop_to_box, resolve_box
from napari_sgnet.model.general import GENERAL_BRANCHES
from napari_sgnet.model.layers import SegHead, init_weights, resize

__all__ = ["AUX_HEAD_WIDTH", "SegmentationModel", "build_model"]

AUX_HEAD_WIDTH = 64


class SegmentationModel(nn.Module):
    """SGNet when ``config.use_context`` is true, otherwise a general-branch baseline.

    Parameters
    ----------
    config : ModelConfig
        Architecture description; kept as ``self.config``.

    Notes
    -----
    SGNet: the general branch gives decoder features ``(B, C, P/4, P/4)``; the SCB gives
    ``(B, sci_width, aP/16, aP/16)`` over the surrounding patch, which is cropped to the local
    patch's footprint and resampled to ``P/4`` in one bilinear step, concatenated with the
    decoder features and classified by a separable ``3x3 conv-BN-ReLU -> 1x1`` head; logits are
    upsampled bilinearly to ``P``. An auxiliary head of the same form classifies the whole
    surrounding patch from the SCB features. A baseline classifies the decoder features with
    the general branch's own ``1x1`` classifier: of the local patch
    (``config.baseline_input == "local"``), or of the surrounding patch resized (antialiased
    bilinear) to the local patch's size (``"context"``: SGNet's field of view at
    ``1 / context_factor`` of the resolution), whose ``P/4`` logits over the whole surrounding
    patch are cropped to the local patch's box and resampled to ``P`` in one bilinear step.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        try:
            builder = GENERAL_BRANCHES[config.general_branch]
        except KeyError:
            raise ValueError(
                f"unknown general branch {config.general_branch!r}; "
                f"known: {sorted(GENERAL_BRANCHES)}"
            ) from None
        self.config = config
        self.baseline_input = config.baseline_input
        k = config.num_classes
        self.context_branch: ContextBranch | None = None
        self.head: nn.Module | None = None
        self.aux_head: nn.Module | None = None
        if config.use_context:
            self.general = builder(None)
            self.context_branch = ContextBranch(
                config.sci_width, config.sci_heads, config.sci_window, config.sci_blocks
            )
            c = self.general.out_channels
            self.head = SegHead(c + config.sci_width, c, k)
            self.aux_head = SegHead(config.sci_width, AUX_HEAD_WIDTH, k)
            init_weights(self.head)
            init_weights(self.aux_head)
        else:
            self.general = builder(k)

    @property
    def num_classes(self) -> int:
        """Number of output classes ``K`` (class ``k`` is label id ``k + 1``)."""
        return self.config.num_classes

    def forward(
        self,
        local: torch.Tensor,
        context: torch.Tensor | None = None,
        local_box_in_context: BoxLike = None,
    ) -> dict[str, torch.Tensor]:
        """Segment a batch of local patches.

        Parameters
        ----------
        local : Tensor
            ``(B, 3, P, P)`` normalised float; ``P`` a multiple of 32.
        context : Tensor, optional
            ``(B, 3, aP, aP)`` normalised surrounding patches (sides multiples of 16);
            required for SGNet and the same-field-of-view baseline, ignored by the local one.
        local_box_in_context : Tensor or sequence, optional
            Where each local patch sits in its surrounding patch, in context pixels:
            ``(B, 2)`` ``(x, y)`` top-left offsets or ``(B, 4)`` ``(x, y, w, h)``
            (see :func:`napari_sgnet.model.crop.resolve_box`). Default: centred.

        Returns
        -------
        dict
            ``"logits"``: ``(B, K, P, P)``; with the SCB also ``"aux"``: ``(B, K, aP, aP)``
            (unless the auxiliary head was dropped for inference, see
            :func:`napari_sgnet.model.fuse.prepare_for_inference`).
        """
        _check_image(local, "local", 32)
        local_hw = (local.shape[-2], local.shape[-1])
        if self.context_branch is None and self.baseline_input == "context":
            return {"logits": self._same_fov_baseline(local, context, local_box_in_context)}
        feat = self.general(local)
        if self.context_branch is None:
            assert self.general.classifier is not None
            return {"logits": resize(self.general.classifier(feat), local_hw)}
        assert self.head is not None
        _check_context(local, context, ContextBranch.stride, "this SGNet model")
        assert context is not None
        context_hw = (context.shape[-2], context.shape[-1])
        ctx = self.context_branch(context)
        ctx_local = self.crop_to_local(
            ctx, local, context, local_box_in_context, (feat.shape[-2], feat.shape[-1])
        )
        logits = self.head(torch.cat([feat, ctx_local.to(feat.dtype)], dim=1))
        out = {"logits": resize(logits, local_hw)}
        if self.aux_head is not None:  # None in an inference copy (model/fuse.py)
            out["aux"] = resize(self.aux_head(ctx), context_hw)
        return out

    def _same_fov_baseline(
        self, local: torch.Tensor, context: torch.Tensor | None, box_arg: BoxLike
    ) -> torch.Tensor:
        """Logits ``(B, K, P, P)`` of the local box from the downsampled surrounding patch."""
        _check_context(local, context, 1, "the same-field-of-view baseline")
        assert context is not None and self.general.classifier is not None
        local_hw = (local.shape[-2], local.shape[-1])
        context_hw = (context.shape[-2], context.shape[-1])
        small = context
        if context_hw != local_hw:
            small = F.interpolate(
                context, size=local_hw, mode="bilinear", align_corners=False, antialias=True
            )
        logits = self.general.classifier(self.general(small))  # (B, K, P/4, P/4) over context
        return self.crop_to_local(logits, local, context, box_arg)

    @staticmethod
    def crop_to_local(
        x: torch.Tensor,
        local: torch.Tensor,
        context: torch.Tensor,
        local_box_in_context: BoxLike = None,
        out_hw: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """A map ``x`` ``(B, C, h, w)`` over the whole surrounding patch cropped to the local
        patch's box and resampled to ``out_hw`` (default the local patch's ``P x P``) in one
        bilinear step.

        Parameters
        ----------
        x : Tensor
            ``(B, C, h, w)`` features or logits covering ``context``.
        local, context : Tensor
            The local ``(B, 3, P, P)`` and surrounding ``(B, 3, aP, aP)`` patches (their shapes).
        local_box_in_context : Tensor or sequence, optional
            As in :meth:`forward` (default: centred).
        out_hw : tuple of int, optional
            Output size; default ``(P, P)``.
        """
        local_hw = (local.shape[-2], local.shape[-1])
        context_hw = (context.shape[-2], context.shape[-1])
        box = resolve_box(local_box_in_context, local.shape[0], local_hw, context_hw)
        return crop_to_box(x, box, local_hw if out_hw is None else out_hw, context_hw)


def _check_context(
    local: torch.Tensor, context: torch.Tensor | None, multiple: int, who: str
) -> None:
    if context is None:
        raise ValueError(f"{who} needs the surrounding patch: pass context=")
    _check_image(context, "context", multiple)
    if context.shape[0] != local.shape[0]:
        raise ValueError(
            f"local and context batch sizes differ: {local.shape[0]} vs {context.shape[0]}"
        )


def _check_image(x: torch.Tensor, name: str, multiple: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (B, 3, H, W) tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be normalised floats, got {x.dtype}")
    if x.shape[-1] % multiple or x.shape[-2] % multiple:
        raise ValueError(f"{name} sides must be multiples of {multiple}, got {tuple(x.shape[-2:])}")


def build_model(config: ModelConfig) -> SegmentationModel:
    """Build SGNet (``config.use_context``) or a baseline, randomly initialised.

    Raises
    ------
    ValueError
        If ``config.general_branch`` is not in :data:`GENERAL_BRANCHES`.
    """
    return SegmentationModel(config)
