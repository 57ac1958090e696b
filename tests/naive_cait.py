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
:func:`last_class_attention_relevance` writes Chefer et al.'s LRP rules from
the logit back to the last class-attention layer's attention (Partial LRP's
reading).
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


def _weights(model):
    return {k: v.double() for k, v in model.state_dict().items()}


def _self_attention_phase(sd, x, heads, patch_mult=None):
    """The patch tokens after the self-attention phase ``(B, P, D)`` and the
    phase's attentions."""
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
    return t, attns


def _class_blocks(sd):
    j = 0
    while f"blocks_token_only.{j}.gamma_1" in sd:
        yield f"blocks_token_only.{j}."
        j += 1


def _class_block(sd, b, cls, t, heads, mult=None):
    """One class-attention block: the new class token ``(B, 1, D)`` and its
    intermediate tensors by name (``mult`` ``(B, 1 + P)`` multiplies the
    scores' columns)."""
    B, P, D = t.shape
    d = D // heads
    y = _ln(sd, b + "norm1", torch.cat([cls, t], 1))
    q = _lin(sd, b + "attn.q", y[:, :1]).reshape(B, 1, heads, d).transpose(1, 2)
    k = _lin(sd, b + "attn.k", y).reshape(B, P + 1, heads, d).transpose(1, 2)
    v = _lin(sd, b + "attn.v", y).reshape(B, P + 1, heads, d).transpose(1, 2)
    s = q * d**-0.5 @ k.transpose(-2, -1)  # (B, H, 1, 1 + P)
    if mult is not None:
        s = s * mult[:, None, None, :]
    a = s.softmax(-1)
    o = (a @ v).transpose(1, 2).reshape(B, 1, D)
    b1 = sd[b + "gamma_1"] * _lin(sd, b + "attn.proj", o)
    u = cls + b1
    n2 = _ln(sd, b + "norm2", u)
    h = F.gelu(_lin(sd, b + "mlp.fc1", n2))
    b2 = sd[b + "gamma_2"] * _lin(sd, b + "mlp.fc2", h)
    kept = dict(cls=cls, q=q, k=k, a=a, v=v, o=o, b1=b1, u=u, n2=n2, h=h, b2=b2)
    return u + b2, kept


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
    logits, attns, _, _ = forward_kept(model, x, heads, patch_mult)
    return logits, attns


def forward_kept(model, x, heads, patch_mult=None):
    """:func:`forward`, per class-attention block its intermediate tensors by
    name (``q``, ``k``, ``v`` ``(B, H, n, d)``, the attention output ``o``
    ``(B, 1, D)`` before the projection, ...) and the normed class token the
    head reads ``(B, D)``, all in the graph: ``(logits, attentions, kept,
    features)``."""
    sd = _weights(model)
    t, attns = _self_attention_phase(sd, x, heads, patch_mult)
    B, P, D = t.shape
    cls = sd["cls_token"].expand(B, 1, D)
    kepts = []
    for b in _class_blocks(sd):
        mult = None if patch_mult is None else F.pad(patch_mult, (1, 0), value=1.0)
        cls, kept = _class_block(sd, b, cls, t, heads, mult)
        attns.append(kept["a"])
        kepts.append(kept)
    out = _ln(sd, "norm", torch.cat([cls, t], 1))[:, 0]
    return _lin(sd, "head", out), attns, kepts, out


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


# ------------------------------------------------------------- naive LRP
def _sdiv(a, b):
    """Chefer et al.'s safe_divide: ``a / (b + 1e-9)``, 0 where ``b = 0``."""
    return torch.where(b == 0, torch.zeros_like(a), a / (b + 1e-9))


def _lrp_linear(sd, name, x, R, separate):
    """Chefer et al.'s linear rules, bias ignored: ``layers_lrp`` (the two
    signs normalised separately, ``separate``) or ``layers_ours``
    (alpha 1, beta 0, one denominator)."""
    w = sd[name + ".weight"]
    xp, xn, wp, wn = x.clamp(min=0), x.clamp(max=0), w.clamp(min=0), w.clamp(max=0)
    zp, zn = xp @ wp.T, xn @ wn.T
    if separate:
        return xp * (_sdiv(R, zp) @ wp) + xn * (_sdiv(R, zn) @ wn)
    S = _sdiv(R, zp + zn)
    return xp * (S @ wp) + xn * (S @ wn)


def _lrp_add(a, b, R, renormalize):
    """The z-rule of a residual sum, per-sample renormalised
    (``layers_ours``) or not (``layers_lrp``): ``(R_a, R_b)``."""
    S = _sdiv(R, a + b)
    Ra, Rb = a * S, b * S
    if renormalize:
        sa, sb, s = (r.flatten(1).sum(1)[:, None, None] for r in (Ra, Rb, R))
        tot = sa.abs() + sb.abs()
        Ra = Ra * _sdiv(_sdiv(sa.abs(), tot) * s, sa)
        Rb = Rb * _sdiv(_sdiv(sb.abs(), tot) * s, sb)
    return Ra, Rb


def last_class_attention_relevance(model, x, heads, target, original=True):
    """The LRP relevance reaching the last class-attention layer's attention
    ``(B, H, 1, 1 + P)``, written from Chefer et al.'s rules: ``original``
    their ``layers_lrp`` (separate linear terms, plain z-rule sums), else
    ``layers_ours``. From one at the target logit: the head (linear), the
    final norm (identity), the class token's selection (z-rule), then the
    last block backwards: the second sum, the MLP branch (layer scale, GELU,
    norm: identity; the linears), the fork of the first sum's output (z-rule
    of the summed relevance), the first sum, the attention projection and
    the halved z-rule of ``A V``."""
    sd = _weights(model)
    logits, _, kepts, feat = forward_kept(model, x, heads)
    blk, kept = list(_class_blocks(sd))[-1], kepts[-1]
    B, D = feat.shape
    R = torch.zeros_like(logits)
    R[torch.arange(B), target] = 1.0
    R = _lrp_linear(sd, "head", feat, R, original)
    R = (feat * _sdiv(R, feat))[:, None]  # the class token's selection
    R_u, R_b2 = _lrp_add(kept["u"], kept["b2"], R, not original)
    R_h = _lrp_linear(sd, blk + "mlp.fc2", kept["h"], R_b2, original)
    R_n2 = _lrp_linear(sd, blk + "mlp.fc1", kept["n2"], R_h, original)
    u = kept["u"]
    R_u = u * _sdiv(R_u + R_n2, u)  # the fork: skip and MLP branch
    _, R_b1 = _lrp_add(kept["cls"], kept["b1"], R_u, not original)
    R_o = _lrp_linear(sd, blk + "attn.proj", kept["o"], R_b1, original)
    R_o = R_o.reshape(B, 1, heads, D // heads).transpose(1, 2)  # (B, H, 1, d)
    a, v = kept["a"], kept["v"]
    return 0.5 * a * (_sdiv(R_o, a @ v) @ v.transpose(-2, -1))
