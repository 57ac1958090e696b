"""ATMAN against a naive loop that suppresses one token at a time by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import captum_vit as cv
from tests.models import images, timm_vit
from tests.naive import forward
from tests.tolerance import assert_close_to_scale

TARGET = torch.tensor([0, 3])


def naive_atman(model, x, target, f, kappa):
    """One forward per (image, suppressed token), written from the paper."""
    npre = model.num_prefix_tokens
    out = []
    for b in range(x.shape[0]):
        xb = x[b : b + 1]
        with torch.no_grad():
            # tokens entering the first block: patch + position embedding
            emb = model._pos_embed(model.patch_embed(xb))[0, npre:]
            logits, _ = forward(model, xb)
            ce0 = F.cross_entropy(logits, target[b : b + 1])
            P = emb.shape[0]
            sims = F.cosine_similarity(emb[:, None], emb[None], dim=-1).tolist()
            row = []
            for i in range(P):
                m = torch.ones(npre + P)
                for j in range(P):
                    cos = sims[i][j]
                    if j == i:
                        m[npre + j] = 1 - f
                    elif kappa is not None and cos >= kappa:
                        m[npre + j] = 1 - f * cos
                logits, _ = forward(model, xb, score_bias=lambda _l, s, m=m: s * m)
                row.append(F.cross_entropy(logits, target[b : b + 1]) - ce0)
            out.append(torch.stack(row))
    return torch.stack(out)


@pytest.fixture(scope="module")
def model():
    return timm_vit()


_NAIVE = {}


@pytest.mark.parametrize("kappa", [None, 0.3])
@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_equals_naive_loop(model, kappa, batch_size):
    x = images(2)
    if kappa not in _NAIVE:
        _NAIVE[kappa] = naive_atman(model, x, TARGET, 0.9, kappa)
    expected = _NAIVE[kappa]
    method = cv.ATMAN(
        model, conceptual_suppression_threshold=kappa, internal_batch_size=batch_size
    )
    got = method.attribute(x, target=TARGET, output="tokens").reshape(2, -1)
    assert_close_to_scale(got, expected, 1e-3)
    assert expected.abs().max() > 1e-2  # the test is not vacuous


def test_conceptual_suppression_changes_result(model):
    x = images(2)
    a = cv.ATMAN(model, conceptual_suppression_threshold=None).attribute(x, target=0)
    b = cv.ATMAN(model, conceptual_suppression_threshold=0.3).attribute(x, target=0)
    assert (a - b).abs().max() > 1e-4
    m = cv.ATMAN(model, conceptual_suppression_threshold=0.3)
    mult = m.multipliers(m.embeddings(x))
    assert (mult[:, 1:, 1:] < 1).sum(-1).float().mean() > 1.5  # groups, not singles


def test_zero_factor_gives_zeros(model):
    x = images(2)
    got = cv.ATMAN(model, suppression_factor=0.0).attribute(x, output="tokens")
    assert torch.equal(got, torch.zeros_like(got))


def test_other_families_and_progress(model, capsys):
    from tests.models import hf_vit_from_timm

    x = images(1)
    expected = cv.ATMAN(model).attribute(x, target=2, output="tokens")
    got = cv.ATMAN(hf_vit_from_timm(model), show_progress=True).attribute(
        x, target=2, output="tokens"
    )
    assert_close_to_scale(got, expected, 1e-3)
    assert "ATMAN" in capsys.readouterr().err


def test_bad_options(model):
    with pytest.raises(ValueError, match="conceptual_suppression_threshold"):
        cv.ATMAN(model, conceptual_suppression_threshold=1.5)
    with pytest.raises(ValueError, match="internal_batch_size"):
        cv.ATMAN(model, internal_batch_size=0)
    with pytest.raises(ValueError, match="suppression_factor"):
        cv.ATMAN(model, suppression_factor=float("nan"))
    assert "atman" in cv.attr.list_methods()
