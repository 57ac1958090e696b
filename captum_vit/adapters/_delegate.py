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
from typing import Any, Iterator, Optional, Sequence

from torch import Tensor, nn

from ._base import HeadParts, Tracer, ViTAdapter
from ._surgery import patching

__all__ = ["DelegatingAdapter"]


class _Inner:
    """A member of :class:`DelegatingAdapter` that is its ``inner`` adapter's
    member of the same name (a property's value, a bound method); with
    ``after``, a method whose result :meth:`DelegatingAdapter.after` maps."""

    def __init__(self, after: bool = False) -> None:
        self.after = after
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, adapter: Optional[DelegatingAdapter], owner: type) -> Any:
        if adapter is None:
            return self
        member = getattr(adapter.inner, self.name)
        if not self.after:
            return member

        def then_after(*args: Any, **kwargs: Any) -> Tensor:
            return adapter.after(member(*args, **kwargs))

        return then_after


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

    # the tower: inner's
    num_prefix_tokens = _Inner()
    has_class_token = _Inner()
    pooling = _Inner()
    patch_size = _Inner()
    num_heads = _Inner()
    plain = _Inner()
    class_attention = _Inner()
    blocks = _Inner()
    block_parts = _Inner()
    embedding_parts = _Inner()
    layer_heads = _Inner()
    between_parts = _Inner()
    token_graph = _Inner()
    grid_size = _Inner()
    check_image_size = _Inner()
    relevance_gaps = _Inner()
    pool_weights = _Inner()
    _block_forward = _Inner()
    _attention_forward = _Inner()
    # the output: after(inner's)
    head_forward = _Inner(after=True)

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

    # --------------------------------------------------------------- running
    def _call_model(self, inputs: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.after(self.inner.forward(inputs, *args, **kwargs))

    @contextlib.contextmanager
    def trace(self, tracer: Optional[Tracer] = None) -> Iterator[Tracer]:
        """The inner tower's :meth:`ViTAdapter.trace`, with this model's
        lock held too (first)."""
        with patching(self.model), self.inner.trace(tracer) as traced:
            yield traced

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"
