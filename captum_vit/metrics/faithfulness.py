"""Faithfulness criteria: deletion / insertion, the positive / negative perturbation
test, faithfulness correlation and sensitivity-n.

Every function evaluates its perturbed copies in chunks of ``internal_batch_size``
through ``forward_func`` under :func:`torch.no_grad`; the model's mode is left as it is
(call ``model.eval()`` yourself). They share one setup (:class:`_Setup`: the checked
inputs, the attribution per feature, the baseline, the target) and one loop over the
perturbed copies (:meth:`_Setup.perturbed_scores`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._batching import select_rows
from .._maps import tokens_to_pixels
from .._targets import TargetType, check_target_range, format_target
from ._docs import shared_args
from ._results import CurveResult
from ._utils import (
    BaselineType,
    _check_batch,
    _check_batch_size,
    _check_inputs,
    _forward,
    _generator,
    _infer_patch_size,
    _pearson,
    _progress,
    _ranks,
    _resolve_baseline,
    _to_pixel_map,
    _to_token_map,
)

#: ``reduce(outputs, rows)``: one value per perturbed copy from the forward outputs
#: ``(n, classes)`` of copies of the input rows ``rows``.
Reduce = Callable[[Tensor, Tensor], Tensor]
#: ``feature_mask(rows, copies)``: ``(n, N)`` bool, the features perturbed in copy
#: ``copies[i]`` of input ``rows[i]``.
FeatureMask = Callable[[Tensor, Tensor], Tensor]
#: ``(mean, std)`` per channel the inputs were normalised with (None: not known).
Normalisation = Tuple[Optional[Sequence[float]], Optional[Sequence[float]]]


class _Setup(NamedTuple):
    """What a faithfulness metric has checked and prepared for one call.

    Attributes:
        forward_func (Callable): the model.
        inputs (Tensor): ``(B, C, H, W)`` checked inputs.
        scores (Tensor): ``(B, N)`` attribution per feature (pixel or patch).
        patch_size (int or None): the features are patches of this size, or pixels.
        fill (Tensor): the baseline, shaped like ``inputs``.
        target (Tensor or None): ``(B,)`` explained classes; None = predicted.
        batch_size (int): perturbed copies per forward pass.
        additional_forward_args (Any): extra forward arguments.
        show_progress (bool): tqdm bar over the chunks.
    """

    forward_func: Callable
    inputs: Tensor
    scores: Tensor
    patch_size: Optional[int]
    fill: Tensor
    target: Optional[Tensor]
    batch_size: int
    additional_forward_args: Any
    show_progress: bool

    @property
    def n_features(self) -> int:
        return self.scores.shape[1]

    @torch.no_grad()
    def _chunks(
        self,
        *,
        n_total: int,
        build: Callable[[Tensor], Tensor],
        rows_of: Callable[[Tensor], Tensor],
        reduce: Reduce,
        desc: str = "",
    ) -> Tensor:
        """Run ``n_total`` inputs ``build(idx)`` (copies of the input rows
        ``rows_of(idx)``) through the model in chunks; ``reduce`` each chunk."""
        B, device = self.inputs.shape[0], self.inputs.device
        results: List[Tensor] = []
        starts = range(0, n_total, self.batch_size)
        total = math.ceil(n_total / self.batch_size)
        for start in _progress(starts, self.show_progress and bool(desc), desc, total):
            idx = torch.arange(
                start, min(start + self.batch_size, n_total), device=device
            )
            rows = rows_of(idx)
            args = select_rows(self.additional_forward_args, rows, B)
            out = _forward(self.forward_func, build(idx), args)
            results.append(reduce(out, rows))
        if not results:
            return torch.empty(0, device=device)
        return torch.cat(results)

    def outputs(self) -> Tensor:
        """``(B, classes)`` outputs on the unperturbed inputs."""
        return self._chunks(
            n_total=self.inputs.shape[0],
            build=lambda idx: self.inputs[idx],
            rows_of=lambda idx: idx,
            reduce=lambda out, rows: out,
        )

    def resolve_target(self, outputs: Tensor) -> Tensor:
        """The explained classes: ``target``, or the prediction on ``outputs``."""
        if self.target is None:
            return outputs.argmax(dim=1)
        check_target_range(self.target, outputs.shape[1])
        return self.target

    def class_score(self, apply_softmax: bool) -> Tuple[Reduce, Tensor]:
        """The (softmax) output of each copy's explained class (``target``, or the
        class predicted on the unperturbed inputs), and its ``(B,)`` value on the
        unperturbed inputs."""
        outputs = self.outputs()
        score = _class_score(self.resolve_target(outputs), apply_softmax)
        rows = torch.arange(outputs.shape[0], device=outputs.device)
        return score, score(outputs, rows)

    def perturbed_scores(
        self,
        *,
        copies: int,
        feature_mask: FeatureMask,
        insert: bool = False,
        reduce: Reduce,
        desc: str,
    ) -> Tensor:
        """``(B, copies)``: ``reduce`` of the model's output on each perturbed copy.

        Deletion (``insert=False``): the masked features take the baseline's value.
        Insertion (``insert=True``): start from the baseline and put the masked
        features back.
        """
        B, _, H, W = self.inputs.shape

        def rows_of(idx: Tensor) -> Tensor:
            return torch.div(idx, copies, rounding_mode="floor")

        def build(idx: Tensor) -> Tensor:
            rows = rows_of(idx)
            mask = feature_mask(rows, idx % copies)
            if self.patch_size is None:
                pix = mask.reshape(-1, 1, H, W)
            else:
                grid = mask.reshape(-1, H // self.patch_size, W // self.patch_size)
                pix = tokens_to_pixels(grid, (H, W), self.patch_size, mode="nearest")
            original, baseline = self.inputs[rows], self.fill[rows]
            if insert:
                return torch.where(pix, original, baseline)
            return torch.where(pix, baseline, original)

        values = self._chunks(
            n_total=B * copies, build=build, rows_of=rows_of, reduce=reduce, desc=desc
        )
        return values.reshape(B, copies)


class _Explained(NamedTuple):
    """What every faithfulness metric evaluates: the model, the inputs, their
    attributions and the explained classes (the public functions' first
    arguments)."""

    forward_func: Callable
    inputs: Tensor
    attributions: Tensor
    target: TargetType


class _Run(NamedTuple):
    """How the perturbed copies run through the model (the ``run_args`` every
    model-running metric takes, last)."""

    additional_forward_args: Any
    internal_batch_size: Optional[int]
    show_progress: bool


def _setup(
    explained: _Explained,
    *,
    baseline: BaselineType,
    patch_size: Optional[int],
    run: _Run,
    infer_patch_size: bool = False,
    normalisation: Normalisation = (None, None),
) -> _Setup:
    """Check the arguments every faithfulness metric takes and prepare them.

    With ``infer_patch_size`` and no ``patch_size``, the patch size is read from a
    token-grid attribution. ``normalisation``: the ``(mean, std)`` the inputs were
    normalised with, for ``baseline="black"``.
    """
    inputs = _check_inputs(explained.inputs)
    attributions = explained.attributions
    B, _, H, W = inputs.shape
    _check_batch(attributions, B, "attributions")
    if infer_patch_size and patch_size is None:
        patch_size = _infer_patch_size(attributions, (H, W))
    batch_size = _check_batch_size(run.internal_batch_size, B)
    if patch_size is None:
        scores = _to_pixel_map(attributions, (H, W), B).reshape(B, -1)
    else:
        scores = _to_token_map(attributions, (H, W), patch_size, B).reshape(B, -1)
    return _Setup(
        forward_func=explained.forward_func,
        inputs=inputs,
        scores=scores,
        patch_size=patch_size,
        fill=_resolve_baseline(baseline, inputs, *normalisation),
        target=format_target(explained.target, B, device=inputs.device),
        batch_size=batch_size,
        additional_forward_args=run.additional_forward_args,
        show_progress=run.show_progress,
    )


def _class_score(target: Tensor, apply_softmax: bool) -> Reduce:
    """The (softmax) output of each copy's explained class."""

    def reduce(out: Tensor, rows: Tensor) -> Tensor:
        check_target_range(target, out.shape[1])
        if apply_softmax:
            out = torch.softmax(out.float(), dim=1)
        return out.gather(1, target[rows, None])[:, 0].float()

    return reduce


def _trapezoid(curve: Tensor, fractions: Tensor) -> Tensor:
    return torch.trapezoid(curve.double(), fractions.double(), dim=-1).float()


def _step_counts(
    n_features: int, n_steps: Optional[int], step_size: Optional[int]
) -> List[int]:
    if step_size is not None:
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size must be a positive int, got {step_size!r}")
        n = -(-n_features // step_size)
        return [min(i * step_size, n_features) for i in range(n + 1)]
    if n_steps is None:
        n_steps = min(100, n_features)
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    return [(i * n_features) // n_steps for i in range(n_steps + 1)]


def _ranked_curve(
    setup: _Setup,
    *,
    descending: bool,
    counts: Sequence[int],
    insert: bool = False,
    reduce: Reduce,
    desc: str,
) -> Tensor:
    """``(B, S)`` scores after perturbing the ``counts[s]`` first-ranked features."""
    ranks = _ranks(setup.scores, descending=descending)
    counts_t = torch.as_tensor(list(counts), dtype=torch.long, device=ranks.device)
    return setup.perturbed_scores(
        copies=len(counts),
        feature_mask=lambda rows, steps: ranks[rows] < counts_t[steps][:, None],
        insert=insert,
        reduce=reduce,
        desc=desc,
    )


def _deletion_insertion(
    setup: _Setup,
    *,
    insert: bool,
    n_steps: Optional[int],
    step_size: Optional[int],
    apply_softmax: bool,
) -> CurveResult:
    """:func:`deletion_auc` (``insert=False``) and :func:`insertion_auc` on the
    prepared call."""
    counts = _step_counts(setup.n_features, n_steps, step_size)
    resolved = setup.target
    if resolved is None:
        resolved = setup.resolve_target(setup.outputs())
    curve = _ranked_curve(
        setup,
        descending=True,
        counts=counts,
        insert=insert,
        reduce=_class_score(resolved, apply_softmax),
        desc="insertion" if insert else "deletion",
    )
    fractions = torch.as_tensor(counts, dtype=torch.float64) / setup.n_features
    fractions = fractions.to(device=setup.inputs.device)
    return CurveResult(_trapezoid(curve, fractions), curve, fractions.float())


@shared_args
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

    **AOPC** (area over the MoRF perturbation curve, Samek, Binder, Montavon,
    Lapuschkin and Müller (2017), "Evaluating the Visualization of What a Deep
    Neural Network Has Learned", IEEE TNNLS, https://arxiv.org/abs/1509.06321)
    is the same curve read differently, so it has no function of its own:

    .. math::

        \mathrm{AOPC}(x) = \frac{1}{L + 1} \sum_{k=0}^{L}
        \big(f(x^{(0)}) - f(x^{(k)})\big)
        = \texttt{curve[:, 0] - curve.mean(dim=1)}

    with ``res = deletion_auc(..., n_steps=L)`` (one region per step: ``patch_size``
    for Samek et al.'s square regions, or ``step_size``; ``apply_softmax=False``
    for their raw score ``f``; ``baseline`` for their replacement, e.g. uniform
    noise as a tensor). Higher AOPC is better; ``tests/metrics/test_aopc.py``
    checks the equality against a direct implementation.

    Args:

        {curve_model_args}
        {curve_baseline}
            Default: "zero"
        {curve_steps}
        {run_args}

    Returns:
        :class:`CurveResult`: ``auc`` ``(B,)``, ``curve`` ``(B, S + 1)`` (column 0 is
        the unperturbed point), ``fractions`` ``(S + 1,)``.

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
    explained = _Explained(forward_func, inputs, attributions, target)
    run = _Run(additional_forward_args, internal_batch_size, show_progress)
    setup = _setup(explained, baseline=baseline, patch_size=patch_size, run=run)
    return _deletion_insertion(
        setup,
        insert=False,
        n_steps=n_steps,
        step_size=step_size,
        apply_softmax=apply_softmax,
    )


@shared_args
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

    Args:

        {curve_model_args}
        {curve_baseline}
            Default: "blur"
        {curve_steps}
        {run_args}

    Returns:
        :class:`CurveResult`: ``auc`` ``(B,)``, ``curve`` ``(B, S + 1)`` (column 0 is
        the unperturbed point), ``fractions`` ``(S + 1,)``.

    Examples::

        >>> import torch
        >>> from captum_vit.metrics import insertion_auc
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
        >>> x = torch.randn(2, 3, 4, 4)
        >>> attr = torch.randn(2, 4, 4)
        >>> insertion_auc(model, x, attr, target=[0, 2], n_steps=4).auc.shape
        torch.Size([2])
    """
    explained = _Explained(forward_func, inputs, attributions, target)
    run = _Run(additional_forward_args, internal_batch_size, show_progress)
    setup = _setup(explained, baseline=baseline, patch_size=patch_size, run=run)
    return _deletion_insertion(
        setup,
        insert=True,
        n_steps=n_steps,
        step_size=step_size,
        apply_softmax=apply_softmax,
    )


CHEFER_STEPS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@shared_args
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
    correct_only: bool = False,
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
        target (int, tuple, Tensor, list or array, optional): the explained
            class (Captum's target forms), against which top-1 accuracy is
            measured (their ``--vis-class target``). ``None`` uses the class
            predicted on the unperturbed input (``--vis-class top``; the 0%
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
        correct_only (bool, optional): restrict the test to the images the model
            classifies correctly (its prediction on the unperturbed input is
            ``target``), as the authors' users ask (Transformer-Explainability
            #44): the ``auc`` and ``curve`` of the other images are NaN, so the
            mean over the finite values is the AUC over the correct images. Only
            meaningful with a ``target`` (with ``None`` every image is
            "correct"). The misclassified images are still run through the
            model (the result has the batch's shape). Default: False
        {run_args}

    Returns:
        :class:`CurveResult`: ``auc`` ``(B,)`` per-image AUC (its mean is the
        dataset AUC; ``auc.nanmean()`` with ``correct_only``), ``curve``
        ``(B, S + 1)`` 0/1 correctness, column 0 unperturbed, ``fractions``
        ``[0, 0.1, ..., 0.9]``.

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
    if mode not in ("positive", "negative"):
        raise ValueError(f"mode must be 'positive' or 'negative', got {mode!r}")
    steps = [float(s) for s in steps]
    if not steps or any(not 0.0 < s <= 1.0 for s in steps):
        raise ValueError(f"steps must be fractions in (0, 1], got {steps!r}")
    if not token_level and patch_size is not None:
        raise ValueError("patch_size is only used with token_level=True")
    explained = _Explained(forward_func, inputs, attributions, target)
    run = _Run(additional_forward_args, internal_batch_size, show_progress)
    setup = _setup(
        explained,
        baseline=baseline,
        normalisation=(mean, std),
        patch_size=patch_size,
        infer_patch_size=token_level,
        run=run,
    )
    outputs = setup.outputs()
    pred0 = outputs.argmax(dim=1)
    target = setup.resolve_target(outputs)
    curve = _ranked_curve(
        setup,
        descending=(mode == "positive"),
        counts=[int(setup.n_features * s) for s in steps],
        reduce=lambda out, rows: (out.argmax(dim=1) == target[rows]).float(),
        desc=f"perturbation test ({mode})",
    )
    correct = pred0 == target
    curve = torch.cat([correct.float()[:, None], curve], dim=1)
    if correct_only:
        curve = torch.where(correct[:, None], curve, torch.nan)
    fractions = torch.tensor(
        [0.0] + steps, dtype=torch.float64, device=setup.inputs.device
    )
    return CurveResult(_trapezoid(curve, fractions), curve, fractions.float())


def _random_subsets(
    n_features: int, n_runs: int, size: int, generator: Optional[torch.Generator]
) -> Tensor:
    return torch.stack(
        [torch.randperm(n_features, generator=generator)[:size] for _ in range(n_runs)]
    )


def _check_subsets(subsets: Any, batch_size: int, n_features: int) -> Tensor:
    if not isinstance(subsets, Tensor) or subsets.dim() not in (2, 3):
        raise ValueError(
            "subsets must be a (n_runs, size) or (B, n_runs, size) tensor of feature "
            "indices"
        )
    if subsets.dim() == 3 and subsets.shape[0] != batch_size:
        raise ValueError(f"subsets has {subsets.shape[0]} rows for {batch_size} inputs")
    if subsets.numel() and (subsets.min() < 0 or subsets.max() >= n_features):
        raise ValueError(f"subsets indices must lie in [0, {n_features})")
    return subsets.long()


class _Correlation(NamedTuple):
    """The unperturbed scores of :func:`faithfulness_correlation` and
    :func:`sensitivity_n`, and the correlation over subsets they share."""

    setup: _Setup
    score: Reduce
    base: Tensor

    @classmethod
    def prepare(cls, setup: _Setup, *, apply_softmax: bool) -> _Correlation:
        return cls(setup, *setup.class_score(apply_softmax))

    def __call__(self, subsets: Tensor, *, desc: str) -> Tensor:
        """``(B,)`` Pearson correlation over the subsets of ``sum(attr[S])`` and
        ``f(x) - f(x_S)``."""
        setup = self.setup
        B, N = setup.scores.shape
        subsets = _check_subsets(subsets, B, N).to(setup.inputs.device)
        runs = subsets.shape[-2]

        def feature_mask(rows: Tensor, copies: Tensor) -> Tensor:
            idx = subsets[copies] if subsets.dim() == 2 else subsets[rows, copies]
            mask = torch.zeros(idx.shape[0], N, dtype=torch.bool, device=idx.device)
            return mask.scatter_(1, idx, True)

        perturbed = setup.perturbed_scores(
            copies=runs, feature_mask=feature_mask, reduce=self.score, desc=desc
        )
        deltas = self.base[:, None] - perturbed
        if subsets.dim() == 2:
            att_sums = setup.scores[:, subsets].sum(dim=-1)  # (B, R)
        else:
            att_sums = torch.gather(
                setup.scores[:, None, :].expand(B, runs, N), 2, subsets
            ).sum(dim=-1)
        return _pearson(att_sums, deltas, dim=1)


@shared_args
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

        {model_args}
        {target}
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
        {run_args}

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
    explained = _Explained(forward_func, inputs, attributions, target)
    run = _Run(additional_forward_args, internal_batch_size, show_progress)
    setup = _setup(explained, baseline=baseline, patch_size=patch_size, run=run)
    correlation = _Correlation.prepare(setup, apply_softmax=apply_softmax)
    n_features = setup.n_features
    if subsets is None:
        if subset_size is None:
            subset_size = max(1, round(0.1 * n_features))
        if not isinstance(n_runs, int) or n_runs < 2:
            raise ValueError(f"n_runs must be an int >= 2, got {n_runs!r}")
        if not isinstance(subset_size, int) or not 1 <= subset_size <= n_features:
            raise ValueError(
                f"subset_size must be an int in [1, {n_features}], got {subset_size!r}"
            )
        subsets = _random_subsets(
            n_features, n_runs, subset_size, _generator(seed, generator)
        )
    return correlation(subsets, desc="faithfulness correlation")


@shared_args
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

        {model_args}
        n (int or sequence of int): subset cardinality (or several).
        {target}
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
        {run_args}

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
    ns: List[int] = [n] if isinstance(n, int) else list(n)
    explained = _Explained(forward_func, inputs, attributions, target)
    run = _Run(additional_forward_args, internal_batch_size, show_progress)
    setup = _setup(explained, baseline=baseline, patch_size=patch_size, run=run)
    correlation = _Correlation.prepare(setup, apply_softmax=apply_softmax)
    n_features = setup.n_features
    if subsets is not None:
        if isinstance(subsets, Tensor):
            subsets = [subsets]
        if len(subsets) != len(ns):
            raise ValueError("subsets needs one tensor per cardinality in n")
    else:
        for k in ns:
            if not isinstance(k, int) or not 1 <= k <= n_features:
                raise ValueError(
                    f"each n must be an int in [1, {n_features}], got {k!r}"
                )
        if not isinstance(n_subsets, int) or n_subsets < 2:
            raise ValueError(f"n_subsets must be an int >= 2, got {n_subsets!r}")
        gen = _generator(seed, generator)
        subsets = [_random_subsets(n_features, n_subsets, k, gen) for k in ns]
    res = torch.stack(
        [correlation(s, desc=f"sensitivity-{k}") for k, s in zip(ns, subsets)], dim=1
    )
    return res[:, 0] if single else res
