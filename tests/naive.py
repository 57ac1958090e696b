"""A naive functional ViT forward on a timm state dict, written from the paper.

Independent of captum_vit's adapters: it recomputes every attention matrix
explicitly so tests can build expected values with plain loops and autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def forward(model, x, score_bias=None):
    """Return ``(logits, attentions)`` with attentions in the autograd graph.

    Args:
        model: a timm VisionTransformer (pre-norm blocks, class token pooling
            or average pooling; prefix tokens as timm defines them).
        x: images (B, C, H, W).
        score_bias: optional callable ``(layer, scores) -> scores``.
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
