r"""A model explained through the similarity of its image embedding to fixed
reference embeddings (prompts of a text tower, or reference images).

:class:`SimilarityAdapter` is the one mechanism by which every captum_vit
method, and Captum's own, explain a vision-language or embedding model: it is
an adapter (methods take it in place of the model) whose :meth:`forward`
returns one score per reference,

.. math::
    s_k(x) = \begin{cases}
        \tau\,\cos\!\big(f(x), r_k\big) + b & \texttt{"logits"} \\
        \cos\!\big(f(x), r_k\big) & \texttt{"cosine"} \\
        f(x)^\top r_k & \texttt{"dot"}
    \end{cases}

with :math:`f(x)` the model's image embedding (its own forward, traced like
any other), :math:`r_k` the reference embeddings computed once, :math:`\tau`
and :math:`b` the model's learnt logit scale and bias. It is callable, so it is
also the ``forward_func`` of Captum's methods and of the metrics; ``target=k``
names reference ``k``. Its head is two modules the LRP rules reach by role: the
L2 normalisation (an elementwise module: the identity rule, the norm held
constant as AttnLRP treats LayerNorm's) and a linear layer of weight
:math:`\tau\,r_k / \lVert r_k \rVert` and bias :math:`b`.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import ViTAdapter
from ._delegate import DelegatingAdapter

__all__ = ["SimilarityAdapter", "L2Normalize", "FixedLinear", "SCORES"]

#: the score functions of :class:`SimilarityAdapter`
SCORES = ("logits", "cosine", "dot")


class L2Normalize(nn.Module):
    r""":math:`y = x / \lVert x \rVert_2` over the last axis (as
    ``F.normalize``, ``eps`` 1e-12)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1)


class FixedLinear(nn.Module):
    """A linear layer with fixed (buffer) weight and bias, cast to the
    input's dtype and device on every call.

    Args:
        weight (Tensor): ``(out, in)``.
        bias (Tensor, optional): ``(out,)``. Default: None
    """

    _weight: Tensor
    _bias: Optional[Tensor]

    def __init__(self, weight: Tensor, bias: Optional[Tensor] = None) -> None:
        super().__init__()
        self.register_buffer("_weight", weight.detach().clone())
        self.register_buffer(
            "_bias", None if bias is None else bias.detach().clone().reshape(-1)
        )

    @property
    def weight(self) -> Tensor:
        return self._weight

    @property
    def bias(self) -> Optional[Tensor]:
        if self._bias is None:
            return None
        return self._bias.expand(self._weight.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        b = self.bias
        return F.linear(x, self.weight.to(x), None if b is None else b.to(x))

    def extra_repr(self) -> str:
        out, inp = self._weight.shape
        return f"in_features={inp}, out_features={out}"


class SimilarityAdapter(DelegatingAdapter):
    r"""The image embedding of ``inner``'s model scored against fixed
    reference embeddings (see the module docstring).

    Made by :func:`captum_vit.text_similarity`,
    :func:`captum_vit.image_similarity` and
    :func:`captum_vit.embedding_similarity`; pass it to any method in place of
    the model. Calling it on images gives the scores ``(B, K)``.

    Args:
        inner (ViTAdapter): the adapter of the model whose :meth:`forward` is
            the image embedding.
        references (Tensor): ``(K, D)`` reference embeddings.
        score (str, optional): ``"logits"``, ``"cosine"`` or ``"dot"``.
            Default: ``"cosine"``
        scale (float or Tensor, optional): :math:`\tau` of ``"logits"``.
            Default: 1.0
        bias (float or Tensor, optional): :math:`b` of ``"logits"``.
            Default: None
        names (sequence of str, optional): a name per reference (the
            prompts). Default: None
        kind (str, optional): what the references are, in error messages
            (``"prompts"``, ``"references"``). Default: ``"references"``
    """

    family = "image embedding scored against reference embeddings"

    def __init__(
        self,
        inner: ViTAdapter,
        references: Tensor,
        score: str = "cosine",
        scale: Any = 1.0,
        bias: Any = None,
        names: Optional[Sequence[str]] = None,
        kind: str = "references",
    ) -> None:
        super().__init__(inner.model, inner)
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.score = score
        self.names: List[str] = list(names) if names is not None else []
        self.kind = kind
        refs = references.detach()
        if score != "dot":
            refs = F.normalize(refs, dim=-1)
        if score == "logits":
            refs = refs * torch.as_tensor(scale, dtype=refs.dtype).reshape(())
            b = None if bias is None else torch.as_tensor(bias, dtype=refs.dtype)
        else:
            b = None
        self.normalize = L2Normalize() if score != "dot" else None
        self.linear = FixedLinear(refs, b)
        self.references = references.detach()

    @property
    def num_classes(self) -> int:
        return int(self.linear.weight.shape[0])

    @property
    def after_parts(self) -> Sequence[nn.Module]:
        return [m for m in (self.normalize, self.linear) if m is not None]

    def after(self, output: Tensor) -> Tensor:
        if self.normalize is not None:
            output = self.normalize(output)
        return self.linear(output)

    def __call__(self, inputs: Tensor, *args: Any) -> Tensor:
        """The scores ``(B, K)`` of ``inputs`` (the model's own forward)."""
        return self.forward(inputs, *args)

    def __repr__(self) -> str:
        what = f"{len(self.names)} {self.kind}" if self.names else self.kind
        return f"{type(self).__name__}({self.inner!r}, {self.score}, {what})"
