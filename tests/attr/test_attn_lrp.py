"""AttnLRP (Achtibat et al., ICML 2024): conservation as the paper states it,
and equality with the Gradient x Input formulation of the LXT project.

The LXT project computes AttnLRP's rules as input x (modified) gradient: the
LayerNorm's standard deviation detached, the GELU's gradient replaced by
``out / in`` (identity rule), the gradients at q and k halved twice and at v
once (the uniform rule of both attention matmuls), everything else a plain
gradient. ``naive_gxi`` below writes that formulation out on a timm state
dict, without captum_vit's adapters or rules; each of captum_vit's rules is
checked against its explicit relevance equation in ``test_lrp_rules.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import captum_vit as cv
from captum_vit.attr._lrp import AttnLRPRules, lrp_context, relevance_pass
from tests.models import hf_vit_from_timm, images, timm_vit
from tests.tolerance import assert_close_to_scale


class _IdentityRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = F.gelu(x)
        ctx.save_for_backward(y / x)
        return y

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved_tensors[0]


def _grad_scaled(t, f):
    """Value ``t``, gradient multiplied by ``f``."""
    return t.detach() + (t - t.detach()) * f


def _ln(h, w, b, eps):
    mean = h.mean(-1, keepdim=True)
    std = (h.var(-1, unbiased=False, keepdim=True) + eps).sqrt()
    return (h - mean) / std.detach() * w + b


def naive_gxi(model, x, target, cp=False):
    sd = dict(model.named_parameters())
    x = x.clone().requires_grad_(True)
    p = model.patch_embed.patch_size[0]
    eps = model.blocks[0].norm1.eps
    t = F.conv2d(
        x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=p
    )
    B, D = t.shape[:2]
    t = t.flatten(2).transpose(1, 2)
    h = torch.cat([sd["cls_token"].expand(B, -1, -1), t], 1) + sd["pos_embed"]
    for i, blk in enumerate(model.blocks):
        b = f"blocks.{i}."
        H = blk.attn.num_heads
        y = _ln(h, sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps)
        qkv = y @ sd[b + "attn.qkv.weight"].T + sd[b + "attn.qkv.bias"]
        q, k, v = qkv.reshape(B, -1, 3, H, D // H).permute(2, 0, 3, 1, 4)
        if cp:  # CP-LRP: attention held constant, all relevance to v
            q, k = q.detach(), k.detach()
        else:
            q, k, v = _grad_scaled(q, 0.25), _grad_scaled(k, 0.25), _grad_scaled(v, 0.5)
        a = (q @ k.transpose(-1, -2) * (D // H) ** -0.5).softmax(-1)
        o = (a @ v).transpose(1, 2).reshape(B, -1, D)
        h = h + o @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"]
        y = _ln(h, sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps)
        y = _IdentityRule.apply(y @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        h = h + y @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]
    h = _ln(h, sd["norm.weight"], sd["norm.bias"], eps)
    logits = h[:, 0] @ sd["head.weight"].T + sd["head.bias"]
    (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x)
    return x.detach() * g


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_equals_lxt_gradient_times_input_formulation():
    model = timm_vit().double()
    x = images(3).double()
    target = torch.tensor([0, 2, 4])
    expected = naive_gxi(model, x, target)
    expected_cp = naive_gxi(model, x, target, cp=True)
    for epsilon in (0.0, 1e-12):  # the fused attention; op by op with gates
        ours = cv.AttnLRP(model, epsilon=epsilon).attribute(x, target=target)
        assert _rel(ours, expected) < 1e-8, epsilon
        cp = cv.AttnLRP(model, epsilon=epsilon, attention="cp")
        assert _rel(cp.attribute(x, target=target), expected_cp) < 1e-8, epsilon
    # the paper's epsilon changes little
    stabilised = cv.AttnLRP(model, epsilon=1e-6).attribute(x, target=target)
    assert 0 < _rel(stabilised, expected) < 1e-2
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        cv.AttnLRP(model, epsilon=-1.0)


def _conservation_terms(model, x, target, epsilon):
    """Input relevance (pixels, positional embedding, class token) and the
    relevance the softmax rules absorb, for one image."""
    adapter = cv.adapters.get(model)
    with torch.enable_grad(), lrp_context(adapter, AttnLRPRules(epsilon)) as tr:
        tr.keep_attention = tr.keep_scores = True
        xr = x.clone().requires_grad_(True)
        logits = model(xr)
        L = adapter.num_layers
        attn = [tr.attentions[i] for i in range(L)]
        scores = [tr.scores[i] for i in range(L)]
        start = torch.zeros_like(logits)
        start[0, target] = 1.0  # gradient x input: R = logit * 1 at the target
        wrt = [xr, model.pos_embed, model.cls_token] + attn + scores
        g = torch.autograd.grad(logits, wrt, grad_outputs=start)
    rel = [t.detach() * gt for t, gt in zip(wrt, g)]
    inputs = sum(r.sum() for r in rel[:3])
    absorbed = sum(ra.sum() - rs.sum() for ra, rs in zip(rel[3 : 3 + L], rel[3 + L :]))
    return logits[0, target].item(), inputs.item(), absorbed.item()


def test_conservation_as_stated_in_the_paper():
    """Every AttnLRP rule but the softmax's is conservative up to bias terms
    (Achtibat et al., Sec. 3): with zero biases the relevance of the input,
    the positional embedding and the class token plus what the softmax rules
    absorb (their Taylor bias term) is the target logit."""
    model = copy.deepcopy(timm_vit()).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    x = images(2).double()
    for i, target in enumerate((1, 3)):
        logit, inputs, absorbed = _conservation_terms(
            model, x[i : i + 1], target, 1e-12
        )
        assert abs(inputs + absorbed - logit) < 1e-8 * abs(logit), (
            logit,
            inputs,
            absorbed,
        )
    # the public method returns the pixel share of that total
    rel = cv.AttnLRP(model, epsilon=1e-12).attribute(x[:1], target=1)
    logit, inputs, absorbed = _conservation_terms(model, x[:1], 1, 1e-12)
    pos_cls = inputs - rel.sum().item()
    assert abs(rel.sum().item() + pos_cls + absorbed - logit) < 1e-8 * abs(logit)


def test_batch_and_hf_agree():
    model = timm_vit()
    x = images(4)
    target = torch.tensor([4, 0, 2, 1])
    batched = cv.AttnLRP(model).attribute(x, target=target, output="tokens")
    single = cv.AttnLRP(model).attribute(x[1:2], target=target[1:2], output="tokens")
    assert_close_to_scale(single, batched[1:2], 1e-4)
    hf = cv.AttnLRP(hf_vit_from_timm(model, "eager")).attribute(
        x, target=target, output="tokens"
    )
    assert (hf - batched).abs().max() / batched.abs().max() < 1e-4


def test_relevance_at_attention_is_attention_times_gradient():
    """Asked for the relevance at the attention probabilities, the pass runs
    the attention op by op and returns ``A * g`` (gradient x input there)."""
    model = timm_vit().double()
    x = images(2).double()
    target = torch.tensor([1, 3])
    adapter = cv.adapters.get(model)
    got = relevance_pass(adapter, AttnLRPRules(), x, target, layers=[0, 1])
    with torch.enable_grad(), lrp_context(adapter, AttnLRPRules()) as tr:
        tr.keep_attention = True
        xr = x.clone().requires_grad_(True)
        logits = model(xr)
        start = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0)
        attn = [tr.attentions[0], tr.attentions[1]]
        g = torch.autograd.grad(logits, [xr] + attn, grad_outputs=start)
    torch.testing.assert_close(got.inputs, xr.detach() * g[0])
    for i in (0, 1):
        torch.testing.assert_close(got.attention[i], attn[i].detach() * g[1 + i])
    # and the input relevance does not depend on asking for it
    alone = cv.AttnLRP(model).attribute(x, target=target)
    torch.testing.assert_close(got.inputs, alone)
