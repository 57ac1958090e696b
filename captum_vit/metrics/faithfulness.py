"""Faithfulness criteria: deletion / insertion, the positive / negative perturbation
test, faithfulness correlation and sensitivity-n.

Every function evaluates its perturbed copies in chunks of ``internal_batch_size``
through ``forward_func`` under :func:`torch.no_grad`; the model's mode is left as it is
(call ``model.eval()`` yourself).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._results import CurveResult
from ._utils import (
    TargetType,
    _check_batch,
    _check_batch_size,
    _check_inputs,
    _chunked_outputs,
    _expand_args,
    _format_target,
    _forward,
    _infer_patch_size,
    _pearson,
    _ranks,
    _resolve_baseline,
    _to_pixel_map,
    _to_token_map,
    _upsample_nearest,
)

BaselineType = Union[str, float, int, Tensor]


def _feature_scores(
    inputs: Tensor, attributions: Tensor, patch_size: Optional[int]
) -> Tensor:
    """(B, N) attribution per feature: pixels (patch_size None) or patches."""
    B, _, H, W = inputs.shape
    if patch_size is None:
        return _to_pixel_map(attributions, (H, W), B).reshape(B, -1)
    return _to_token_map(attributions, (H, W), patch_size, B).reshape(B, -1)


def _feature_mask_to_pixels(
    mask: Tensor, image_size: Tuple[int, int], patch_size: Optional[int]
) -> Tensor:
    """(n, N) feature mask -> (n, 1, H, W) pixel mask."""
    H, W = image_size
    n = mask.shape[0]
    if patch_size is None:
        return mask.reshape(n, 1, H, W)
    grid = mask.reshape(n, H // patch_size, W // patch_size)
    return _upsample_nearest(grid, patch_size)[:, None]


def _score_reduce(target: Tensor, apply_softmax: bool) -> Callable:
    def reduce(out: Tensor, rows: Tensor) -> Tensor:
        if apply_softmax:
            out = torch.softmax(out.float(), dim=1)
        return out.gather(1, target[rows, None])[:, 0].float()

    return reduce


def _unperturbed_outputs(
    forward_func, inputs, additional_forward_args, batch_size
) -> Tensor:
    B = inputs.shape[0]
    outs = []
    with torch.no_grad():
        for s in range(0, B, batch_size):
            rows = torch.arange(s, min(s + batch_size, B), device=inputs.device)
            outs.append(
                _forward(
                    forward_func,
                    inputs[rows],
                    _expand_args(additional_forward_args, rows, B),
                )
            )
    return torch.cat(outs)


def _perturbation_curve(
    forward_func: Callable,
    inputs: Tensor,
    ranks: Tensor,
    counts: Sequence[int],
    fill: Tensor,
    insert: bool,
    patch_size: Optional[int],
    reduce: Callable,
    batch_size: int,
    additional_forward_args: Any,
    show_progress: bool,
    desc: str,
) -> Tensor:
    """(B, S) scores after perturbing the ``counts[s]`` first-ranked features.

    Deletion (``insert=False``): ranked features take the value of ``fill``.
    Insertion (``insert=True``): start from ``fill`` and put the ranked features back.
    """
    B, _, H, W = inputs.shape
    S = len(counts)
    counts_t = torch.as_tensor(list(counts), dtype=torch.long, device=inputs.device)

    def build(idx: Tensor):
        rows = torch.div(idx, S, rounding_mode="floor")
        k = counts_t[idx % S]
        mask = ranks[rows] < k[:, None]
        pix = _feature_mask_to_pixels(mask, (H, W), patch_size)
        if insert:
            return torch.where(pix, inputs[rows], fill[rows]), rows
        return torch.where(pix, fill[rows], inputs[rows]), rows

    values = _chunked_outputs(
        forward_func,
        B * S,
        build,
        reduce,
        batch_size,
        B,
        additional_forward_args,
        inputs.device,
        show_progress,
        desc,
    )
    return values.reshape(B, S)


def _trapezoid(curve: Tensor, fractions: Tensor) -> Tensor:
    return torch.trapezoid(curve.double(), fractions.double(), dim=-1).float()


def _resolve_patch_size(
    inputs: Tensor, attributions: Tensor, patch_size: Optional[int], token_level: bool
) -> Optional[int]:
    if not token_level:
        return patch_size
    if patch_size is not None:
        return patch_size
    return _infer_patch_size(attributions, tuple(inputs.shape[-2:]))


def _step_counts(
    n_features: int, n_steps: Optional[int], step_size: Optional[int]
) -> list:
    if step_size is not None:
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"`step_size` must be a positive int, got {step_size!r}.")
        n = -(-n_features // step_size)
        return [min(i * step_size, n_features) for i in range(n + 1)]
    if n_steps is None:
        n_steps = min(100, n_features)
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"`n_steps` must be a positive int, got {n_steps!r}.")
    return [(i * n_features) // n_steps for i in range(n_steps + 1)]


def _deletion_insertion(
    insert: bool,
    forward_func,
    inputs,
    attributions,
    target,
    baseline,
    n_steps,
    step_size,
    patch_size,
    apply_softmax,
    additional_forward_args,
    internal_batch_size,
    show_progress,
) -> CurveResult:
    inputs = _check_inputs(inputs)
    B = inputs.shape[0]
    _check_batch(attributions, B, "attributions")
    batch_size = _check_batch_size(internal_batch_size, B)
    scores = _feature_scores(inputs, attributions, patch_size)
    counts = _step_counts(scores.shape[1], n_steps, step_size)
    fill = _resolve_baseline(baseline, inputs)
    tgt = _format_target(target, B, inputs.device)
    if tgt is None:
        out0 = _unperturbed_outputs(
            forward_func, inputs, additional_forward_args, batch_size
        )
        tgt = out0.argmax(dim=1)
    ranks = _ranks(scores, descending=True)
    curve = _perturbation_curve(
        forward_func,
        inputs,
        ranks,
        counts,
        fill,
        insert,
        patch_size,
        _score_reduce(tgt, apply_softmax),
        batch_size,
        additional_forward_args,
        show_progress,
        "insertion" if insert else "deletion",
    )
    fractions = torch.as_tensor(counts, dtype=torch.float64) / scores.shape[1]
    fractions = fractions.to(device=inputs.device)
    return CurveResult(_trapezoid(curve, fractions), curve, fractions.float())


_DEL_INS_ARGS = r"""
    Args:

        forward_func (Callable): The model (or any function) mapping a batch of inputs
            of shape ``(N, C, H, W)`` (plus ``additional_forward_args``) to
            ``(N, num_classes)`` scores.
        inputs (Tensor): ``(B, C, H, W)`` images, in the space the model takes them
            (normalised, if the model expects normalised inputs).
        attributions (Tensor): attributions from any Captum or captum_vit method:
            ``(B, C, H, W)``, ``(B, 1, H, W)``, ``(B, H, W)`` or a token grid
            ``(B, gh, gw)`` (upsampled bilinearly). Channels are summed.
        target (int, list, Tensor, optional): class explained for each image.
            ``None`` uses the class the model predicts on the unperturbed input.
            Default: None
        baseline (str, float or Tensor, optional): value the perturbed pixels take:
            ``"zero"`` (0 in input space), ``"blur"`` (Gaussian blur, kernel 11,
            sigma 5, as Petsiuk et al.'s code), ``"mean"`` (per-image channel mean),
            ``"black"`` (0 in input space too: use a number or a tensor for black in a
            normalised space), a number, or a tensor broadcastable to ``inputs``.
            Default: {default_baseline}
        n_steps (int, optional): number of perturbation steps; after step ``i`` the
            first ``floor(i * N / n_steps)`` of the ``N`` features are perturbed.
            ``None`` means ``min(100, N)``. Ignored when ``step_size`` is given.
            Default: None
        step_size (int, optional): features perturbed per step (Petsiuk et al. use
            224 pixels on 224 x 224 images; Quantus calls it ``features_in_step``);
            the last step may be shorter. Default: None
        patch_size (int, optional): ``None`` perturbs pixels; an int perturbs whole
            ``patch_size x patch_size`` patches (token level), ranked by the summed
            attribution of each patch (or the token grid itself). Default: None
        apply_softmax (bool, optional): score is the softmax probability of the
            target class (Petsiuk et al.); ``False`` uses the raw output.
            Default: True
        additional_forward_args (Any, optional): extra arguments of
            ``forward_func``; tensors whose first dimension is ``B`` are indexed per
            perturbed copy. Default: None
        internal_batch_size (int, optional): perturbed copies per forward pass.
            ``None`` means ``B``. Default: None
        show_progress (bool, optional): tqdm progress bar over the chunks.
            Default: False

    Returns:
        :class:`CurveResult`: ``auc`` ``(B,)``, ``curve`` ``(B, S + 1)`` (column 0 is
        the unperturbed point), ``fractions`` ``(S + 1,)``.
"""


def deletion_auc(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    baseline: BaselineType = "zero",
    n_steps: Optional[int] = None,
    step_size: Optional[int] = None,
    patch_size: Optional[int] = None,
    apply_softmax: bool = True,
    additional_forward_args: Any = None,
    internal_batch_size: Optional[int] = None,
    show_progress: bool = False,
) -> CurveResult:
    return _deletion_insertion(
        False,
        forward_func,
        inputs,
        attributions,
        target,
        baseline,
        n_steps,
        step_size,
        patch_size,
        apply_softmax,
        additional_forward_args,
        internal_batch_size,
        show_progress,
    )


deletion_auc.__doc__ = (
    r"""Deletion metric of Petsiuk et al. (2018), "RISE: Randomized Input Sampling
    for Explanation of Black-box Models", https://arxiv.org/abs/1806.07421.

    Features (pixels or patches) are replaced by the baseline, most relevant first,
    and the target-class score is recorded after each step. **Lower is better**: a
    faithful map makes the score collapse early.

    .. math::

        \mathrm{Del}(x) = \int_0^1 f_t\big(x^{(\alpha)}\big)\, d\alpha
        \approx \sum_{i=1}^{S} \frac{\alpha_i - \alpha_{i-1}}{2}
        \big(f_t(x^{(\alpha_{i-1})}) + f_t(x^{(\alpha_i)})\big)

    where :math:`x^{(\alpha)}` is :math:`x` with its :math:`\alpha N` most relevant
    features set to the baseline and :math:`\alpha_i` the fraction perturbed after
    step :math:`i` (:math:`\alpha_0 = 0`, the unperturbed input). With a uniform step
    this is Petsiuk et al.'s ``(sum - first / 2 - last / 2) / (len - 1)``.
    Ties in the attribution are broken by feature index (stable sort).
"""
    + _DEL_INS_ARGS.format(default_baseline='"zero"')
    + r"""
    Examples::

        >>> import torch
        >>> from captum_vit.metrics import deletion_auc
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
        >>> x = torch.randn(2, 3, 4, 4)
        >>> attr = torch.randn(2, 3, 4, 4)
        >>> res = deletion_auc(model, x, attr, target=0, n_steps=4)
        >>> res.curve.shape, res.auc.shape
        (torch.Size([2, 5]), torch.Size([2]))
"""
)


def insertion_auc(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    baseline: BaselineType = "blur",
    n_steps: Optional[int] = None,
    step_size: Optional[int] = None,
    patch_size: Optional[int] = None,
    apply_softmax: bool = True,
    additional_forward_args: Any = None,
    internal_batch_size: Optional[int] = None,
    show_progress: bool = False,
) -> CurveResult:
    return _deletion_insertion(
        True,
        forward_func,
        inputs,
        attributions,
        target,
        baseline,
        n_steps,
        step_size,
        patch_size,
        apply_softmax,
        additional_forward_args,
        internal_batch_size,
        show_progress,
    )


insertion_auc.__doc__ = (
    r"""Insertion metric of Petsiuk et al. (2018), "RISE: Randomized Input Sampling
    for Explanation of Black-box Models", https://arxiv.org/abs/1806.07421.

    Starting from the baseline (a blurred copy by default), the input's features are
    put back most relevant first and the target-class score is recorded after each
    step. **Higher is better**.

    .. math::

        \mathrm{Ins}(x) = \int_0^1 f_t\big(\tilde x^{(\alpha)}\big)\, d\alpha

    where :math:`\tilde x^{(\alpha)}` is the baseline with the :math:`\alpha N` most
    relevant features of :math:`x` inserted, integrated by the trapezoid rule over the
    fractions :math:`\alpha_0 = 0, \dots, \alpha_S = 1` (column 0 of ``curve`` is the
    baseline alone, the last column the full input).
"""
    + _DEL_INS_ARGS.format(default_baseline='"blur"')
    + r"""
    Examples::

        >>> import torch
        >>> from captum_vit.metrics import insertion_auc
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
        >>> x = torch.randn(2, 3, 4, 4)
        >>> attr = torch.randn(2, 4, 4)
        >>> insertion_auc(model, x, attr, target=[0, 2], n_steps=4).auc.shape
        torch.Size([2])
"""
)


CHEFER_STEPS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def perturbation_test(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    mode: str = "positive",
    baseline: BaselineType = "black",
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    steps: Sequence[float] = CHEFER_STEPS,
    token_level: bool = False,
    patch_size: Optional[int] = None,
    additional_forward_args: Any = None,
    internal_batch_size: Optional[int] = None,
    show_progress: bool = False,
) -> CurveResult:
    r"""Positive / negative perturbation test of Chefer, Gur and Wolf (2021),
    "Transformer Interpretability Beyond Attention Visualization", CVPR,
    https://arxiv.org/abs/2012.09838 — the protocol of their
    ``baselines/ViT/pertubation_eval_from_hdf5.py``.

    The relevance is upsampled to the input's pixels (bilinear, for token grids).
    For each step :math:`p \in \{0.1, 0.2, \dots, 0.9\}` the
    :math:`\lfloor p \cdot HW \rfloor` pixels of highest relevance (``"positive"``) or
    of lowest relevance (``"negative"``) are set, in all channels, to the baseline,
    and the model's top-1 prediction is compared with the explained class. Their
    baseline is black: they zero the *un-normalised* image and normalise afterwards,
    so here the baseline is ``"black"`` expressed in the model's input space,
    :math:`(0 - \mu_c) / \sigma_c` per channel: **pass** the normalisation ``mean`` and
    ``std`` your inputs were normalised with (Chefer et al. use 0.5 / 0.5, i.e. -1),
    or an explicit ``baseline`` value or tensor. Without ``mean``/``std`` the inputs are
    taken to be un-normalised pixels (black = 0).

    .. math::

        \mathrm{acc}(p) = \frac{1}{B}\sum_{b} \mathbb{1}\big[\arg\max_c
        f_c(x_b^{(p)}) = t_b\big], \qquad
        \mathrm{AUC} = \sum_{i=1}^{9} \frac{p_i - p_{i-1}}{2}
        \big(\mathrm{acc}(p_{i-1}) + \mathrm{acc}(p_i)\big)

    with :math:`p_0 = 0` the unperturbed input, i.e. ``np.trapz(acc, x)`` over
    ``x = [0, 0.1, ..., 0.9]`` exactly as the authors compute it (issues #27 and #31 of
    their repository: "we accounted for the original accuracy as well, i.e. for x=0
    we used the accuracy of the network"; ``np.trapz(y, x) * 100``). The x-axis is the
    fraction of pixels removed, not normalised to [0, 1]: the largest possible AUC is
    0.9. **Multiply by 100 to compare with the paper's tables.**
    **Positive: lower is better; negative: higher is better.**

    Args:

        forward_func (Callable): model mapping ``(N, C, H, W)`` inputs to
            ``(N, num_classes)`` outputs (logits or probabilities: only the arg max is
            used).
        inputs (Tensor): ``(B, C, H, W)`` images in the model's input space.
        attributions (Tensor): ``(B, C, H, W)``, ``(B, 1, H, W)``, ``(B, H, W)`` or a
            token grid ``(B, gh, gw)``; channels are summed.
        target (int, list, Tensor, optional): the explained class, against which
            top-1 accuracy is measured (their ``--vis-class target``). ``None`` uses
            the class predicted on the unperturbed input (``--vis-class top``; the 0%
            accuracy is then 1). Default: None
        mode (str, optional): ``"positive"`` (most relevant first) or ``"negative"``
            (least relevant first). Default: ``"positive"``
        baseline (str, float or Tensor, optional): ``"black"`` (see above),
            ``"zero"``, ``"mean"``, ``"blur"``, a number or a tensor broadcastable to
            ``inputs``. Default: ``"black"``
        mean (sequence of float, optional): per-channel mean the inputs were
            normalised with; used by ``baseline="black"``. Default: None
        std (sequence of float, optional): per-channel std the inputs were
            normalised with; used by ``baseline="black"``. Default: None
        steps (sequence of float, optional): fractions removed.
            Default: ``(0.1, 0.2, ..., 0.9)``
        token_level (bool, optional): remove whole patches (tokens) instead of
            pixels: at step :math:`p`, :math:`\lfloor p \cdot g_h g_w \rfloor` patches,
            ranked by their summed attribution (or the token grid itself).
            Default: False
        patch_size (int, optional): the patch size for ``token_level=True``;
            inferred from a token-grid attribution when None. Default: None
        additional_forward_args (Any, optional): extra arguments of
            ``forward_func``. Default: None
        internal_batch_size (int, optional): perturbed copies per forward pass;
            ``None`` means ``B``. Default: None
        show_progress (bool, optional): tqdm progress bar. Default: False

    Returns:
        :class:`CurveResult`: ``auc`` ``(B,)`` per-image AUC (its mean is the
        dataset AUC), ``curve`` ``(B, S + 1)`` 0/1 correctness, column 0 unperturbed,
        ``fractions`` ``[0, 0.1, ..., 0.9]``.

    Examples::

        >>> import torch
        >>> from captum_vit.metrics import perturbation_test
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
        >>> x = torch.randn(2, 3, 4, 4)
        >>> attr = torch.rand(2, 4, 4)
        >>> res = perturbation_test(model, x, attr, mode="negative",
        ...                         mean=[0.5] * 3, std=[0.5] * 3)
        >>> res.curve.shape
        torch.Size([2, 10])
    """
    inputs = _check_inputs(inputs)
    if mode not in ("positive", "negative"):
        raise ValueError(f"`mode` must be 'positive' or 'negative', got {mode!r}.")
    steps = [float(s) for s in steps]
    if not steps or any(not 0.0 < s <= 1.0 for s in steps):
        raise ValueError("`steps` must be fractions in (0, 1].")
    B, _, H, W = inputs.shape
    _check_batch(attributions, B, "attributions")
    if not token_level and patch_size is not None:
        raise ValueError("`patch_size` is only used with `token_level=True`.")
    psize = _resolve_patch_size(inputs, attributions, patch_size, token_level)
    batch_size = _check_batch_size(internal_batch_size, B)
    scores = _feature_scores(inputs, attributions, psize)
    n_features = scores.shape[1]
    fill = _resolve_baseline(baseline, inputs, mean, std)
    tgt = _format_target(target, B, inputs.device)

    out0 = _unperturbed_outputs(
        forward_func, inputs, additional_forward_args, batch_size
    )
    pred0 = out0.argmax(dim=1)
    if tgt is None:
        tgt = pred0
    ranks = _ranks(scores, descending=(mode == "positive"))
    counts = [int(n_features * s) for s in steps]

    def reduce(out: Tensor, rows: Tensor) -> Tensor:
        return (out.argmax(dim=1) == tgt[rows]).float()

    curve = _perturbation_curve(
        forward_func,
        inputs,
        ranks,
        counts,
        fill,
        False,
        psize,
        reduce,
        batch_size,
        additional_forward_args,
        show_progress,
        f"perturbation test ({mode})",
    )
    curve = torch.cat([(pred0 == tgt).float()[:, None], curve], dim=1)
    fractions = torch.tensor([0.0] + steps, dtype=torch.float64, device=inputs.device)
    return CurveResult(_trapezoid(curve, fractions), curve, fractions.float())


def _subset_masks_from(subsets: Tensor, rows: Tensor, runs: Tensor, n_features: int):
    if subsets.dim() == 2:
        idx = subsets[runs]
    else:
        idx = subsets[rows, runs]
    mask = torch.zeros(idx.shape[0], n_features, dtype=torch.bool, device=idx.device)
    mask.scatter_(1, idx, True)
    return mask


def _draw_subsets(
    n_features: int, n_runs: int, size: int, generator: Optional[torch.Generator]
) -> Tensor:
    return torch.stack(
        [torch.randperm(n_features, generator=generator)[:size] for _ in range(n_runs)]
    )


def _make_generator(seed: Optional[int], generator: Optional[torch.Generator]):
    if seed is not None and generator is not None:
        raise ValueError("Give either `seed` or `generator`, not both.")
    if seed is not None:
        return torch.Generator().manual_seed(int(seed))
    return generator


def _subset_correlation(
    forward_func,
    inputs,
    scores,
    subsets,
    tgt,
    fill,
    patch_size,
    apply_softmax,
    additional_forward_args,
    batch_size,
    show_progress,
    desc,
    base_scores,
) -> Tensor:
    """Pearson correlation over subsets of sum(attr[S]) and f(x) - f(x_S)."""
    B, _, H, W = inputs.shape
    n_features = scores.shape[1]
    R = subsets.shape[-2]
    subsets = subsets.to(inputs.device)
    reduce = _score_reduce(tgt, apply_softmax)

    def build(idx: Tensor):
        rows = torch.div(idx, R, rounding_mode="floor")
        runs = idx % R
        mask = _subset_masks_from(subsets, rows, runs, n_features)
        pix = _feature_mask_to_pixels(mask, (H, W), patch_size)
        return torch.where(pix, fill[rows], inputs[rows]), rows

    perturbed = _chunked_outputs(
        forward_func,
        B * R,
        build,
        reduce,
        batch_size,
        B,
        additional_forward_args,
        inputs.device,
        show_progress,
        desc,
    ).reshape(B, R)
    deltas = base_scores[:, None] - perturbed
    if subsets.dim() == 2:
        att_sums = scores[:, subsets].sum(dim=-1)  # (B, R)
    else:
        att_sums = torch.gather(
            scores[:, None, :].expand(B, R, n_features), 2, subsets
        ).sum(dim=-1)
    return _pearson(att_sums, deltas, dim=1)


def _check_subsets(subsets: Tensor, B: int, n_features: int) -> Tensor:
    if not isinstance(subsets, Tensor) or subsets.dim() not in (2, 3):
        raise ValueError(
            "`subsets` must be a (n_runs, size) or (B, n_runs, size) tensor of feature "
            "indices."
        )
    if subsets.dim() == 3 and subsets.shape[0] != B:
        raise ValueError(f"`subsets` has {subsets.shape[0]} rows for {B} inputs.")
    if subsets.numel() and (subsets.min() < 0 or subsets.max() >= n_features):
        raise ValueError(f"`subsets` indices must lie in [0, {n_features}).")
    return subsets.long()


def _prepare_correlation(
    forward_func,
    inputs,
    attributions,
    target,
    baseline,
    patch_size,
    apply_softmax,
    additional_forward_args,
    internal_batch_size,
):
    inputs = _check_inputs(inputs)
    B = inputs.shape[0]
    _check_batch(attributions, B, "attributions")
    batch_size = _check_batch_size(internal_batch_size, B)
    scores = _feature_scores(inputs, attributions, patch_size)
    fill = _resolve_baseline(baseline, inputs)
    tgt = _format_target(target, B, inputs.device)
    out0 = _unperturbed_outputs(
        forward_func, inputs, additional_forward_args, batch_size
    )
    if tgt is None:
        tgt = out0.argmax(dim=1)
    base = _score_reduce(tgt, apply_softmax)(
        out0, torch.arange(B, device=inputs.device)
    )
    return inputs, scores, fill, tgt, base, batch_size


def faithfulness_correlation(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    n_runs: int = 100,
    subset_size: Optional[int] = None,
    baseline: BaselineType = "zero",
    patch_size: Optional[int] = None,
    subsets: Optional[Tensor] = None,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    apply_softmax: bool = False,
    additional_forward_args: Any = None,
    internal_batch_size: Optional[int] = None,
    show_progress: bool = False,
) -> Tensor:
    r"""Faithfulness correlation of Bhatt, Weller and Moura (2020), "Evaluating and
    Aggregating Feature-based Model Explanations", IJCAI,
    https://arxiv.org/abs/2005.00631.

    For ``n_runs`` random subsets :math:`S` of ``subset_size`` features (pixels, or
    patches when ``patch_size`` is set), the Pearson correlation between the summed
    attribution of the subset and the drop of the target output when the subset is
    set to the baseline. **Higher is better** (in [-1, 1]).

    .. math::

        \mu_F(f, g; x) = \operatorname{corr}_{S \in \binom{[d]}{|S|}}
        \Big(\sum_{i \in S} g(f, x)_i,\; f(x) - f\big(x_{[x_S = \bar x_S]}\big)\Big)

    Random subsets are drawn once per call and shared by all images of the batch, so
    an image's score depends only on ``seed``, not on the other images. Pass
    ``subsets`` to fix them (shape ``(n_runs, size)`` shared, or ``(B, n_runs, size)``
    per image, as Quantus draws them).

    Args:

        forward_func (Callable): model mapping ``(N, C, H, W)`` to
            ``(N, num_classes)``.
        inputs (Tensor): ``(B, C, H, W)`` images.
        attributions (Tensor): any Captum layout or a token grid; channels summed.
        target (int, list, Tensor, optional): explained class; ``None`` = predicted.
            Default: None
        n_runs (int, optional): number of random subsets. Default: 100
        subset_size (int, optional): features per subset; ``None`` means 10% of the
            features (Bhatt et al. and Quantus use 224 pixels). Default: None
        baseline (str, float or Tensor, optional): value of removed features
            (``"zero"``, ``"mean"``, ``"blur"``, number or tensor). Default: ``"zero"``
        patch_size (int, optional): subsets of whole patches (token level) instead of
            pixels. Default: None
        subsets (Tensor, optional): explicit feature indices, overriding ``n_runs``
            and ``subset_size``. Default: None
        seed (int, optional): seed of the subset draw. Default: None
        generator (torch.Generator, optional): generator for the draw (instead of
            ``seed``). Default: None
        apply_softmax (bool, optional): use softmax probabilities instead of the raw
            output (Quantus' default is the raw output). Default: False
        additional_forward_args (Any, optional): extra forward arguments.
            Default: None
        internal_batch_size (int, optional): perturbed copies per forward pass;
            ``None`` means ``B``. Default: None
        show_progress (bool, optional): tqdm progress bar. Default: False

    Returns:
        Tensor: ``(B,)`` correlation per image (NaN where a variance is zero).

    Examples::

        >>> import torch
        >>> from captum_vit.metrics import faithfulness_correlation
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
        >>> x, attr = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
        >>> faithfulness_correlation(model, x, attr, target=1, n_runs=20,
        ...                          subset_size=4, seed=0).shape
        torch.Size([2])
    """
    inputs, scores, fill, tgt, base, batch_size = _prepare_correlation(
        forward_func,
        inputs,
        attributions,
        target,
        baseline,
        patch_size,
        apply_softmax,
        additional_forward_args,
        internal_batch_size,
    )
    n_features = scores.shape[1]
    if subsets is None:
        if subset_size is None:
            subset_size = max(1, round(0.1 * n_features))
        if not isinstance(n_runs, int) or n_runs < 2:
            raise ValueError(f"`n_runs` must be an int >= 2, got {n_runs!r}.")
        if not isinstance(subset_size, int) or not 1 <= subset_size <= n_features:
            raise ValueError(
                f"`subset_size` must be an int in [1, {n_features}], got "
                f"{subset_size!r}."
            )
        subsets = _draw_subsets(
            n_features, n_runs, subset_size, _make_generator(seed, generator)
        )
    subsets = _check_subsets(subsets, inputs.shape[0], n_features)
    return _subset_correlation(
        forward_func,
        inputs,
        scores,
        subsets,
        tgt,
        fill,
        patch_size,
        apply_softmax,
        additional_forward_args,
        batch_size,
        show_progress,
        "faithfulness correlation",
        base,
    )


def sensitivity_n(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Tensor,
    n: Union[int, Sequence[int]],
    target: TargetType = None,
    n_subsets: int = 100,
    baseline: BaselineType = "zero",
    patch_size: Optional[int] = None,
    subsets: Optional[Sequence[Tensor]] = None,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    apply_softmax: bool = False,
    additional_forward_args: Any = None,
    internal_batch_size: Optional[int] = None,
    show_progress: bool = False,
) -> Tensor:
    r"""Sensitivity-n of Ancona, Ceolini, Öztireli and Gross (2018), "Towards better
    understanding of gradient-based attribution methods for Deep Neural Networks",
    ICLR, https://arxiv.org/abs/1711.06104.

    For each cardinality :math:`n`, the Pearson correlation, over ``n_subsets`` random
    subsets :math:`S` of :math:`n` features (pixels, or patches when ``patch_size`` is
    set), between the summed attribution of :math:`S` and the output variation when
    :math:`S` is set to the baseline. A method satisfies sensitivity-n when the
    correlation is 1. **Higher is better.**

    .. math::

        \mathrm{Sens}_n(x) = \operatorname{corr}_{S \subseteq [d],\,|S| = n}
        \Big(\sum_{i \in S} R_i(x),\; f_t(x) - f_t\big(x_{[x_S = \bar x_S]}\big)\Big)

    Note: Quantus 0.6's ``SensitivityN`` computes a different quantity (features
    removed cumulatively in attribution order, correlation taken *across the images of
    a batch* for each step); this function follows the paper.

    Args:

        forward_func (Callable): model mapping ``(N, C, H, W)`` to
            ``(N, num_classes)``.
        inputs (Tensor): ``(B, C, H, W)`` images.
        attributions (Tensor): any Captum layout or a token grid; channels summed.
        n (int or sequence of int): subset cardinality (or several).
        target (int, list, Tensor, optional): explained class; ``None`` = predicted.
            Default: None
        n_subsets (int, optional): random subsets per cardinality. Default: 100
        baseline (str, float or Tensor, optional): value of removed features.
            Default: ``"zero"``
        patch_size (int, optional): subsets of whole patches (token level).
            Default: None
        subsets (sequence of Tensor, optional): explicit subsets, one
            ``(n_subsets, n_i)`` or ``(B, n_subsets, n_i)`` tensor per cardinality.
            Default: None
        seed (int, optional): seed of the subset draw. Default: None
        generator (torch.Generator, optional): generator (instead of ``seed``).
            Default: None
        apply_softmax (bool, optional): use softmax probabilities. Default: False
        additional_forward_args (Any, optional): extra forward arguments.
            Default: None
        internal_batch_size (int, optional): perturbed copies per forward pass;
            ``None`` means ``B``. Default: None
        show_progress (bool, optional): tqdm progress bar. Default: False

    Returns:
        Tensor: ``(B,)`` for an int ``n``, ``(B, len(n))`` for a sequence.

    Examples::

        >>> import torch
        >>> from captum_vit.metrics import sensitivity_n
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
        >>> x, attr = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
        >>> sensitivity_n(model, x, attr, n=[1, 4], target=0, n_subsets=10,
        ...               seed=0).shape
        torch.Size([2, 2])
    """
    single = isinstance(n, int)
    ns = [n] if single else list(n)
    inputs, scores, fill, tgt, base, batch_size = _prepare_correlation(
        forward_func,
        inputs,
        attributions,
        target,
        baseline,
        patch_size,
        apply_softmax,
        additional_forward_args,
        internal_batch_size,
    )
    n_features = scores.shape[1]
    if subsets is not None:
        if isinstance(subsets, Tensor):
            subsets = [subsets]
        if len(subsets) != len(ns):
            raise ValueError("`subsets` needs one tensor per cardinality in `n`.")
    else:
        for k in ns:
            if not isinstance(k, int) or not 1 <= k <= n_features:
                raise ValueError(
                    f"each `n` must be an int in [1, {n_features}], got {k!r}."
                )
        if not isinstance(n_subsets, int) or n_subsets < 2:
            raise ValueError(f"`n_subsets` must be an int >= 2, got {n_subsets!r}.")
        gen = _make_generator(seed, generator)
        subsets = [_draw_subsets(n_features, n_subsets, k, gen) for k in ns]
    out = []
    for k, subs in zip(ns, subsets):
        subs = _check_subsets(subs, inputs.shape[0], n_features)
        out.append(
            _subset_correlation(
                forward_func,
                inputs,
                scores,
                subs,
                tgt,
                fill,
                patch_size,
                apply_softmax,
                additional_forward_args,
                batch_size,
                show_progress,
                f"sensitivity-{k}",
                base,
            )
        )
    res = torch.stack(out, dim=1)
    return res[:, 0] if single else res
