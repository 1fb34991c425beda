"""SGNet's training loss: local CE + auxiliary (surrounding) CE + crop consistency."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from napari_sgnet.model.crop import BoxLike, crop_to_box, resolve_box

__all__ = ["IGNORE_INDEX", "labels_to_targets", "masked_cross_entropy", "sgnet_loss"]

IGNORE_INDEX = -1


def labels_to_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label ids (``0`` = unlabelled, ``k + 1`` = class ``k``) -> long class targets.

    Accepts ``(B, H, W)`` or ``(B, 1, H, W)`` integer tensors; unlabelled pixels become
    :data:`IGNORE_INDEX`.

    Raises
    ------
    ValueError
        If the labels are not integers or hold ids above ``num_classes``.
    """
    if labels.ndim == 4 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 3:
        raise ValueError(f"labels must be (B, H, W), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer label ids, got {labels.dtype}")
    targets = labels.long() - 1
    if targets.numel():
        lo, hi = int(targets.min()), int(targets.max())
        if lo < IGNORE_INDEX or hi >= num_classes:
            raise ValueError(
                f"label ids must lie in 0..{num_classes} (0 = unlabelled), got {lo + 1}..{hi + 1}"
            )
    return targets


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labelled pixels (label id 0 ignored); 0 when none is labelled.

    Computed in float32 whatever the autocast dtype of ``logits``.
    """
    targets = labels_to_targets(labels, logits.shape[1])
    if targets.shape[-2:] != logits.shape[-2:] or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"labels {tuple(targets.shape)} do not match logits {tuple(logits.shape)}")
    total = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (targets != IGNORE_INDEX).sum().clamp(min=1)
    return total / count


def sgnet_loss(
    outputs: dict[str, torch.Tensor],
    local_labels: torch.Tensor,
    context_labels: torch.Tensor | None = None,
    local_box_in_context: BoxLike = None,
    weights: Sequence[float] = (1.0, 0.4, 0.1),
) -> dict[str, torch.Tensor]:
    """SGNet loss from a model's outputs.

    ``loss = w0 * CE(logits, local labels) + w1 * CE(aux, surrounding labels)
    + w2 * L1(crop(softmax(aux)) resized to P, softmax(logits))``. Both sides of the
    consistency term receive gradients. Without ``"aux"`` (the baseline) only the local CE
    counts and the other terms are reported as 0.

    Parameters
    ----------
    outputs : dict
        ``{"logits": (B, K, P, P)}`` and optionally ``"aux": (B, K, aP, aP)``.
    local_labels : Tensor
        ``(B, P, P)`` label ids (0 = unlabelled, ignored).
    context_labels : Tensor, optional
        ``(B, aP, aP)`` label ids of the surrounding patch; required when ``"aux"`` is present.
    local_box_in_context : Tensor or sequence, optional
        Where the local patch sits in the surrounding patch (as for the model's forward);
        default centred.
    weights : sequence of 3 floats
        Weights of the local CE, auxiliary CE and consistency terms.

    Returns
    -------
    dict
        ``"loss"`` (to backpropagate), ``"ce_local"``, ``"ce_aux"``, ``"consistency"``
        (scalar float32 tensors).
    """
    if len(weights) != 3:
        raise ValueError(f"weights must be 3 numbers (local, aux, consistency), got {weights}")
    w_local, w_aux, w_cons = (float(w) for w in weights)
    logits = outputs["logits"]
    ce_local = masked_cross_entropy(logits, local_labels)
    zero = ce_local.new_zeros(())
    aux = outputs.get("aux")
    if aux is None:
        return {
            "loss": w_local * ce_local,
            "ce_local": ce_local,
            "ce_aux": zero,
            "consistency": zero,
        }
    if context_labels is None:
        raise ValueError("the model predicts the surrounding patch: pass context_labels")
    ce_aux = masked_cross_entropy(aux, context_labels)
    local_hw = (logits.shape[-2], logits.shape[-1])
    context_hw = (aux.shape[-2], aux.shape[-1])
    box = resolve_box(local_box_in_context, logits.shape[0], local_hw, context_hw)
    aux_prob = crop_to_box(aux.float().softmax(dim=1), box, local_hw, context_hw)
    consistency = F.l1_loss(aux_prob, logits.float().softmax(dim=1))
    loss = w_local * ce_local + w_aux * ce_aux + w_cons * consistency
    return {"loss": loss, "ce_local": ce_local, "ce_aux": ce_aux, "consistency": consistency}
