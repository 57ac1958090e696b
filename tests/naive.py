"""A naive functional ViT forward on a timm state dict, written from the paper.

Independent of captum_vit's adapters: it recomputes every attention matrix
explicitly so tests can build expected values with plain loops and autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def forward(model, x, score_bias=None, tokens=None):
    """Return ``(logits, attentions)`` with attentions in the autograd graph.

    Args:
        model: a timm VisionTransformer (pre-norm blocks, class token pooling
            or average pooling; prefix tokens as timm defines them).
        x: images (B, C, H, W).
        score_bias: optional callable ``(layer, scores) -> scores``.
        tokens: optional list that receives each block's output tokens.
    """
    sd = dict(model.named_parameters())
    p = model.patch_embed.patch_size[0]
    eps = model.blocks[0].norm1.eps
    t = F.conv2d(
        x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=p
    )
    B, D = t.shape[:2]
    t = t.flatten(2).transpose(1, 2)
    prefix = []
    if "cls_token" in sd:
        prefix.append(sd["cls_token"].expand(B, -1, -1))
    if "dist_token" in sd:
        prefix.append(sd["dist_token"].expand(B, -1, -1))
    if "reg_token" in sd:
        prefix.append(sd["reg_token"].expand(B, -1, -1))
    if getattr(model, "no_embed_class", False):
        t = t + sd["pos_embed"]
        h = torch.cat(prefix + [t], dim=1)
    else:
        h = torch.cat(prefix + [t], dim=1) + sd["pos_embed"]
    attns = []
    for i, blk in enumerate(model.blocks):
        b = f"blocks.{i}."
        H = blk.attn.num_heads
        y = F.layer_norm(h, (D,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps)
        qkv = y @ sd[b + "attn.qkv.weight"].T + sd[b + "attn.qkv.bias"]
        N = qkv.shape[1]
        q, k, v = qkv.reshape(B, N, 3, H, D // H).permute(2, 0, 3, 1, 4)
        s = q @ k.transpose(-1, -2) * (D // H) ** -0.5
        if score_bias is not None:
            s = score_bias(i, s)
        a = s.softmax(-1)
        attns.append(a)
        o = (a @ v).transpose(1, 2).reshape(B, N, D)
        o = o @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"]
        if b + "ls1.gamma" in sd:
            o = o * sd[b + "ls1.gamma"]
        h = h + o
        y = F.layer_norm(h, (D,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps)
        y = F.gelu(y @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        y = y @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]
        if b + "ls2.gamma" in sd:
            y = y * sd[b + "ls2.gamma"]
        h = h + y
        if tokens is not None:
            tokens.append(h)
    if "norm.weight" in sd:
        h = F.layer_norm(h, (D,), sd["norm.weight"], sd["norm.bias"], eps)
    npre = model.num_prefix_tokens
    if model.global_pool == "avg":
        pooled = h[:, npre:].mean(1)
        if "fc_norm.weight" in sd:
            pooled = F.layer_norm(
                pooled, (D,), sd["fc_norm.weight"], sd["fc_norm.bias"], eps
            )
        return pooled @ sd["head.weight"].T + sd["head.bias"], attns
    logits = h[:, 0] @ sd["head.weight"].T + sd["head.bias"]
    if "dist_token" in sd:
        dist = h[:, 1] @ sd["head_dist.weight"].T + sd["head_dist.bias"]
        logits = (logits + dist) / 2
    return logits, attns


def attention_and_grads(model, x, target):
    """Attention matrices and d logit_target / d A per layer, one image at a time."""
    attns, grads = [], []
    for i in range(x.shape[0]):
        logits, a = forward(model, x[i : i + 1])
        g = torch.autograd.grad(logits[0, int(target[i])], a)
        attns.append([t.detach() for t in a])
        grads.append(list(g))
    L = len(attns[0])
    A = [torch.cat([attns[i][j] for i in range(len(attns))]) for j in range(L)]
    G = [torch.cat([grads[i][j] for i in range(len(grads))]) for j in range(L)]
    return A, G


def relative_position_index(gh, gw):
    """BEiT's relative position index written from the paper: patches i, j
    at (yi, xi), (yj, xj) share the entry of (yi - yj, xi - xj); three more
    entries for class-to-patch, patch-to-class and class-to-class."""
    P = gh * gw
    size = (2 * gh - 1) * (2 * gw - 1)
    idx = torch.empty(P + 1, P + 1, dtype=torch.long)
    for i in range(P):
        for j in range(P):
            dy = i // gw - j // gw + gh - 1
            dx = i % gw - j % gw + gw - 1
            idx[i + 1, j + 1] = dy * (2 * gw - 1) + dx
    idx[0, 1:] = size
    idx[1:, 0] = size + 1
    idx[0, 0] = size + 2
    return idx


def beit_forward(model, x):
    """Return ``(logits, attentions)`` of a timm ``Beit`` recomputed from its
    parameters: pre-norm blocks whose scores carry the relative position bias
    of the layer and the shared one, ``q``/``v`` biases, layer scale, mean
    pooling with ``fc_norm`` or class-token pooling."""
    sd = dict(model.named_parameters())
    p = model.patch_embed.patch_size[0]
    eps = model.blocks[0].norm1.eps
    t = F.conv2d(
        x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=p
    )
    B, D, gh, gw = t.shape
    h = torch.cat([sd["cls_token"].expand(B, -1, -1), t.flatten(2).transpose(1, 2)], 1)
    if "pos_embed" in sd:
        h = h + sd["pos_embed"]
    idx = relative_position_index(gh, gw)
    shared = 0.0
    if "rel_pos_bias.relative_position_bias_table" in sd:
        shared = sd["rel_pos_bias.relative_position_bias_table"][idx].permute(2, 0, 1)
    attns = []
    for i, blk in enumerate(model.blocks):
        b = f"blocks.{i}."
        H = blk.attn.num_heads
        y = F.layer_norm(h, (D,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps)
        zeros = torch.zeros_like(sd[b + "attn.q_bias"])
        bias = torch.cat([sd[b + "attn.q_bias"], zeros, sd[b + "attn.v_bias"]])
        qkv = y @ sd[b + "attn.qkv.weight"].T + bias
        N = qkv.shape[1]
        q, k, v = qkv.reshape(B, N, 3, H, D // H).permute(2, 0, 3, 1, 4)
        s = q @ k.transpose(-1, -2) * (D // H) ** -0.5 + shared
        if b + "attn.relative_position_bias_table" in sd:
            table = sd[b + "attn.relative_position_bias_table"]
            s = s + table[idx].permute(2, 0, 1)
        a = s.softmax(-1)
        attns.append(a)
        o = (a @ v).transpose(1, 2).reshape(B, N, D)
        o = o @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"]
        if b + "gamma_1" in sd:
            o = o * sd[b + "gamma_1"]
        h = h + o
        y = F.layer_norm(h, (D,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps)
        y = F.gelu(y @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        y = y @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]
        if b + "gamma_2" in sd:
            y = y * sd[b + "gamma_2"]
        h = h + y
    if model.global_pool == "avg":
        pooled = F.layer_norm(
            h[:, 1:].mean(1), (D,), sd["fc_norm.weight"], sd["fc_norm.bias"], eps
        )
    else:
        pooled = F.layer_norm(h, (D,), sd["norm.weight"], sd["norm.bias"], eps)[:, 0]
    return pooled @ sd["head.weight"].T + sd["head.bias"], attns
