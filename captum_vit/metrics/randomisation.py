r"""The model-randomisation sanity check of Adebayo et al. (NeurIPS 2018).

A faithful explanation depends on the model's weights: re-initialising the
model's layers, from the output down to the input (a *cascade*), should change
the map. :func:`model_randomisation` explains the same images on deep copies of
the model whose top ``k`` layers are re-initialised, ``k = 1 .. L``, and compares
each map with the trained model's; :func:`cascade_layers` names the layers and
:func:`randomised_copy` makes one such copy. The user's model is never changed.
"""

from __future__ import annotations

import copy
import re
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._maps import min_max
from .._targets import TargetType
from ..adapters import model_lock, unwrap
from ._utils import _check_inputs, _pearson, _to_pixel_map

#: ``(stage name, parameter names)``, top (output) to bottom (input).
Cascade = List[Tuple[str, List[str]]]

_BLOCK = re.compile(r"^(\d+|.*_\d+)$")


def cascade_layers(model: nn.Module) -> Cascade:
    r"""The layers of the cascade, from the output down to the input.

    The parameters (in ``named_parameters`` order) are grouped by the first
    component of their name that is an index (``blocks.3`` in timm,
    ``vit.encoder.layer.3`` in Hugging Face, ``encoder_layer_3`` in torchvision,
    ``layers.1`` for the stages of a Swin): one stage per transformer block (or
    block stage). The parameters before the first block form ``"embedding"``
    (patch and position embeddings, class token), the others ``"head"`` (final
    norm, pooling, classifier). The cascade is ``head``, the blocks from the last
    to the first, then ``embedding``.

    Args:
        model (nn.Module): the model.

    Returns:
        list of ``(name, parameter names)``: the stages, top to bottom.

    Raises:
        ValueError: no indexed block in the parameter names.

    Examples::

        >>> import timm
        >>> from captum_vit.metrics import cascade_layers
        >>> model = timm.create_model("vit_tiny_patch16_224", depth=2)
        >>> [name for name, _ in cascade_layers(model)]
        ['head', 'blocks.1', 'blocks.0', 'embedding']
    """
    blocks: dict = {}
    before: List[str] = []
    after: List[str] = []
    for name, _ in model.named_parameters():
        parts = name.split(".")
        hit = next((i for i, p in enumerate(parts[:-1]) if _BLOCK.match(p)), None)
        if hit is not None:
            blocks.setdefault(".".join(parts[: hit + 1]), []).append(name)
        elif blocks:
            after.append(name)
        else:
            before.append(name)
    if not blocks:
        raise ValueError(
            "found no indexed blocks (names like 'blocks.3') in the model's "
            "parameters; give the cascade explicitly with layers="
        )
    stages: Cascade = [("head", after)] if after else []
    stages += [(name, params) for name, params in reversed(list(blocks.items()))]
    if before:
        stages.append(("embedding", before))
    return stages


def _reinitialise(model: nn.Module, params: Sequence[str], seed: int) -> None:
    """Re-initialise ``params`` of ``model`` in place: modules whose own
    parameters all belong to the stage call their ``reset_parameters`` (their
    default initialisation); other parameters are drawn from N(0, 0.02^2),
    timm's initialisation of tokens and position embeddings. Seeded, without
    touching the global random state."""
    wanted = set(params)
    owners = {}
    for mname, module in model.named_modules():
        own = [
            f"{mname}.{p}" if mname else p
            for p, _ in module.named_parameters(recurse=False)
        ]
        if own and set(own) <= wanted and hasattr(module, "reset_parameters"):
            owners[mname] = module
            wanted -= set(own)
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=devices[:1]), torch.no_grad():
        torch.manual_seed(seed)
        for module in owners.values():
            module.reset_parameters()
        for name, p in model.named_parameters():
            if name in wanted:
                p.normal_(0.0, 0.02)


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` taken under the model's lock
    (:func:`captum_vit.adapters.model_lock`): while another thread explains the
    same model, its temporary per-instance forwards (which
    :func:`copy.deepcopy` would share with the copy, so that the copy ran the
    original's weights) are on the model; the copy waits until they are gone."""
    with model_lock(unwrap(model)):
        return copy.deepcopy(model)


def _stage_seed(seed: int, stage: int) -> int:
    return int(seed) * 1009 + stage


def randomised_copy(
    model: nn.Module,
    n_layers: Optional[int] = None,
    seed: int = 0,
    layers: Optional[Cascade] = None,
) -> nn.Module:
    r"""A deep copy of ``model`` with the top ``n_layers`` stages of the cascade
    re-initialised (:func:`cascade_layers`); ``model`` is not changed.

    Each stage is re-initialised with its own seed (derived from ``seed`` and its
    position in the cascade), so copy ``k`` of :func:`model_randomisation`
    equals ``randomised_copy(model, k, seed)``.

    Args:
        model (nn.Module): the trained model.
        n_layers (int, optional): stages to re-initialise. Default: None (all)
        seed (int, optional): seed of the re-initialisation. Default: 0
        layers (list, optional): the cascade; default :func:`cascade_layers`.
            Default: None

    Returns:
        nn.Module: the copy, in the same mode (train/eval) as ``model``.
    """
    stages = cascade_layers(model) if layers is None else layers
    n = len(stages) if n_layers is None else int(n_layers)
    if not 0 <= n <= len(stages):
        raise ValueError(f"n_layers must lie in [0, {len(stages)}], got {n_layers!r}")
    out = _copy(model)
    for k, (_, params) in enumerate(stages[:n]):
        _reinitialise(out, params, _stage_seed(seed, k))
    return out


def spearman(a: Tensor, b: Tensor) -> Tensor:
    r"""``(B,)`` Spearman rank correlation of two batches of maps (flattened per
    sample; ties take their average rank, as :func:`scipy.stats.spearmanr`);
    NaN where a map is constant."""
    from scipy.stats import rankdata

    ra = rankdata(a.detach().reshape(a.shape[0], -1).double().cpu().numpy(), axis=1)
    rb = rankdata(b.detach().reshape(b.shape[0], -1).double().cpu().numpy(), axis=1)
    return _pearson(torch.from_numpy(ra), torch.from_numpy(rb), dim=1)


def ssim(a: Tensor, b: Tensor, win_size: int = 7) -> Tensor:
    r"""``(B,)`` structural similarity (Wang et al. 2004) of two batches of
    ``(B, H, W)`` maps in :math:`[0, 1]`, as scikit-image's
    ``structural_similarity(a, b, data_range=1)`` computes it by default: a
    uniform ``win_size`` x ``win_size`` window, sample covariances,
    :math:`K_1 = 0.01`, :math:`K_2 = 0.03`, averaged over the windows that lie
    inside the image.

    .. math::

        \mathrm{SSIM}(a, b) = \frac{(2\mu_a\mu_b + C_1)(2\sigma_{ab} + C_2)}
        {(\mu_a^2 + \mu_b^2 + C_1)(\sigma_a^2 + \sigma_b^2 + C_2)}
    """
    x = a.detach().double()[:, None]
    y = b.detach().double()[:, None]
    if min(x.shape[-2:]) < win_size:
        raise ValueError(
            f"maps of size {tuple(x.shape[-2:])} are smaller than the window"
        )
    mean = lambda t: F.avg_pool2d(t, win_size, stride=1)  # noqa: E731
    n = win_size * win_size
    norm = n / (n - 1)
    ux, uy = mean(x), mean(y)
    vx = norm * (mean(x * x) - ux * ux)
    vy = norm * (mean(y * y) - uy * uy)
    vxy = norm * (mean(x * y) - ux * uy)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / (
        (ux * ux + uy * uy + c1) * (vx + vy + c2)
    )
    return s.mean(dim=(1, 2, 3)).float()


class RandomisationResult(NamedTuple):
    r"""Result of :func:`model_randomisation`.

    Attributes:
        spearman (Tensor): ``(B, L)`` Spearman rank correlation between the map
            on the trained model and on the copy with the top ``k`` stages
            re-initialised, ``k = 1 .. L`` (column ``k - 1``).
        ssim (Tensor): ``(B, L)`` SSIM of the same pairs.
        layers (list[str]): the stage re-initialised last in each column.
    """

    spearman: Tensor
    ssim: Tensor
    layers: List[str]


def _pixel_maps(attr: Tensor, size: Tuple[int, int], absolute: bool) -> Tensor:
    amap = _to_pixel_map(attr, size, attr.shape[0]).double()
    return amap.abs() if absolute else amap


def model_randomisation(
    model: nn.Module,
    method_factory: Callable[[nn.Module], Callable[..., Tensor]],
    inputs: Tensor,
    target: TargetType = None,
    attributions: Optional[Tensor] = None,
    n_layers: Optional[int] = None,
    seed: int = 0,
    absolute: bool = True,
    layers: Optional[Cascade] = None,
) -> RandomisationResult:
    r"""Cascading model-randomisation sanity check of Adebayo, Gilmer, Muelly,
    Goodfellow, Hardt and Kim (2018), "Sanity Checks for Saliency Maps", NeurIPS,
    https://arxiv.org/abs/1810.03292.

    The stages of the cascade (:func:`cascade_layers`: head, blocks from last to
    first, embedding) are re-initialised one after the other, top to bottom, on
    deep copies of ``model`` (the user's model is never changed); after each step
    ``k`` the method explains the same images on the copy
    :math:`\theta^{(k)}`, and its map :math:`E(x; \theta^{(k)})` is compared with
    the map on the trained model :math:`E(x; \theta)`:

    .. math::

        \rho_k = \operatorname{Spearman}\big(|E(x;\theta)|,
        |E(x;\theta^{(k)})|\big), \qquad
        \mathrm{SSIM}_k = \mathrm{SSIM}\big(\hat E(x;\theta),
        \hat E(x;\theta^{(k)})\big),

    :math:`\hat E` the min-max normalised :math:`|E|`. These are two of Adebayo
    et al.'s measures: Spearman rank correlation of the absolute maps (their
    "with absolute value" curves; ``absolute=False`` compares signed maps) and
    SSIM (scikit-image's defaults, :func:`ssim`); their HOG similarity is not
    computed. Both compare pixel maps (token grids are upsampled bilinearly) of
    the explained ``target``, the same class on every copy. A method that
    passes the check has similarities that fall towards 0 as the cascade
    proceeds: **lower is better**.

    The copies are taken safely while other threads explain the same model
    (the temporary per-instance overrides a method installs are not carried
    into a copy).

    Choices: a stage is re-initialised by its modules' ``reset_parameters``
    (their default initialisation: e.g. ``nn.Linear``'s Kaiming-uniform,
    ``nn.LayerNorm``'s ones and zeros), other parameters (class token, position
    embedding) from :math:`\mathcal N(0, 0.02^2)`; seeded per stage.

    Args:
        model (nn.Module): the trained model (left unchanged).
        method_factory (Callable): ``method_factory(model)`` returns the method's
            attribute function on ``model``, called as ``fn(inputs,
            target=target)``, e.g. ``lambda m: cv.GenericAttention(m).attribute``.
        inputs (Tensor): ``(B, C, H, W)`` images.
        target (int, tuple, Tensor, list or array, optional): explained class
            (Captum's target forms). Default: None (each model's prediction)
        attributions (Tensor, optional): the map on the trained model, if already
            computed. Default: None (computed with ``method_factory(model)``)
        n_layers (int, optional): how many stages of the cascade to go through.
            Default: None (all)
        seed (int, optional): seed of the re-initialisation. Default: 0
        absolute (bool, optional): compare absolute values (Adebayo et al.'s
            main figures). Default: True
        layers (list, optional): the cascade ``[(name, parameter names), ...]``,
            top to bottom. Default: None (:func:`cascade_layers`)

    Returns:
        :class:`RandomisationResult`: ``spearman`` and ``ssim`` ``(B, L)``, and
        the ``layers``.

    Examples::

        >>> import timm, torch
        >>> import captum_vit as cv
        >>> from captum_vit.metrics import model_randomisation
        >>> model = timm.create_model("vit_tiny_patch16_224", depth=2).eval()
        >>> x = torch.randn(2, 3, 224, 224)
        >>> res = model_randomisation(model, lambda m: cv.AttentionRollout(m).attribute,
        ...                           x, target=0)
        >>> res.layers, res.spearman.shape
        (['head', 'blocks.1', 'blocks.0', 'embedding'], torch.Size([2, 4]))
    """
    inputs = _check_inputs(inputs)
    size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
    stages = cascade_layers(model) if layers is None else list(layers)
    n = len(stages) if n_layers is None else int(n_layers)
    if not 1 <= n <= len(stages):
        raise ValueError(f"n_layers must lie in [1, {len(stages)}], got {n_layers!r}")
    if attributions is None:
        attributions = method_factory(model)(inputs, target=target)
    ref = _pixel_maps(attributions.detach(), size, absolute)
    ref_norm = min_max(ref)
    current = _copy(model)
    rho, sim = [], []
    for k, (_, params) in enumerate(stages[:n]):
        _reinitialise(current, params, _stage_seed(seed, k))
        amap = _pixel_maps(
            method_factory(current)(inputs, target=target), size, absolute
        )
        rho.append(spearman(ref, amap))
        sim.append(ssim(ref_norm, min_max(amap)))
    names = [name for name, _ in stages[:n]]
    return RandomisationResult(torch.stack(rho, 1), torch.stack(sim, 1), names)
