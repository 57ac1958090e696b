"""TIS: Transformer Input Sampling (Englebert et al., 2023)."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .._batching import check_internal_batch_size, chunks, select_rows
from ..adapters import Tracer
from ._base import CopiesAttribution
from ._registry import register_method


def kmeans(
    points: Tensor, centroids: Tensor, max_iter: int = 100, tol: float = 1e-4
) -> Tensor:
    r"""Lloyd's k-means from the given initial ``centroids`` ``(K, F)``.

    Each iteration assigns every point of ``points`` ``(M, F)`` to its nearest
    centroid (Euclidean) and moves each centroid to the mean of its points; it
    stops after ``max_iter`` iterations or once the centroids moved by at most
    ``tol`` in total squared distance (the criterion of fast-pytorch-kmeans,
    which the TIS authors use). A centroid that loses all its points stays
    where it was (fast-pytorch-kmeans sets it to zero).

    Returns:
        Tensor: the centroids ``(K, F)``.
    """
    c = centroids.clone()
    ids = torch.arange(c.shape[0], device=c.device)
    sq = (points * points).sum(dim=1)
    for _ in range(max_iter):
        # minus the squared distance, in fast-pytorch-kmeans' order of operations
        sim = 2 * points @ c.T - sq[:, None] - (c * c).sum(dim=1)[None]
        onehot = (sim.argmax(dim=1)[None] == ids[:, None]).to(points.dtype)
        count = onehot.sum(dim=1, keepdim=True)
        new = torch.where(count > 0, onehot @ points / count.clamp_min(1), c)
        moved = (new - c).pow(2).sum()
        c = new
        if moved <= tol:
            break
    return c


class _TokenSampler(Tracer):
    """Replaces the tokens entering the first block, ``(1, N, D)``, by ``C``
    sequences: the prefix tokens followed by the patch tokens ``index`` ``(C,
    K)`` (patch indices), i.e. the other patch tokens are dropped."""

    def __init__(self, num_prefix_tokens: int) -> None:
        super().__init__(keep_attention=False, layers=())
        self.npre = num_prefix_tokens
        self.index: Optional[Tensor] = None

    def block_input(self, layer: int, x: Tensor) -> Tensor:
        if layer != 0:
            return x
        assert self.index is not None, "set index before the forward pass"
        C = self.index.shape[0]
        prefix = x[:, : self.npre].expand(C, -1, -1)
        patches = x[0, self.npre :][self.index]  # (C, K, D)
        return torch.cat([prefix, patches], dim=1)


@register_method("tis")
class TIS(CopiesAttribution):
    r"""Transformer Input Sampling of Englebert et al. ("Explaining through
    Transformer Input Sampling", ICCV 2023 workshops; code
    https://github.com/aenglebert/Transformer_Input_Sampling): the model is run on
    *subsets of its tokens* — the other tokens are dropped from the sequence,
    not replaced by a baseline — and every patch scores the mean prediction of
    the subsets that contain it.

    1. **Masks from activations.** The clean image's patch tokens at the
       output of every block are concatenated along the feature axis,
       :math:`Z \in \mathbb{R}^{P \times LD}`; each of the :math:`LD` columns
       is a map over the :math:`P` patches. k-means (Euclidean, initial
       centroids drawn from the columns) groups them into
       :math:`M` centroids :math:`c_m \in \mathbb{R}^P`; mask :math:`m` keeps
       the :math:`\max(1, \lfloor rP \rfloor)` patches where :math:`c_m` is largest
       (:math:`r` the ``tokens_ratio``): a binary mask
       :math:`b_m \in \{0, 1\}^P`.
    2. **Scores.** The tokens entering the first block (patch embedding plus
       position embedding) are subsampled: the prefix tokens and the kept
       patch tokens run through the blocks and the head;
       :math:`s_m = \mathrm{softmax}(f(x_{b_m}))_t`.
    3. **Saliency**, corrected for how often each patch was kept,

       .. math::
           S(j) = \frac{\sum_m s_m\, b_{mj}}{\sum_m b_{mj}}.

    Choices:

    * class-attention models (CaiT): the token subsets are taken from the
      tokens entering the first self-attention block (the patches; the
      class token joins later, with the kept patches as its keys and
      values: CaiT's absolute position embedding is added before the
      blocks, so a subset keeps its positions); the activations are the
      patch tokens at the output of the self-attention blocks, the
      class-attention blocks passing them unchanged (which blocks update the
      patches comes from the token graph, ``docs/token_graph.rst``, "CaiT:
      two phases");
    * the authors' defaults: :math:`M = 1024` masks, :math:`r = 0.5`, at
      most 100 k-means iterations with tolerance 1e-4, 128 masked sequences
      per pass; several ratios (a sequence) give :math:`M` masks each, as in
      the authors' code;
    * :math:`M` is capped at the number of activation columns :math:`LD`
      (k-means needs as many points as centroids);
    * a patch no mask keeps gets 0 (the authors' code divides by zero);
    * the authors min-max normalise the map to :math:`[0, 1]` for display;
      this method returns :math:`S` as above;
    * randomness: the initial centroids are drawn with a ``torch.Generator``
      seeded with ``seed`` for every image (the authors' code draws them from
      NumPy's global generator), so results are reproducible and do not
      depend on the batch; k-means runs in the activations' dtype; a centroid
      left without points keeps its position (see :func:`kmeans`).

    Agreement with the authors' code (its outputs on a tiny random timm ViT
    are kept in ``tests/attr/data/tis`` with the script that made them):
    started from the same initial centroids, the k-means centroids, the kept
    tokens and the scores are identical, the saliency within 9e-8 of its
    largest value (the authors sum in float32).

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        n_masks (int, optional): :math:`M`, masks per ratio. Default: 1024
        tokens_ratio (float or sequence of float, optional): :math:`r \in
            (0, 1]`, the share of patch tokens each mask keeps. Default: 0.5
        max_iter (int, optional): k-means iterations at most. Default: 100
        tol (float, optional): k-means stopping tolerance. Default: 1e-4
        internal_batch_size (int, optional): token subsets per forward pass
            when ``attribute`` is called without ``internal_batch_size``
            (which then wins). Default: 128
        seed (int, optional): seed of the k-means initialisation. Default: 0
        show_progress (bool, optional): tqdm progress bar over the passes.
            Default: False
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> tis = cv.TIS(model, n_masks=256, seed=0)
        >>> attr = tis.attribute(torch.randn(1, 3, 224, 224), output="tokens")
        >>> attr.shape
        torch.Size([1, 14, 14])
    """

    _plain_only = (
        "TIS drops patch tokens from the sequence the blocks attend over; this "
        "model partitions its token grid into fixed windows and merges 2x2 "
        "neighbours between stages, which need every token of the grid"
    )

    _drops_tokens = True
    _class_attention = True

    _default_batch_size = 128

    def __init__(
        self,
        model: nn.Module,
        n_masks: int = 1024,
        tokens_ratio: Union[float, Sequence[float]] = 0.5,
        max_iter: int = 100,
        tol: float = 1e-4,
        internal_batch_size: int = 128,
        seed: int = 0,
        show_progress: bool = False,
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, internal_batch_size, show_progress, interpolate_mode)
        if int(n_masks) < 1:
            raise ValueError(f"n_masks must be >= 1, got {n_masks}")
        ratios = (
            [tokens_ratio] if isinstance(tokens_ratio, (int, float)) else tokens_ratio
        )
        ratios = [float(r) for r in ratios]
        if not ratios or not all(0.0 < r <= 1.0 for r in ratios):
            raise ValueError(f"tokens_ratio must be in (0, 1], got {tokens_ratio}")
        if int(max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        self.n_masks = int(n_masks)
        self.tokens_ratio = ratios
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.seed = int(seed)

    # ------------------------------------------------------------- internals
    def activations(self, image: Tensor, args: tuple = ()) -> Tuple[Tensor, Tensor]:
        """``(logits, Z)`` of one image ``(1, C, H, W)``: its logits ``(1,
        classes)`` and the patch tokens of every block's output concatenated
        along features, ``(P, L * D)``."""
        tracer = Tracer(keep_attention=False, keep_blocks=True, layers=())
        with torch.no_grad(), self.adapter.trace(tracer):
            logits = self.adapter.forward(image, *args)
        graph = self._graph(image)
        # the blocks whose every token is a query: all of a ViT's; CaiT's
        # self-attention blocks (its class-attention blocks update the class
        # token only, the patches pass them unchanged)
        full = [i for i, lw in enumerate(graph.layers) if lw.queries is None]
        npre = graph.stages[0].num_prefix_tokens
        z = torch.cat([tracer.block_outputs[i] for i in full], dim=-1)
        return logits, z[0, npre:]

    def masks(self, activations: Tensor) -> List[Tensor]:
        """Kept patch indices per ratio: a list of ``(M, floor(r * P))``
        tensors, from the activations ``(P, L * D)`` of one image."""
        points = activations.T  # (L * D, P): one map over the patches per column
        k = min(self.n_masks, points.shape[0])
        g = torch.Generator().manual_seed(self.seed)
        init = torch.randperm(points.shape[0], generator=g)[:k].to(points.device)
        centroids = kmeans(points, points[init], self.max_iter, self.tol)
        P = points.shape[1]
        return [
            centroids.topk(max(1, int(r * P)), dim=1).indices for r in self.tokens_ratio
        ]

    def scores(
        self,
        image: Tensor,
        target: int,
        masks: Sequence[Tensor],
        args: tuple = (),
        internal_batch_size: Optional[int] = None,
    ) -> List[Tensor]:
        """Softmax probability of ``target`` for every token subset of
        ``masks`` (as returned by :meth:`masks`), one ``(M,)`` tensor per
        ratio, ``internal_batch_size`` subsets per forward pass (None: the
        constructor's)."""
        tracer = _TokenSampler(self._graph(image).stages[0].num_prefix_tokens)
        bs = check_internal_batch_size(internal_batch_size, self.internal_batch_size)
        out = []
        bar = self._progress(sum(len(m) for m in masks), "TIS token subsets")
        with bar, torch.no_grad(), self.adapter.trace(tracer):
            for index in masks:
                s = []
                for rows in chunks(index.shape[0], bs):
                    tracer.index = index[rows]
                    logits = self.adapter.forward(image, *args)
                    dtype = torch.promote_types(logits.dtype, torch.float32)
                    s.append(logits.to(dtype).softmax(dim=-1)[:, target])
                    bar.update(logits.shape[0])
                out.append(torch.cat(s))
        return out

    @staticmethod
    def saliency(scores: Sequence[Tensor], masks: Sequence[Tensor], P: int) -> Tensor:
        r""":math:`S(j) = \sum_m s_m b_{mj} / \sum_m b_{mj}` over all masks of
        all ratios, ``(P,)``; 0 where no mask keeps patch :math:`j`."""
        s = torch.cat(list(scores)).double()
        binary = torch.cat(
            [
                torch.zeros(len(m), P, dtype=s.dtype, device=s.device).scatter_(
                    1, m, 1.0
                )
                for m in masks
            ]
        )
        cover = binary.sum(dim=0)
        total = s @ binary
        return torch.where(
            cover > 0, total / cover.clamp_min(1), torch.zeros_like(total)
        )

    def _attribute_copies(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple, bs: Optional[int]
    ) -> Tensor:
        maps = []
        B = inputs.shape[0]
        for b in range(B):
            image = inputs[b : b + 1]
            args_b = select_rows(args, slice(b, b + 1), B)
            logits, z = self.activations(image, args_b)
            t = int(logits[0].argmax() if target is None else target[b])
            masks = self.masks(z)
            scores = self.scores(image, t, masks, args_b, bs)
            sal = self.saliency(scores, masks, z.shape[0])
            maps.append(sal.to(torch.promote_types(inputs.dtype, torch.float32)))
        return torch.stack(maps)
