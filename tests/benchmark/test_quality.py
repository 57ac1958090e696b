"""Chefer et al. (2021a) on the embedded model: their class-specific
TransformerLRP against raw attention and rollout.

On ImageNet they report that TransformerLRP has a lower positive-perturbation
AUC and a higher segmentation mIoU than raw attention and attention rollout.
Checked here on the first 64 samples of the synthetic benchmark (test split,
seed 0: the default of ``captum-vit benchmark``) with the embedded default
model, through the benchmark runner (per-image values, mean over samples).
"""

import captum_vit as cv
from captum_vit.benchmark import load_model, make_dataset, run_benchmark

N_SAMPLES = 64


def test_transformer_lrp_beats_raw_attention_and_rollout():
    lm = load_model()
    ds = make_dataset("synthetic", None, lm.image_size, lm.transform, N_SAMPLES)
    res = run_benchmark(
        lm.model,
        ds,
        {
            "raw_attention": cv.RawAttention,
            "rollout": cv.AttentionRollout,
            "transformer_lrp": cv.TransformerLRP,
        },
        ["positive_perturbation", "segmentation"],
        lm.mean,
        lm.std,
        batch_size=32,
        show_progress=False,
    )
    assert sum(res.correct) / res.n > 0.9  # the model learned the task
    tab = res.table()
    pos = {m: tab[m]["pos_perturbation_auc"] for m in res.methods}
    miou = {m: tab[m]["seg_miou"] for m in res.methods}
    for baseline in ("raw_attention", "rollout"):
        assert pos["transformer_lrp"] < pos[baseline], pos  # lower is better
        assert miou["transformer_lrp"] > miou[baseline], miou  # higher is better
