"""The text tower of a vision-language model, as far as explanations need it:
prompts to embeddings (with the model's tokenizer, checked against the
model) and the model's logit scale and bias."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["TextTower", "TokenizerMismatchError"]


class TokenizerMismatchError(ValueError):
    """The tokenizer's output does not fit the model's text tower."""


class TextTower:
    """A model's text tower (made by the adapter of a CLIP-style model,
    :meth:`~captum_vit.adapters.ViTAdapter.text_tower`)."""

    def default_tokenizer(self) -> Callable[..., Any]:
        """The tokenizer used when none is given.

        Raises:
            ValueError: the model does not say which tokenizer it takes.
        """
        raise ValueError("pass the model's tokenizer (tokenizer=...)")

    def tokenize(self, texts: Sequence[str], tokenizer: Any) -> Any:
        """``texts`` in the form :meth:`embed` takes, checked against the
        model (:class:`TokenizerMismatchError` if they do not fit)."""
        raise NotImplementedError

    def embed(self, tokens: Any) -> Tensor:
        """Text embeddings ``(P, D)`` (not normalised) of tokenized prompts."""
        raise NotImplementedError

    def logit_scale(self) -> Tensor:
        """The model's learnt temperature, :math:`\\exp` applied (a scalar)."""
        raise NotImplementedError

    def logit_bias(self) -> Optional[Tensor]:
        """The model's learnt logit bias (SigLIP), or None."""
        return None

    def encode(self, texts: Sequence[str], tokenizer: Any = None) -> Tensor:
        """Embed ``texts`` once, without gradients: ``(P, D)``."""
        tokens = self.tokenize(texts, tokenizer or self.default_tokenizer())
        with torch.no_grad():
            return self.embed(tokens).detach()

    @staticmethod
    def check_ids(
        ids: Any,
        vocab_size: Optional[int],
        context_length: Optional[int],
        exact: bool = False,
    ) -> None:
        """Raise :class:`TokenizerMismatchError` unless ``ids`` is a
        ``(P, L)`` integer tensor with every id below ``vocab_size`` and
        ``L`` equal to (``exact``) or at most ``context_length``."""
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point():
            raise TokenizerMismatchError(
                "the tokenizer must return token ids, an integer tensor (prompts, "
                f"length); got {type(ids).__name__}"
                + (f" of shape {tuple(ids.shape)}" if isinstance(ids, Tensor) else "")
            )
        if vocab_size and ids.numel() and int(ids.max()) >= vocab_size:
            raise TokenizerMismatchError(
                f"the tokenizer does not match the model: it gives token id "
                f"{int(ids.max())}, the model's text tower has a vocabulary of "
                f"{vocab_size}"
            )
        L = ids.shape[1]
        if context_length and (L != context_length if exact else L > context_length):
            raise TokenizerMismatchError(
                f"the tokenizer does not match the model: it gives {L} tokens per "
                f"prompt, the model's text tower takes "
                f"{'exactly ' if exact else 'at most '}{context_length}"
            )
