"""ViT-ReciproCAM: gradient- and attention-free CAM (Byun & Lee, 2023)."""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._batching import chunks, select_rows
from ..adapters import Tracer
from ._base import CopiesAttribution
from ._registry import register_method

#: the paper's 3x3 Gaussian neighbourhood (centre 1/4, edges 1/8, corners 1/16)
GAUSSIAN_3X3 = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16


def mosaic_masks(gh: int, gw: int, use_gaussian: bool = True) -> Tensor:
    """Token weights of the :math:`P = g_h g_w` masked copies, ``(P, P)``.

    Row :math:`k` weighs the patch tokens of copy :math:`k`: the 3x3 Gaussian
    centred on patch :math:`k` (cut at the grid's border, not renormalised),
    or the one-hot of patch :math:`k` with ``use_gaussian=False``.
    """
    eye = torch.eye(gh * gw).reshape(gh * gw, 1, gh, gw)
    if not use_gaussian:
        return eye.flatten(1)
    return F.conv2d(eye, GAUSSIAN_3X3[None, None], padding=1).flatten(1)


class _MosaicTracer(Tracer):
    """Multiplies the chosen block's residual input and attention input by
    the token weights ``masks`` ``(C, N)``, turning one image into ``C``
    masked copies (a ``(1, N, D)`` input broadcasts to ``(C, N, D)``). In a
    layer whose only queries are ``queries`` (CaiT's class attention) the
    residual stream holds those tokens alone: their weights apply to it,
    and the tokens it reads besides, the output of block ``source``, are
    broadcast to the copies there."""

    def __init__(
        self, layer: int, queries: Optional[Tensor] = None, source: int = -1
    ) -> None:
        super().__init__(keep_attention=False, layers=())
        self.layer = layer
        self.queries = queries
        self.source = source
        self.masks: Optional[Tensor] = None

    def block_output(self, layer: int, x: Tensor) -> Tensor:
        if layer != self.source or self.masks is None:
            return x
        return x.expand(self.masks.shape[0], *x.shape[1:])

    def _masked(self, x: Tensor, residual: bool = False) -> Tensor:
        assert self.masks is not None, "set masks before the forward pass"
        m = self.masks
        if residual and self.queries is not None:
            m = m[:, self.queries.to(m.device)]
        return m[:, :, None].to(x.dtype) * x

    def attention_input(self, layer: int, x: Tensor) -> Tensor:
        return self._masked(x) if layer == self.layer else x

    def residual(self, layer: int, index: int, x: Tensor, branch: Tensor) -> Tensor:
        if layer != self.layer or index != 0:
            return x + branch
        return self._masked(x, residual=True) + branch


@register_method("vit_reciprocam")
class ViTReciproCAM(CopiesAttribution):
    r"""ViT-ReciproCAM of Byun and Lee (2023, "ViT-ReciproCAM: Gradient and
    Attention-Free Visual Explanations for Vision Transformer",
    https://arxiv.org/abs/2310.02588): no gradient and no attention map, only
    forward passes of the last block(s) and the head on spatially masked
    copies of the tokens.

    Let :math:`x \in \mathbb{R}^{N \times D}` be the tokens entering block
    :math:`\ell` (``layer``, the last block by default), :math:`P` the number
    of patch tokens on the :math:`g_h \times g_w` grid and :math:`G` the 3x3
    Gaussian kernel :math:`\frac{1}{16}\begin{psmallmatrix}1&2&1\\2&4&2\\
    1&2&1\end{psmallmatrix}`. Copy :math:`k` weighs token :math:`j` by

    .. math::
        m_{kj} = \begin{cases}
            1 & j \text{ a prefix token (class, distillation, register)} \\
            G\big(\mathrm{pos}(j) - \mathrm{pos}(k)\big) & j \text{ a patch
            token within the 3x3 neighbourhood of patch } k \\
            0 & \text{otherwise,}
        \end{cases}

    and block :math:`\ell` runs on the masked copy with the mask applied
    *after* its first norm (the norm would undo a scaling of its input) and on
    the residual stream,

    .. math::
        u_k = m_k \odot x + \mathrm{Attn}\big(m_k \odot \mathrm{LN}_1(x)\big),
        \qquad
        y_k = u_k + \mathrm{MLP}\big(\mathrm{LN}_2(u_k)\big),

    followed by the remaining blocks and the head. The map is the target
    logit of each copy, :math:`S_t(k) = f_t(y_k)`, one score per patch.

    Choices, read from openvino-xai's ``ViTReciproCAM`` (Intel, the authors'
    company; the paper's method section could not be read here):

    * **Target layer**: the first norm of the last block, i.e. ``layer=-1``
      (openvino-xai's ``k=1``); the class (and every other prefix) token is
      kept at weight 1 (``use_cls_token=True``); the 3x3 Gaussian above
      (``use_gaussian=True``); ``use_gaussian=False`` keeps the patch alone.
    * **Residual stream**: masked too, as openvino-xai's OpenVINO-graph
      version does (its PyTorch version leaves it unmasked). For
      class-token models at the last block both give the same map, since the
      head reads only the class token, whose residual is kept.
    * **Scores**: the raw logit of the target class (openvino-xai takes the
      node before the softmax). openvino-xai then scales each map to
      ``[0, 255]`` for display (``embed_scaling``); this method returns the
      logits, so maps of different images keep their scale.

    Class-attention models (CaiT), where the token graph gives the block a
    subset of queries (the class token): the default ``layer=-1`` masks the
    last class-attention block. Its input tokens are the class token (its
    residual stream, kept at weight 1) and the patches leaving the last
    self-attention block, which it reads after its first norm: :math:`m_k`
    multiplies that norm's output (the class token kept), i.e. the keys and
    values of the class query, and the head reads the class token it
    updates — the ViT definition above, whose class-token output is all the
    head reads. A self-attention block's input is masked as on a ViT (no
    prefix token: the class token joins later), and the masked patches run
    through the later self-attention blocks and the class-attention phase.
    An earlier class-attention block is refused: the patches it would mask
    are not carried on by it (only the class token is), and each later
    class-attention block reads them anew through its own norm.

    Agreement with openvino-xai 1.1.0 (its outputs on a tiny random timm ViT
    are kept in ``tests/attr/data/vit_reciprocam`` with the script that made
    them), with ``embed_scaling=False``, every class: its OpenVINO version
    (float32 inference) differs by at most 5.3e-7 of the map's largest
    magnitude (class-token and average-pooled models, each switch); its
    PyTorch version (class-token model) gives identical maps.

    Batching: the :math:`P + 1` copies of one image (the unmasked one gives
    the predicted class for ``target=None``) run through block :math:`\ell`
    and the rest of the model in passes of ``internal_batch_size`` copies
    (``attribute``'s, else the constructor's); the blocks before :math:`\ell` run once per pass on the single image. Images
    of a batch are explained one after the other, so a sample's result never
    depends on its batch.

    Args:
        model (torch.nn.Module): a stock Vision Transformer or an adapter.
        layer (int, optional): the block whose input tokens are masked;
            negative counts from the end. Default: -1
        use_gaussian (bool, optional): the 3x3 Gaussian neighbourhood; False
            keeps only the centre token at weight 1. Default: True
        use_cls_token (bool, optional): keep the prefix tokens (class,
            distillation, register) in every copy; False zeroes them.
            Default: True
        internal_batch_size (int, optional): masked copies per forward pass
            when ``attribute`` is called without ``internal_batch_size``
            (which then wins); ``None`` runs all :math:`P + 1` copies of an
            image in one pass. Default: None
        show_progress (bool, optional): tqdm progress bar over the passes.
            Default: False
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import timm, torch, captum_vit as cv
        >>> model = timm.create_model("vit_tiny_patch16_224").eval()
        >>> cam = cv.ViTReciproCAM(model, internal_batch_size=64)
        >>> attr = cam.attribute(torch.randn(2, 3, 224, 224), output="tokens")
        >>> attr.shape
        torch.Size([2, 14, 14])
    """

    _plain_only = (
        "ViT-ReciproCAM masks 3x3 neighbourhoods of one token grid entering a "
        "block, keeping the class token, and its map is that grid; in this model "
        "a late block's tokens are a coarser grid made by patch merging (each a "
        "mix of several image patches), attended within windows, so a mask on "
        "them is not a mask on image patches"
    )
    _class_attention = True

    def __init__(
        self,
        model: nn.Module,
        layer: int = -1,
        use_gaussian: bool = True,
        use_cls_token: bool = True,
        internal_batch_size: Optional[int] = None,
        show_progress: bool = False,
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, internal_batch_size, show_progress, interpolate_mode)
        self.layer = self._layer_index(layer)
        self.use_gaussian = bool(use_gaussian)
        self.use_cls_token = bool(use_cls_token)

    def token_masks(
        self,
        grid: Tuple[int, int],
        device: Union[str, torch.device, None] = None,
        num_prefix_tokens: Optional[int] = None,
    ) -> Tensor:
        """Token weights ``(1 + P, N)``: row 0 keeps every token (the unmasked
        copy), row ``1 + k`` is the mask :math:`m_k` of patch ``k``; the
        first ``num_prefix_tokens`` tokens are prefix tokens (None: the
        model's; the stage of the masked block says, on CaiT)."""
        npre = (
            self.adapter.num_prefix_tokens
            if num_prefix_tokens is None
            else num_prefix_tokens
        )
        gh, gw = grid
        P = gh * gw
        m = torch.ones(1 + P, npre + P, device=device)
        m[1:, :npre] = 1.0 if self.use_cls_token else 0.0
        m[1:, npre:] = mosaic_masks(gh, gw, self.use_gaussian).to(device)
        return m

    def _attribute_copies(
        self, inputs: Tensor, target: Optional[Tensor], args: tuple, bs: Optional[int]
    ) -> Tensor:
        H, W = inputs.shape[-2:]
        graph = self._graph(inputs)
        lw = graph.layers[self.layer]
        if lw.queries is not None and self.layer != len(graph.layers) - 1:
            raise ValueError(
                f"ViTReciproCAM masks the tokens entering block {self.layer}, a "
                "class-attention block that is not the last: the patch tokens it "
                "masks leave its residual stream (only the class token is "
                "carried on) and every later class-attention block reads them "
                "anew through its own norm, so the mask would not reach those "
                "blocks as the definition has it; choose the last block "
                "(layer=-1) or a self-attention block"
            )
        npre = graph.stages[lw.stage].num_prefix_tokens
        masks = self.token_masks(self.adapter.grid_size((H, W)), inputs.device, npre)
        B, R = inputs.shape[0], masks.shape[0]
        source = -1
        if lw.queries is not None:  # the copies of the tokens it reads
            source = self._grid_source(graph, self.layer)[0]
        tracer = _MosaicTracer(self.layer, lw.queries, source)
        dtype = torch.promote_types(inputs.dtype, torch.float32)
        out = torch.empty(B, R, dtype=dtype, device=inputs.device)
        bar = self._progress(B * R, "ViT-ReciproCAM copies")
        with bar, torch.no_grad(), self.adapter.trace(tracer):
            for b in range(B):
                args_b = select_rows(args, slice(b, b + 1), B)
                for rows in chunks(R, bs):
                    tracer.masks = masks[rows]
                    logits = self.adapter.forward(inputs[b : b + 1], *args_b)
                    if rows.start == 0:
                        t = int(logits[0].argmax() if target is None else target[b])
                    out[b, rows] = logits[:, t]
                    bar.update(logits.shape[0])
        return out[:, 1:]
