"""The surrogate :math:`g(x, S)`: a stock ViT evaluated on partial inputs."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

from ... import adapters
from ...adapters import ViTAdapter
from ._masking import MaskTracer

#: why ViT Shapley does not apply to a class-attention model (CaiT)
NO_CLASS_ATTENTION = (
    "its surrogate holds a patch out by a -inf on that patch's key scores "
    "before the softmax, in every layer of one token set, which removes the "
    "patch only where the softmax's probabilities are the attention; CaiT's "
    "self-attention layers mix the heads' probabilities after the softmax "
    "(talking heads, A = W_w softmax(.) + b_w), and the bias b_w gives every "
    "key, held out or not, a weight, so a held-out patch's value still "
    "reaches every patch token and, through the class-attention layers, the "
    "class token. A surrogate of CaiT would have to hold patches out "
    "otherwise (drop them from the sequence) and be trained so"
)


def check_shapley_model(adapter: ViTAdapter) -> ViTAdapter:
    """Refuse what ViT Shapley does not handle (issue 14): a model explained
    through a function of its output (a similarity: the surrogate and the
    explainer are trained on the model itself), an attention-pooled model
    (with every patch held out, its pooling attends to nothing), a windowed,
    hierarchical model (issue 15: Swin) or a model with class-attention
    layers (CaiT)."""
    if isinstance(adapter, adapters.DelegatingAdapter):
        raise NotImplementedError(
            f"ViT Shapley trains its surrogate and explainer on the model itself; "
            f"{adapter!r} explains a function of its output, which it does not "
            "support"
        )
    if adapter.pooling == "attention":
        raise NotImplementedError(
            "ViT Shapley holds patches out of every attention; an attention-pooled "
            "model's pooling would attend to nothing for the empty coalition"
        )
    if adapter.class_attention:  # CaiT
        raise adapters.UnsupportedModelError(
            f"ViT Shapley does not apply to {type(adapter.model).__name__}: "
            f"{NO_CLASS_ATTENTION}"
        )
    if not adapter.plain:
        raise adapters.UnsupportedModelError(
            f"ViT Shapley does not apply to {type(adapter.model).__name__}: it holds "
            "patches out of every attention over one token set; this model "
            "attends within windows and merges 2x2 tokens between stages, so a "
            "held-out patch is mixed into a merged token that stays in the game"
        )
    return adapter


class ShapleySurrogate(nn.Module):
    r"""A classifier that evaluates partial inputs :math:`v(S)`.

    Wraps a stock Vision Transformer; ``forward(images, mask)`` holds out the
    patch tokens with ``mask == 0`` by adding :math:`-\infty` to their keys'
    pre-softmax scores in every layer (the adapter's
    :attr:`~captum_vit.adapters.Tracer.score_hook`; no model rewrite). Prefix
    tokens (class, distillation, register) are always kept; a held-out token
    attends only to itself so that no softmax row is empty, and no other token
    attends to it. For average-pooled models the pooled vector is the mean
    over the kept patch tokens only. With every patch held out the output does
    not depend on the image.

    The wrapped model is used as is (not copied); use
    :meth:`ViTShapley.train_surrogate` to fine-tune a copy of a classifier.

    Args:
        model (torch.nn.Module): a stock timm, Hugging Face or torchvision ViT.

    Examples::

        >>> surrogate = ShapleySurrogate(model)
        >>> mask = torch.ones(2, surrogate.num_players((32, 32)))
        >>> logits = surrogate(images, mask)
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        # unwraps an adapter; raises UnsupportedModelError early
        self.model = check_shapley_model(adapters.get(model)).model

    @property
    def adapter(self) -> ViTAdapter:
        """The adapter of the wrapped model."""
        return adapters.get(self.model)

    def num_players(self, image_size: Tuple[int, int]) -> int:
        """Number of patch tokens for images of ``image_size``."""
        gh, gw = self.adapter.grid_size((int(image_size[0]), int(image_size[1])))
        return gh * gw

    def forward(self, images: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Logits ``(B, classes)`` of ``images`` with the patches of ``mask``.

        Args:
            images (Tensor): ``(B, C, H, W)``.
            mask (Tensor, optional): ``(B, num_players)`` 0/1 (or bool), 1 =
                the patch token is kept. Default: None (all kept)

        Returns:
            Tensor: the wrapped model's logits ``(B, classes)``.
        """
        adapter = self.adapter
        B = images.shape[0]
        P = self.num_players((images.shape[-2], images.shape[-1]))
        if mask is None:
            mask = torch.ones(B, P, device=images.device)
        if mask.dim() != 2 or mask.shape != (B, P):
            raise ValueError(
                f"mask must have shape (B, num_players) = {(B, P)}, got "
                f"{tuple(mask.shape)}"
            )
        keep = mask.to(images.device) > 0.5
        prefix = adapter.num_prefix_tokens
        keep_tokens = torch.cat(
            [torch.ones(B, prefix, dtype=torch.bool, device=keep.device), keep], 1
        )
        weights = None
        if adapter.pooling in ("avg", "token+avg"):
            kf = keep.to(images.dtype)
            w = kf / kf.sum(-1, keepdim=True).clamp_min(1.0)
            weights = torch.cat([w.new_zeros(B, prefix), w], 1)
        with adapter.trace(MaskTracer(keep_tokens, weights, prefix)):
            return adapter.forward(images)


def check_surrogate(surrogate: Any) -> None:
    """Raise ``TypeError`` unless ``surrogate`` is a :class:`ShapleySurrogate`."""
    if not isinstance(surrogate, ShapleySurrogate):
        raise TypeError(
            "surrogate must be a ShapleySurrogate (see ViTShapley.train_surrogate)"
            f", got {type(surrogate).__name__}"
        )
