"""A naive CaiT forward on a timm state dict, written from the papers, and the
dense matrices of the two-phase token graph.

Independent of captum_vit's adapters and of timm's block code: the
self-attention phase (Touvron et al. 2021, talking heads of Shazeer et al.
2020) over the ``P`` patch tokens, layer scale on both branches,

    A = W_w softmax(W_l (s q k^T) + b_l) + b_w    (linear maps across heads),

then the class-attention phase over ``[class token; patches]`` whose only
query is the class token, which alone is updated; the head reads the class
token after the final norm. Every recorded attention is the one that
multiplies ``V``: ``(B, H, P, P)`` in the first phase, ``(B, H, 1, 1 + P)``
in the second.

:func:`dense_class_layer` writes a class-attention row as the dense
``(1 + P) x (1 + P)`` mixing matrix it stands for (the other rows the
identity), :func:`merge` the dense ``(1 + P) x P`` map from the patches to
``[class token; patches]`` (the class token row zero): the tests compose the
definitions of docs/token_graph.rst ("CaiT: two phases") with them densely.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

EPS = 1e-6  # CaiT's LayerNorm


def _ln(sd, name, x):
    return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], EPS)


def _lin(sd, name, x):
    return x @ sd[name + ".weight"].T + sd[name + ".bias"]


def _mlp(sd, b, x):
    return _lin(sd, b + "mlp.fc2", F.gelu(_lin(sd, b + "mlp.fc1", x)))


def forward(
    model: torch.nn.Module,
    x: torch.Tensor,
    heads: int,
    patch_mult: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """``(logits, attentions)`` of the CaiT ``model``'s weights on ``x``; the
    attentions require grad (gradients of the logits can be taken).
    ``patch_mult`` ``(B, P)``: multiplies the patch columns of every layer's
    scores entering the softmax (AtMan's suppression; the class column is
    left alone)."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    w = sd["patch_embed.proj.weight"]
    t = F.conv2d(x.double(), w, sd["patch_embed.proj.bias"], stride=w.shape[-1])
    t = t.flatten(2).transpose(1, 2) + sd["pos_embed"]
    B, P, D = t.shape
    d = D // heads
    scale = d**-0.5
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    attns = []
    for i in range(depth):
        b = f"blocks.{i}."
        y = _ln(sd, b + "norm1", t)
        q, k, v = _lin(sd, b + "attn.qkv", y).reshape(B, P, 3, heads, d).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (B, H, P, d)
        s = torch.einsum("bhid,bhjd->bhij", q * scale, k)
        s = torch.einsum("bhij,gh->bgij", s, sd[b + "attn.proj_l.weight"])
        s = s + sd[b + "attn.proj_l.bias"][:, None, None]
        if patch_mult is not None:
            s = s * patch_mult[:, None, None, :]
        a = torch.einsum("bhij,gh->bgij", s.softmax(-1), sd[b + "attn.proj_w.weight"])
        a = a + sd[b + "attn.proj_w.bias"][:, None, None]
        attns.append(a)
        o = (a @ v).transpose(1, 2).reshape(B, P, D)
        t = t + sd[b + "gamma_1"] * _lin(sd, b + "attn.proj", o)
        t = t + sd[b + "gamma_2"] * _mlp(sd, b, _ln(sd, b + "norm2", t))
    cls = sd["cls_token"].expand(B, 1, D)
    j = 0
    while f"blocks_token_only.{j}.gamma_1" in sd:
        b = f"blocks_token_only.{j}."
        y = _ln(sd, b + "norm1", torch.cat([cls, t], 1))
        q = _lin(sd, b + "attn.q", y[:, :1]).reshape(B, 1, heads, d).transpose(1, 2)
        k = _lin(sd, b + "attn.k", y).reshape(B, P + 1, heads, d).transpose(1, 2)
        v = _lin(sd, b + "attn.v", y).reshape(B, P + 1, heads, d).transpose(1, 2)
        s = q * scale @ k.transpose(-2, -1)  # (B, H, 1, 1 + P)
        if patch_mult is not None:
            s = s * F.pad(patch_mult, (1, 0), value=1.0)[:, None, None, :]
        a = s.softmax(-1)
        attns.append(a)
        o = (a @ v).transpose(1, 2).reshape(B, 1, D)
        cls = cls + sd[b + "gamma_1"] * _lin(sd, b + "attn.proj", o)
        cls = cls + sd[b + "gamma_2"] * _mlp(sd, b, _ln(sd, b + "norm2", cls))
        j += 1
    out = _ln(sd, "norm", torch.cat([cls, t], 1))[:, 0]
    return _lin(sd, "head", out), attns


def dense_class_layer(row: torch.Tensor) -> torch.Tensor:
    """The class-attention row ``(B, 1 + P)`` as the dense ``(B, 1 + P, 1 + P)``
    matrix of the layer: row 0 is ``row``, every other row the identity's."""
    n = row.shape[-1]
    M = torch.eye(n, dtype=row.dtype).repeat(row.shape[0], 1, 1)
    M[:, 0] = row
    return M


def merge(P: int) -> torch.Tensor:
    """``(1 + P, P)``: token ``1 + i`` of the class-attention phase is patch
    ``i``; the class token comes from no patch (a zero row)."""
    return torch.cat([torch.zeros(1, P, dtype=torch.float64), torch.eye(P).double()])
