"""A naive, dense Swin forward on a timm state dict, written from the papers.

Independent of captum_vit's adapters and of the models' window code: every
layer's attention is a dense ``(B, heads, N, N)`` matrix over the stage's
tokens in their own (row-major) order, with ``-inf`` between tokens of
different windows. The cyclic shift is a permutation: token ``(r, c)`` sits
at ``((r - s) mod H, (c - s) mod W)`` in the shifted frame, whose windows,
positions within windows (for the relative position bias) and shift-mask
regions (Swin's three bands per axis, -100 between different bands) are
computed from that position. Patch merging concatenates the 2x2 neighbours
(timm's channel order) and its dense merge map ``P`` ``(N_{s+1}, N_s)`` has
1/4 at the four sources. Swin v2: cosine attention with the clamped logit
scale, ``16 sigmoid`` of the continuous position bias MLP on log-spaced
relative coordinates, residual post-norm, merging norm after the reduction.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
import torch.nn.functional as F


def _geometry(grid, window, shift):
    """Per token (row-major): window id, position inside the window (r, c)
    and shift-mask region label, all in the shifted frame."""
    H, W = grid
    wh, ww = window
    sh, sw = shift
    r, c = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    rs, cs = (r - sh) % H, (c - sw) % W
    win = (rs // wh) * (W // ww) + cs // ww
    pos = torch.stack([rs % wh, cs % ww], -1)

    def band(x, n, w, s):
        return (x >= n - w).long() + (x >= n - s).long() if s else torch.zeros_like(x)

    region = band(rs, H, wh, sh) * 3 + band(cs, W, ww, sw)
    return win.flatten(), pos.reshape(-1, 2), region.flatten()


def _log_coords(window) -> torch.Tensor:
    """Swin v2's log-spaced relative coordinates ``(2wh-1, 2ww-1, 2)``."""
    wh, ww = window
    dh = torch.arange(-(wh - 1), wh, dtype=torch.float64) / max(wh - 1, 1)
    dw = torch.arange(-(ww - 1), ww, dtype=torch.float64) / max(ww - 1, 1)
    t = torch.stack(torch.meshgrid(dh, dw, indexing="ij"), -1) * 8
    return torch.sign(t) * torch.log2(t.abs() + 1.0) / math.log2(8)


def _attention(sd, b, y, heads, grid, window, shift, v2):
    B, N, D = y.shape
    d = D // heads
    if v2:
        bias = torch.cat(
            [sd[b + "q_bias"], torch.zeros_like(sd[b + "q_bias"]), sd[b + "v_bias"]]
        )
    else:
        bias = sd[b + "qkv.bias"]
    qkv = y @ sd[b + "qkv.weight"].T + bias
    q, k, v = qkv.reshape(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)
    win, pos, region = _geometry(grid, window, shift)
    rel = pos[:, None, :] - pos[None, :, :]  # (N, N, 2)
    wh, ww = window
    if v2:
        s = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)
        s = s * torch.clamp(sd[b + "logit_scale"], max=math.log(100.0)).exp()
        # the model's float32 table (a buffer); test_naive_swin checks that it
        # is the paper's log-spaced coordinates (_log_coords) to float32 precision
        coords = sd[b + "relative_coords_table"][0]
        h1 = F.relu(coords @ sd[b + "cpb_mlp.0.weight"].T + sd[b + "cpb_mlp.0.bias"])
        table = h1 @ sd[b + "cpb_mlp.2.weight"].T  # (2wh-1, 2ww-1, heads)
        rpb = 16 * torch.sigmoid(table[rel[..., 0] + wh - 1, rel[..., 1] + ww - 1])
    else:
        s = (q @ k.transpose(-1, -2)) * d**-0.5
        table = sd[b + "relative_position_bias_table"]
        idx = (rel[..., 0] + wh - 1) * (2 * ww - 1) + rel[..., 1] + ww - 1
        rpb = table[idx]  # (N, N, heads)
    s = s + rpb.permute(2, 0, 1)
    same = win[:, None] == win[None, :]
    s = s + torch.where(region[:, None] == region[None, :], 0.0, -100.0).to(s.dtype)
    s = s.masked_fill(~same, float("-inf"))
    a = s.softmax(-1)
    o = (a @ v).transpose(1, 2).reshape(B, N, D)
    return a, o @ sd[b + "proj.weight"].T + sd[b + "proj.bias"]


def merge_map(grid: Tuple[int, int]) -> torch.Tensor:
    """Dense 2x2 merge map ``(N_{s+1}, N_s)`` of an even grid."""
    H, W = grid
    P = torch.zeros(H // 2 * (W // 2), H * W, dtype=torch.float64)
    for i in range(H // 2):
        for j in range(W // 2):
            for a in range(2):
                for c in range(2):
                    P[i * (W // 2) + j, (2 * i + a) * W + 2 * j + c] = 0.25
    return P


def forward(model, x):
    """``(logits, attentions, merges)`` of a timm Swin (v1 or v2): dense
    attentions ``(B, heads, N_s, N_s)`` in the autograd graph, one per
    block, and the dense merge maps between stages."""
    v2 = type(model).__name__ == "SwinTransformerV2"
    sd = dict(model.named_parameters())  # in the autograd graph
    sd.update(model.named_buffers())
    p = model.patch_embed.patch_size[0]
    eps = model.norm.eps

    def ln(t, name):
        return F.layer_norm(
            t, (t.shape[-1],), sd[name + ".weight"], sd[name + ".bias"], eps
        )

    t = F.conv2d(
        x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=p
    )
    B, D, H, W = t.shape
    h = ln(t.flatten(2).transpose(1, 2), "patch_embed.norm")
    grid = (H, W)
    attns: List[torch.Tensor] = []
    merges: List[torch.Tensor] = []
    for s, stage in enumerate(model.layers):
        if s > 0:
            g = h.view(B, grid[0], grid[1], -1)
            cat = torch.cat(
                [
                    g[:, 0::2, 0::2],
                    g[:, 1::2, 0::2],
                    g[:, 0::2, 1::2],
                    g[:, 1::2, 1::2],
                ],
                -1,
            )
            m = f"layers.{s}.downsample."
            cat = cat.reshape(B, -1, cat.shape[-1])
            if v2:
                h = ln(cat @ sd[m + "reduction.weight"].T, m + "norm")
            else:
                h = ln(cat, m + "norm") @ sd[m + "reduction.weight"].T
            merges.append(merge_map(grid))
            grid = (grid[0] // 2, grid[1] // 2)
        for i, blk in enumerate(stage.blocks):
            b = f"layers.{s}.blocks.{i}."
            window, shift = tuple(blk.window_size), tuple(blk.shift_size)
            heads = blk.attn.num_heads
            if v2:
                a, o = _attention(sd, b + "attn.", h, heads, grid, window, shift, v2)
                h = h + ln(o, b + "norm1")
                y = F.gelu(h @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
                y = y @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]
                h = h + ln(y, b + "norm2")
            else:
                y = ln(h, b + "norm1")
                a, o = _attention(sd, b + "attn.", y, heads, grid, window, shift, v2)
                h = h + o
                y = F.gelu(
                    ln(h, b + "norm2") @ sd[b + "mlp.fc1.weight"].T
                    + sd[b + "mlp.fc1.bias"]
                )
                h = h + y @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]
            attns.append(a)
    pooled = ln(h, "norm").mean(1)
    return pooled @ sd["head.fc.weight"].T + sd["head.fc.bias"], attns, merges
