"""Adapter for Hugging Face ``SwinForImageClassification`` and
``Swinv2ForImageClassification`` (transformers 5).

The explicit forwards reproduce ``SwinLayer.forward`` / ``Swinv2Layer.forward``
(pad to whole windows, cyclic shift, window partition and the shift mask, in
that order) and the attention cores ``SwinAttention.forward`` (any attention
implementation) / ``Swinv2SelfAttention.forward`` (cosine attention, the
continuous position bias; the shift mask is added twice, as that code does),
with the attention core and the residual sums routed through a
:class:`~captum_vit.adapters.Tracer`. Swin v1's layers shrink their window to
a stage grid no larger than it (``set_shift_and_window_size``); the explicit
forward computes the same window without writing it onto the module.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import BlockParts, EmbeddingParts, HeadParts, Tracer, UnsupportedModelError
from ._parts import is_transformers, pair, routed_block
from ._swin import Pair, SwinAdapter

# class name -> backbone attribute
_CLASSIFIERS = {
    "SwinForImageClassification": "swin",
    "Swinv2ForImageClassification": "swinv2",
}


def _partition(x: Tensor, window: int) -> Tensor:
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)
    return x.transpose(2, 3).reshape(-1, window * window, C)


def _reverse(windows: Tensor, window: int, H: int, W: int) -> Tensor:
    C = windows.shape[-1]
    x = windows.view(-1, H // window, W // window, window, window, C)
    return x.transpose(2, 3).reshape(-1, H, W, C)


def _shift_mask(
    H: int, W: int, window: int, shift: int, dtype: torch.dtype, device: Any
) -> Optional[Tensor]:
    """``SwinLayer.get_attn_mask`` for an explicit window and shift."""
    if shift <= 0:
        return None
    h = torch.arange(H, device=device)
    w = torch.arange(W, device=device)
    hr = (h >= H - window).long() + (h >= H - shift).long()
    wr = (w >= W - window).long() + (w >= W - shift).long()
    img = (hr[None, :, None, None] * 3 + wr[None, None, :, None]).to(dtype)
    m = _partition(img, window).squeeze(-1)
    m = m.unsqueeze(1) - m.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


class HFSwinAdapter(SwinAdapter):
    """Adapter for ``transformers`` ``SwinForImageClassification`` and
    ``Swinv2ForImageClassification``."""

    family = "transformers SwinForImageClassification / Swinv2ForImageClassification"
    pad_first = True

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return is_transformers(model, _CLASSIFIERS)

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self.v2 = type(model).__name__ == "Swinv2ForImageClassification"
        self._backbone = getattr(model, _CLASSIFIERS[type(model).__name__])
        self._config = model.config
        if self._backbone.pooler is None or isinstance(model.classifier, nn.Identity):
            raise UnsupportedModelError(
                "this Swin classifier has no pooler or no classifier (num_labels=0)"
            )
        self._number_blocks(stage.blocks for stage in self._backbone.encoder.layers)
        cores = [self._core(b) for b in self._blocks]
        self._make_cosine((at.attention_head_size, at.logit_scale) for at in cores)

    # ------------------------------------------------------------ description
    @property
    def patch_size(self) -> Pair:
        return pair(self._config.patch_size)

    @property
    def num_classes(self) -> int:
        return int(self._config.num_labels)

    def layer_heads(self, layer: int) -> int:
        return int(self._core(self._blocks[layer]).num_attention_heads)

    def window_shift(self, layer: int, grid: Pair) -> Tuple[Pair, Pair]:
        window, shift = self._window(self._blocks[layer], grid)
        return (window, window), (shift, shift)

    def _window(self, blk: Any, grid: Pair) -> Tuple[int, int]:
        window, shift = int(blk.window_size), int(blk.shift_size)
        if not self.v2 and min(grid) <= window:  # SwinLayer.set_shift_and_window_size
            return int(min(grid)), 0
        return window, shift

    def _core(self, blk: Any) -> Any:
        return blk.attention.self if self.v2 else blk.attention

    def block_parts(self, layer: int) -> BlockParts:
        blk = self._blocks[layer]
        at = self._core(blk)
        if self.v2:
            qkv = [at.query, at.key, at.value]
            proj = blk.attention.output.dense
            mlp = [blk.intermediate.dense, blk.intermediate.intermediate_act_fn]
            mlp.append(blk.output.dense)
        else:
            qkv = [at.q_proj, at.k_proj, at.v_proj]
            proj = at.o_proj
            mlp = [blk.mlp.fc1, blk.mlp.activation_fn, blk.mlp.fc2]
        norm1, norm2 = blk.layernorm_before, blk.layernorm_after
        mlp = [m for m in mlp if isinstance(m, nn.Module)]
        v2 = self._v2_roles(layer)
        return BlockParts(blk, at, norm1, norm2, qkv, proj, mlp, **v2)

    def between_parts(self) -> List[nn.Module]:
        out: List[nn.Module] = []
        for stage in self._backbone.encoder.layers:
            if stage.downsample is not None:
                out += [stage.downsample.norm, stage.downsample.reduction]
        return out

    def embedding_parts(self) -> EmbeddingParts:
        emb = self._backbone.embeddings
        return EmbeddingParts(emb.patch_embeddings.projection, emb.norm)

    def head_parts(self) -> HeadParts:
        return HeadParts(self._backbone.layernorm, [self.model.classifier])

    def grid_size(self, image_size: Pair) -> Pair:
        ph, pw = self.patch_size
        return (-(-image_size[0] // ph), -(-image_size[1] // pw))

    def check_image_size(self, image_size: Pair) -> None:
        size = pair(self._config.image_size)
        if self._backbone.embeddings.position_embeddings is not None:
            if tuple(image_size) != size:
                raise ValueError(
                    f"this transformers Swin has absolute position embeddings for "
                    f"{size[0]}x{size[1]} images, got {image_size[0]}x{image_size[1]}"
                )
        grids = self.stage_grids(image_size)
        for layer, blk in enumerate(self._blocks):
            grid = grids[self._stages[layer]]
            window, _ = self._window(blk, grid)
            at = self._core(blk)
            at = at if self.v2 else at.relative_position_bias
            table = int(at.relative_position_index.numel())
            if window * window * window * window != table:
                raise ValueError(
                    f"image size {image_size[0]}x{image_size[1]} gives block "
                    f"{layer} a {grid[0]}x{grid[1]} grid, whose {window}x{window} "
                    "window does not match the model's relative position table: "
                    f"use images of at least {size[0]}x{size[1]}"
                )

    def _call_model(self, inputs: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        out = self.model(inputs, *args, **kwargs)
        return out.logits if hasattr(out, "logits") else out[0]

    # ----------------------------------------------------------------- tracing
    def _block_forward(
        self, layer: int, blk: Any, tracer: Tracer
    ) -> Callable[..., Any]:
        adapter = self
        v2 = self.v2
        norms = (blk.layernorm_before, blk.layernorm_after)

        def windows(x: Tensor, dims: Pair) -> Tensor:
            # pad, shift, attend within windows, unshift, crop: (B, H * W, C)
            H, W = dims
            B, _, C = x.shape
            window, shift = adapter._window(blk, dims)
            x = x.view(B, H, W, C)
            x = F.pad(x, (0, 0, 0, (-W) % window, 0, (-H) % window))
            Hp, Wp = x.shape[1:3]
            if shift > 0:
                x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            mask = _shift_mask(Hp, Wp, window, shift, x.dtype, x.device)
            out = blk.attention(_partition(x, window), mask)[0]
            if not v2:
                out = blk.dropout(out)
            out = _reverse(out.view(-1, window, window, C), window, Hp, Wp)
            if shift > 0:
                out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
            return out[:, :H, :W, :].reshape(B, H * W, C)

        def forward_v1(
            hidden_states: Tensor,
            input_dimensions: Pair,
            always_partition: bool = False,
            **kwargs: Any,
        ) -> Tuple[Tensor, None]:
            if always_partition:
                raise NotImplementedError("always_partition=True is not supported")

            def attend(a: Tensor) -> Tensor:
                return windows(a, input_dimensions)

            branches = (blk.drop_path, blk.dropout)
            x = routed_block(
                layer, tracer, hidden_states, attend, blk.mlp, norms, branches
            )
            return x, None

        def forward_v2(
            hidden_states: Tensor,
            input_dimensions: Pair,
            output_attentions: bool = False,
        ) -> Tuple[Tensor]:
            def attend(a: Tensor) -> Tensor:
                return windows(a, input_dimensions)

            def mlp(x: Tensor) -> Tensor:
                return blk.output(blk.intermediate(x))

            branches = (blk.drop_path, blk.drop_path)  # v2: the norms come after
            x = routed_block(
                layer, tracer, hidden_states, attend, mlp, norms, branches, True
            )
            return (x,)

        return forward_v2 if v2 else forward_v1

    def _attention_forward(
        self, layer: int, at: Any, tracer: Tracer
    ) -> Callable[..., Any]:
        def dropout_v1(a: Tensor) -> Tensor:
            return F.dropout(a, p=at.attention_dropout, training=at.training)

        def forward_v1(
            hidden_states: Tensor,
            attention_mask: Optional[Tensor] = None,
            **kwargs: Any,
        ) -> Tuple[Tensor, None]:
            shape = (*hidden_states.shape[:-1], -1, at.head_dim)
            q = at.q_proj(hidden_states).view(shape).transpose(1, 2)
            k = at.k_proj(hidden_states).view(shape).transpose(1, 2)
            v = at.v_proj(hidden_states).view(shape).transpose(1, 2)
            bias = at.relative_position_bias()
            mask = self.bias_and_mask(bias, attention_mask, hidden_states.shape[0])
            active = at.training and at.attention_dropout > 0
            o = tracer.attention(
                layer,
                q,
                k,
                v,
                at.scaling,
                mask=mask,
                dropout=dropout_v1 if active else None,
            )
            o = o.transpose(1, 2).reshape(*hidden_states.shape[:-1], -1)
            return at.o_proj(o), None

        def forward_v2(
            hidden_states: Tensor,
            attention_mask: Optional[Tensor] = None,
            output_attentions: bool = False,
        ) -> Tuple[Tensor]:
            B_, n, _ = hidden_states.shape
            H, d = at.num_attention_heads, at.attention_head_size
            q = at.query(hidden_states).view(B_, -1, H, d).transpose(1, 2)
            k = at.key(hidden_states).view(B_, -1, H, d).transpose(1, 2)
            v = at.value(hidden_states).view(B_, -1, H, d).transpose(1, 2)
            q_norm, k_norm = self._cosine[layer]  # cosine attention
            q, k = q_norm(q), k_norm(k)
            table = at.continuous_position_bias_mlp(at.relative_coords_table)
            table = table.view(-1, H)[at.relative_position_index.view(-1)]
            bias = table.view(n, n, -1).permute(2, 0, 1).contiguous()
            bias = 16 * torch.sigmoid(bias)[None]
            # Swinv2SelfAttention adds the shift mask twice
            mask = self.bias_and_mask(bias, attention_mask, B_, repeat=2)
            drop = at.dropout if at.dropout.training and at.dropout.p > 0 else None
            o = tracer.attention(layer, q, k, v, 1.0, mask=mask, dropout=drop)
            return (o.permute(0, 2, 1, 3).reshape(B_, n, H * d),)

        return forward_v2 if self.v2 else forward_v1

    def _end_forwards(self, tracer: Tracer) -> List[Tuple[Any, str, Any]]:
        backbone = self._backbone

        def pooler_forward(x: Tensor) -> Tensor:
            # nn.AdaptiveAvgPool1d(1) on (B, C, N), the mean routed
            w = self._pool_rows(x.new_zeros(x.shape[-1]))[0]
            return tracer.pool(x.transpose(1, 2), w)[..., None]

        return [(backbone.pooler, "forward", pooler_forward)]
