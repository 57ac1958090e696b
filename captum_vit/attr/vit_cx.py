"""ViT-CX: causal explanation of Vision Transformers (Xie et al., 2022)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._batching import chunks, select_rows
from .._maps import min_max
from ..adapters import Tracer
from ._base import CopiesAttribution
from ._registry import register_method


def cluster_masks(masks: Tensor, distance_threshold: float) -> Tensor:
    """Agglomerative (complete-linkage) clustering of masks ``(D, S)`` on the
    cosine distance, merged while the distance is below the threshold; each
    cluster is the min-max normalised sum of its masks. Clusters are ordered
    by their smallest member index. Returns ``(K, S)``."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    m = masks.double()
    norm = m.norm(dim=1)
    sim = (m @ m.T) / (norm[:, None] * norm[None, :])
    sim = torch.nan_to_num(sim, nan=0.0, posinf=0.0, neginf=0.0)
    dist = (1.0 - sim).clamp_min(0.0).cpu().numpy()
    dist = (dist + dist.T) / 2
    np.fill_diagonal(dist, 0.0)
    D = dist.shape[0]
    if D == 1:
        labels = np.zeros(1, dtype=np.int64)
    else:
        Z = linkage(squareform(dist, checks=False), method="complete")
        # scikit-learn's distance_threshold merges while distance < threshold;
        # fcluster keeps merges with distance <= t
        t = np.nextafter(float(distance_threshold), -np.inf)
        labels = fcluster(Z, t=t, criterion="distance")
    order: Dict[int, int] = {}
    for lab in labels.tolist():
        order.setdefault(lab, len(order))  # first (smallest) member's order
    idx = torch.tensor([order[lab] for lab in labels.tolist()], device=masks.device)
    summed = torch.zeros(len(order), masks.shape[1], dtype=masks.dtype)
    summed = summed.to(masks.device).index_add_(0, idx, masks)
    return min_max(summed)


@register_method("vit_cx")
class ViTCX(CopiesAttribution):
    r"""ViT-CX of Xie, Li, Zhang, Lin and Chen (2022, "ViT-CX: Causal
    Explanation of Vision Transformers", https://arxiv.org/abs/2211.03064).

    1. **Masks from embeddings.** The patch tokens of the target layer
       (prefix tokens dropped) are read as :math:`D` feature maps on the
       patch grid, upsampled bilinearly to the image and min-max normalised
       to :math:`[0, 1]`: one mask per embedding channel.
    2. **Clustering.** Masks are merged by agglomerative clustering with
       complete linkage on the cosine distance :math:`1 - \cos(M_a, M_b)`,
       while the merge distance is below ``distance_threshold``; a cluster's
       mask is the min-max normalised sum of its members. This leaves
       :math:`K \le D` masks.
    3. **Causal impact with the sampling correction.** With Gaussian noise
       :math:`n_k \sim \mathcal N(0, \sigma^2)` and :math:`p` the softmax
       probability of the target,

       .. math::
           s_k = p\big(x \odot M_k + n_k \odot (1 - M_k)\big)
                 - p\big(x + n_k \odot (1 - M_k)\big) + p(x),

       .. math::
           \mathrm{sal}(u) = \frac{1}{K}\sum_k s_k\,
               \frac{M_k(u)}{\sum_j M_j(u)}

       The second term is the correction for the noise the masking adds;
       dividing by the pixel's total coverage :math:`\sum_j M_j(u)` corrects
       for pixels covered by many masks (the "sampling correction"; both as
       in the authors' code, github.com/vaynexie/CausalX-ViT).

    Choices: the target layer's tokens are those the authors' default
    ``target_layer=model.blocks[-1].norm1`` produces, i.e. the block's first
    norm applied to its input (the adapter's ``norm1`` on the recorded
    block input), for any family; for residual post-norm blocks (Swin v2,
    whose ``norm1`` follows the attention) the block input itself. On a
    hierarchical model (Swin) the masks are the feature maps of the target
    block's stage grid (7x7 for the last stage of Swin-T at 224 px),
    upsampled to the image like the patch grid of a plain ViT. On a
    class-attention model (CaiT) the last block is a class-attention block,
    which updates only the class token: its ``norm1`` reads the class token
    and the patch tokens leaving the last self-attention block, and the
    masks are those patch tokens after that ``norm1`` (a per-token norm);
    the masked images run through the whole model, so nothing else depends
    on the class token's layers (which layers have a query subset comes from
    the token graph, ``docs/token_graph.rst``, "CaiT: two phases"). The
    clustering is scipy's complete-linkage hierarchy cut strictly below the
    threshold (scikit-learn's
    ``AgglomerativeClustering(distance_threshold=...)`` semantics), clusters
    ordered by their first member. The noise is drawn from a generator
    seeded with ``seed`` for every image, so results are reproducible and
    independent of the batch; the :math:`2K` masked forwards of an image are
    batched ``internal_batch_size`` at a time (``attribute``'s, else the
    constructor's; the public code runs one image at a time). Constant feature maps give all-zero masks (the
    authors' code divides by zero there). The map is pixel-level:
    ``output="input"`` returns it over all channels, ``output="tokens"``
    averages it over each patch.

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        target_layer (int, optional): the block whose ``norm1`` output gives
            the masks; negative counts from the end. Default: None (the
            last block)
        distance_threshold (float, optional): cosine-distance threshold of
            the clustering, in ``[0, 2]``. Default: 0.1
        noise_std (float, optional): :math:`\sigma` of the noise, in the
            model's input space. Default: 0.1
        internal_batch_size (int, optional): masked images per forward pass
            when ``attribute`` is called without ``internal_batch_size``
            (which then wins). Default: 64
        seed (int, optional): seed of the noise. Default: 0
        show_progress (bool, optional): tqdm progress bar over the forward
            passes. Default: False
        interpolate_mode (str, optional): unused for the pixel map (kept for
            the common constructor signature). Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> cx = cv.ViTCX(model, distance_threshold=0.1, internal_batch_size=32)
        >>> attr = cx.attribute(torch.randn(1, 3, 224, 224), target=3)
        >>> attr.shape
        torch.Size([1, 3, 224, 224])
    """

    _attribute_returns = "pixels"
    _token_reduce = "mean"
    _any_graph = True
    _class_attention = True

    _default_batch_size = 64

    def __init__(
        self,
        model: nn.Module,
        target_layer: Optional[int] = None,
        distance_threshold: float = 0.1,
        noise_std: float = 0.1,
        internal_batch_size: int = 64,
        seed: int = 0,
        show_progress: bool = False,
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, internal_batch_size, show_progress, interpolate_mode)
        self.target_layer = self._layer_index(target_layer)
        if not 0.0 <= float(distance_threshold) <= 2.0:
            raise ValueError(
                f"distance_threshold must be in [0, 2], got {distance_threshold}"
            )
        if float(noise_std) < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.distance_threshold = float(distance_threshold)
        self.noise_std = float(noise_std)
        self.seed = int(seed)

    def _attribute_copies(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple, bs: Optional[int]
    ) -> Tensor:
        saliency = self.saliency(inputs, target, args, bs)
        return saliency[:, None]  # (B, 1, H, W)

    # ------------------------------------------------------------- internals
    def masks(self, inputs: Tensor, args: tuple = ()) -> Tuple[Tensor, Tensor]:
        """``(masks, probs)``: the un-clustered masks ``(B, D, H, W)`` and the
        softmax probabilities ``(B, classes)`` of the clean images."""
        tracer = Tracer(keep_attention=False, keep_blocks=True, layers=())
        with torch.no_grad(), self.adapter.trace(tracer):
            logits = self.adapter.forward(inputs, *args)
            parts = self.adapter.block_parts(self.target_layer)
            graph = self._graph(inputs)
            feats, s = self._grid_tokens(tracer, graph, self.target_layer)
            if not parts.post_norm:
                feats = parts.norm1(feats)
        B, H, W = inputs.shape[0], inputs.shape[-2], inputs.shape[-1]
        stage = graph.stages[s]
        npre, (gh, gw) = stage.num_prefix_tokens, stage.grid
        fmap = feats[:, npre:].transpose(1, 2).reshape(B, -1, gh, gw).float()
        up = F.interpolate(fmap, size=(H, W), mode="bilinear", align_corners=False)
        masks = min_max(up.flatten(2).flatten(0, 1)).reshape(B, -1, H, W)
        return masks, logits.float().softmax(dim=-1)

    def saliency(
        self,
        inputs: Tensor,
        target: Optional[Tensor] = None,
        args: tuple = (),
        internal_batch_size: Optional[int] = None,
    ) -> Tensor:
        """Pixel saliency ``(B, H, W)`` of ``target`` (LongTensor ``(B,)``,
        None: the predicted class) with the extra forward arguments ``args``;
        masked images are evaluated ``internal_batch_size`` at a time (None:
        the constructor's)."""
        bs = internal_batch_size or self.internal_batch_size
        masks, probs = self.masks(inputs, args)
        if target is None:
            target = probs.argmax(dim=-1)
        target = target.to(inputs.device)
        B, C, H, W = inputs.shape
        clustered = [
            cluster_masks(masks[b].flatten(1), self.distance_threshold).reshape(
                -1, H, W
            )
            for b in range(B)
        ]
        out = []
        with self._progress(sum(2 * m.shape[0] for m in clustered), "ViT-CX") as bar:
            for b in range(B):
                M = clustered[b].to(inputs.dtype)  # (K, H, W)
                K = M.shape[0]
                g = torch.Generator(device=inputs.device).manual_seed(self.seed)
                noise = torch.randn(
                    (K, C, H, W), generator=g, device=inputs.device, dtype=inputs.dtype
                )
                noise = noise * self.noise_std * (1 - M[:, None])
                x = inputs[b]
                t = int(target[b])
                # a tensor argument with the batch dimension: image b's row,
                # repeated for every masked copy (Captum's expansion)
                args_b = select_rows(args, torch.full((K,), b), B)
                p_masked = self._probs(x * M[:, None] + noise, t, args_b, bs, bar)
                p_noisy = self._probs(x + noise, t, args_b, bs, bar)
                s = p_masked - p_noisy + probs[b, t]
                cover = M.sum(dim=0)
                share = torch.where(cover > 0, M / cover.clamp_min(1e-30), 0 * M)
                out.append(torch.einsum("k,khw->hw", s.to(M.dtype), share) / K)
        return torch.stack(out)

    def _probs(
        self, images: Tensor, t: int, args: tuple, batch_size: Optional[int], bar: Any
    ) -> Tensor:
        ps = []
        with torch.no_grad():
            for rows in chunks(images.shape[0], batch_size):
                chunk = images[rows]
                logits = self.adapter.forward(
                    chunk, *select_rows(args, rows, images.shape[0])
                )
                ps.append(logits.float().softmax(dim=-1)[:, t])
                bar.update(chunk.shape[0])
        return torch.cat(ps)
