"""An adapter made of another adapter and what follows its output.

Two kinds of model explain a ViT tower through a function of its output: an
open_clip CLIP whose image tower is a timm model (the timm ViT, then
open_clip's projection head), and any model explained through a similarity
(:class:`~captum_vit.adapters.SimilarityAdapter`: the image embedding, then
its similarity to fixed text or image embeddings). :class:`DelegatingAdapter`
describes, traces and runs the inner adapter's tower and applies
:meth:`DelegatingAdapter.after` to its output; the modules of ``after`` are
listed in :meth:`head_parts` so that the LRP rules reach them.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ._base import (
    BlockParts,
    EmbeddingParts,
    HeadParts,
    Tracer,
    ViTAdapter,
)
from ._graph import TokenGraph
from ._surgery import patching

__all__ = ["DelegatingAdapter"]


class DelegatingAdapter(ViTAdapter):
    """An adapter whose tower is ``inner``'s, followed by :meth:`after`.

    Everything about the tower (tokens, grid, blocks, tracing) is
    ``inner``'s; :meth:`forward` and :meth:`head_forward` apply
    :meth:`after` to ``inner``'s output, and :meth:`head_parts` appends
    :attr:`after_parts` (by role: linear layers and norms).

    Args:
        model (torch.nn.Module): the model explained (its lock is held while
            tracing, as well as ``inner.model``'s).
        inner (ViTAdapter): the adapter of the image tower.
    """

    family = "a ViT tower followed by a function of its output"

    def __init__(self, model: nn.Module, inner: ViTAdapter) -> None:
        super().__init__(model)
        self.inner = inner

    # ------------------------------------------------------------- to define
    def after(self, output: Tensor) -> Tensor:
        """What follows the inner tower's output ``(B, D)``."""
        raise NotImplementedError

    @property
    def after_parts(self) -> Sequence[nn.Module]:
        """The modules :meth:`after` applies, for the LRP rules."""
        return ()

    # ----------------------------------------------------------- description
    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return False

    @property
    def num_prefix_tokens(self) -> int:
        return self.inner.num_prefix_tokens

    @property
    def has_class_token(self) -> bool:
        return self.inner.has_class_token

    @property
    def pooling(self) -> str:
        return self.inner.pooling

    @property
    def patch_size(self) -> Tuple[int, int]:
        return self.inner.patch_size

    @property
    def num_heads(self) -> int:
        return self.inner.num_heads

    def blocks(self) -> List[nn.Module]:
        return self.inner.blocks()

    def block_parts(self, layer: int) -> BlockParts:
        return self.inner.block_parts(layer)

    def embedding_parts(self) -> EmbeddingParts:
        return self.inner.embedding_parts()

    def head_parts(self) -> HeadParts:
        h = self.inner.head_parts()
        return HeadParts(
            h.norm,
            list(self.after_parts)[-1:] or h.classifiers,
            fc_norm=h.fc_norm,
            pre_logits=(
                h.pre_logits
                + (h.classifiers if self.after_parts else [])
                + list(self.after_parts)[:-1]
            ),
            pooler=h.pooler,
        )

    def layer_heads(self, layer: int) -> int:
        return self.inner.layer_heads(layer)

    def between_parts(self) -> List[nn.Module]:
        return self.inner.between_parts()

    @property
    def plain(self) -> bool:
        return self.inner.plain

    @property
    def class_attention(self) -> bool:
        return self.inner.class_attention

    def token_graph(self, image_size: Tuple[int, int]) -> TokenGraph:
        return self.inner.token_graph(image_size)

    def grid_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        return self.inner.grid_size(image_size)

    def check_image_size(self, image_size: Tuple[int, int]) -> None:
        self.inner.check_image_size(image_size)

    def relevance_gaps(self) -> List[str]:
        return self.inner.relevance_gaps()

    def pool_weights(
        self,
        num_tokens: int,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> Tensor:
        return self.inner.pool_weights(num_tokens, device, dtype)

    # --------------------------------------------------------------- running
    def _call_model(self, inputs: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.after(self.inner.forward(inputs, *args, **kwargs))

    def head_forward(
        self,
        tokens: Tensor,
        pool_weights: Optional[Tensor] = None,
        final_norm: bool = True,
        tracer: Optional[Tracer] = None,
    ) -> Tensor:
        out = self.inner.head_forward(tokens, pool_weights, final_norm, tracer)
        return self.after(out)

    def _block_forward(
        self, layer: int, block: nn.Module, tracer: Tracer
    ) -> Callable[..., Tensor]:
        return self.inner._block_forward(layer, block, tracer)

    def _attention_forward(
        self, layer: int, attn: nn.Module, tracer: Tracer
    ) -> Callable[..., object]:
        return self.inner._attention_forward(layer, attn, tracer)

    @contextlib.contextmanager
    def trace(self, tracer: Optional[Tracer] = None) -> Iterator[Tracer]:
        """The inner tower's :meth:`ViTAdapter.trace`, with this model's
        lock held too (first)."""
        with patching(self.model), self.inner.trace(tracer) as traced:
            yield traced

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"
