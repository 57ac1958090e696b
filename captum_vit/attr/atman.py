"""AtMan: attention manipulation (Deiseroth, Deb et al., NeurIPS 2023)."""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._batching import chunks, select_rows
from ..adapters import Tracer
from ._base import CopiesAttribution
from ._registry import register_method


class _Stop(Exception):
    """Raised by :class:`_EmbeddingProbe` to end a forward early."""


class _EmbeddingProbe(Tracer):
    """Records the tokens entering the first block, then stops the forward."""

    def __init__(self) -> None:
        super().__init__(keep_attention=False, layers=())
        self.embeddings: Optional[Tensor] = None

    def block_input(self, layer: int, x: Tensor) -> Tensor:
        self.embeddings = x.detach()
        raise _Stop


@register_method("atman")
class ATMAN(CopiesAttribution):
    r"""AtMan of Deiseroth, Deb, Weinbach, Brack, Schramowski and Kersting
    (NeurIPS 2023, https://arxiv.org/abs/2301.08110), a perturbation method
    that suppresses one patch token at a time *inside the attention* of every
    layer and head, without touching the input image.

    To suppress patch token :math:`i`, the scaled pre-softmax scores
    :math:`S^{(l)}_h = s\,Q K^\top` of every layer :math:`l` and head
    :math:`h` are multiplied column-wise before the softmax,

    .. math::
        \tilde S^{(l)}_{h,\,q j} = S^{(l)}_{h,\,q j}\; m_{ij}, \qquad
        m_{ij} = \begin{cases}
            1 - f\,\sigma_{ij} & j = i \text{ or } \sigma_{ij} \ge \kappa \\
            1 & \text{otherwise}
        \end{cases}

    for every query :math:`q` (prefix tokens are never suppressed), with
    :math:`f` the ``suppression_factor`` and :math:`\sigma_{ij}` the cosine
    similarity of the embeddings of tokens :math:`i` and :math:`j`
    (:math:`\sigma_{ii} = 1`, so the token itself is scaled by :math:`1 - f`).
    The attribution is the increase of the target's cross-entropy,

    .. math::
        \phi_i = \mathrm{CE}\big(y_t \mid \text{suppress } i\big)
            - \mathrm{CE}\big(y_t\big), \qquad
        \mathrm{CE}(y_t) = -\log \mathrm{softmax}(z)_t,

    so a token whose suppression makes the prediction less likely is
    relevant. :math:`f = 0` changes nothing and gives zeros.

    Choices where the paper leaves room (read from the authors' code,
    github.com/Aleph-Alpha/AtMan):

    * **How the factor is applied.** The authors' ViT code multiplies the
      *scaled* scores column-wise by the factor they call suppression factor
      (0.1 by default); the paper writes the manipulation as
      :math:`1 - f` with :math:`f = 0.9`. We take the paper's :math:`f`, so
      ``suppression_factor=0.9`` is the authors' default multiplier 0.1. The
      scores are not shifted by their row minimum before the product (the
      authors' ViT code has that shift commented out; their language-model
      code applies it).
    * **Conceptual suppression.** Tokens whose cosine similarity to token
      :math:`i` is at least :math:`\kappa` are suppressed with it, with the
      authors' interpolated multiplier :math:`(1-(1-f))(1-\sigma) + (1-f) =
      1 - f\sigma`. The similarity is computed on the tokens *entering the
      first block* (patch embedding plus position embedding, the "input
      embeddings" of the transformer in the authors' code), patch tokens
      only. ``conceptual_suppression_threshold=None`` suppresses the single
      token; 0.6 is the authors' default.
    * **Class-attention models (CaiT).** A patch token is a key in every
      layer of both phases: the self-attention layers, whose queries are the
      patches, and the class-attention layers, whose only query is the class
      token. Its column is suppressed in all of them (the class token, a
      prefix token, never is); the similarities come from the tokens entering
      the first self-attention block, the patches alone. With talking heads
      the multiplied scores are those entering the softmax, after the
      pre-softmax mixing of the heads (``proj_l``); the post-softmax mixing
      (``proj_w``) then mixes suppressed probabilities. Which tokens each
      layer's keys are comes from the token graph: the stage's prefix
      tokens, then the patch grid (``docs/token_graph.rst``, "CaiT: two
      phases").
    * **Batching.** The unsuppressed pass and the :math:`P` suppressed passes
      of one image are stacked into forwards of ``internal_batch_size``
      copies (``attribute``'s, else the constructor's); the
      :class:`~captum_vit.adapters.Tracer`'s ``score_hook`` applies a
      different multiplier row to each copy. Images of a batch are
      processed one after the other, so a sample's result never depends on
      its batch.

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        suppression_factor (float, optional): :math:`f`; the suppressed
            token's scores are multiplied by :math:`1 - f`. Values above 1
            flip the scores' sign, negative values amplify. Default: 0.9
        conceptual_suppression_threshold (float or None, optional):
            :math:`\kappa \in [0, 1]`; ``None`` switches conceptual
            suppression off. Default: 0.6
        internal_batch_size (int, optional): copies of the image per forward
            pass when ``attribute`` is called without ``internal_batch_size``
            (which then wins). Default: 64
        show_progress (bool, optional): show a tqdm progress bar over the
            forward passes. Default: False
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> atman = cv.ATMAN(model, suppression_factor=0.9, internal_batch_size=32)
        >>> attr = atman.attribute(torch.randn(1, 3, 224, 224), output="tokens")
        >>> attr.shape
        torch.Size([1, 14, 14])
    """

    _plain_only = (
        "ATMAN suppresses one input token inside the attention of every layer, "
        "and this model merges 2x2 tokens between stages: after a merging the "
        "token no longer exists on its own (it is a quarter of a merged token, "
        "mixed by a linear layer), so suppressing it alone has no definition in "
        "the later stages (ViTCX or the attention methods explain such models)"
    )

    _class_attention = True
    _default_batch_size = 64

    def __init__(
        self,
        model: nn.Module,
        suppression_factor: float = 0.9,
        conceptual_suppression_threshold: Optional[float] = 0.6,
        internal_batch_size: int = 64,
        show_progress: bool = False,
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, internal_batch_size, show_progress, interpolate_mode)
        if not math.isfinite(float(suppression_factor)):
            raise ValueError(
                f"suppression_factor must be finite, got {suppression_factor}"
            )
        t = conceptual_suppression_threshold
        if t is not None and not 0.0 <= float(t) <= 1.0:
            raise ValueError(
                f"conceptual_suppression_threshold must be in [0, 1] or None, got {t}"
            )
        if self.adapter.num_classes == 1:
            raise ValueError(
                "ATMAN scores the target's cross-entropy over the model's outputs, "
                "constant for a model with one output (a similarity to one prompt): "
                "give several prompts or references"
            )
        self.suppression_factor = float(suppression_factor)
        self.conceptual_suppression_threshold = None if t is None else float(t)

    # ------------------------------------------------------------- internals
    def embeddings(self, inputs: Tensor, args: tuple = ()) -> Tensor:
        """The tokens entering the first block ``(B, N, D)`` (one cheap pass
        that stops before the first block)."""
        probe = _EmbeddingProbe()
        with torch.no_grad(), self.adapter.trace(probe):
            try:
                self.adapter.forward(inputs, *args)
            except _Stop:
                pass
        if probe.embeddings is None:  # pragma: no cover - adapters call it
            raise RuntimeError("the adapter did not route the first block")
        return probe.embeddings

    def multipliers(
        self, embeddings: Tensor, num_prefix_tokens: Optional[int] = None
    ) -> Tensor:
        """Score multipliers ``(B, 1 + P, N)`` for the tokens ``embeddings``
        entering the first block ``(B, N, D)``, of which the first
        ``num_prefix_tokens`` are prefix tokens (None: the model's prefix
        tokens; CaiT's first phase has none, its token graph's first stage
        says so): row 0 suppresses nothing, row ``1 + i`` suppresses patch
        ``i`` (and its similar tokens)."""
        npre = (
            self.adapter.num_prefix_tokens
            if num_prefix_tokens is None
            else num_prefix_tokens
        )
        B, N, _ = embeddings.shape
        P = N - npre
        f = self.suppression_factor
        eye = torch.eye(P, dtype=torch.float32, device=embeddings.device)
        if self.conceptual_suppression_threshold is None:
            sim = eye.expand(B, P, P)
        else:
            e = F.normalize(embeddings[:, npre:].float(), dim=-1, eps=1e-8)
            sim = (e @ e.transpose(1, 2)).clamp(-1.0, 1.0)
            sim = torch.where(
                sim >= self.conceptual_suppression_threshold, sim, torch.zeros_like(sim)
            )
            sim = torch.maximum(sim * (1 - eye), eye)
        m = torch.ones(B, 1 + P, N, dtype=torch.float32, device=embeddings.device)
        m[:, 1:, npre:] = 1.0 - f * sim
        return m

    def _attribute_copies(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple, bs: Optional[int]
    ) -> Tensor:
        graph = self._graph(inputs)
        npre = [st.num_prefix_tokens for st in graph.stages]
        mult = self.multipliers(self.embeddings(inputs, args), npre[0])
        mult = mult[..., npre[0] :].to(inputs.dtype)  # (B, R, P): the patches
        B, R, _ = mult.shape
        # each layer's keys are its stage's prefix tokens (never suppressed)
        # then the patch grid, the same grid in every stage of the models
        # ATMAN applies to (plain ViTs; CaiT's two phases)
        stage_of = [lw.stage for lw in graph.layers]
        current: Dict[int, Tensor] = {}

        def hook(layer: int, scores: Tensor) -> Tensor:
            return scores * current[stage_of[layer]][:, None, None, :]

        tracer = Tracer(keep_attention=False, score_hook=hook)
        ce = torch.empty(B, R, dtype=torch.float32, device=inputs.device)
        bar = self._progress(B * R, "ATMAN forward passes")
        with bar, torch.no_grad(), self.adapter.trace(tracer):
            for b in range(B):
                for rows in chunks(R, bs):
                    m = mult[b, rows]
                    for s, n in enumerate(npre):
                        current[s] = F.pad(m, (n, 0), value=1.0)
                    x = inputs[b : b + 1].expand(m.shape[0], *inputs.shape[1:])
                    index = torch.full((m.shape[0],), b)
                    logits = self.adapter.forward(x, *select_rows(args, index, B))
                    if target is None and rows.start == 0:
                        t = int(logits[0].argmax())
                    elif target is not None:
                        t = int(target[b])
                    logp = logits.float().log_softmax(dim=-1)[:, t]
                    ce[b, rows] = -logp
                    bar.update(m.shape[0])
        return ce[:, 1:] - ce[:, :1]
