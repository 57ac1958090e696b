"""The two objectives of ViT Shapley, each trained by the shared :func:`fit`.

Exposed as :meth:`ViTShapley.train_surrogate` and
:meth:`ViTShapley.train_explainer`.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import adapters
from ._explainer import ShapleyExplainer
from ._game import efficient_normalisation, grand_and_null, link_function
from ._loop import Schedule, fit, training_device
from ._sampling import sample_shapley_subsets, sample_uniform_subsets
from ._state import copy_for_training, frozen
from ._surrogate import ShapleySurrogate, check_shapley_model, check_surrogate


def train_surrogate(
    model: nn.Module,
    dataloader: Iterable[Any],
    epochs: int = 1,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    masks_per_image: int = 1,
    max_steps: Optional[int] = None,
    seed: int = 0,
    device: Any = None,
    show_progress: bool = True,
) -> ShapleySurrogate:
    r"""Fine-tune a copy of ``model`` into a :class:`ShapleySurrogate`.

    Minimises :math:`\mathrm{KL}(\mathrm{softmax} f(x) \,\|\,
    \mathrm{softmax} g(x, S))` with :math:`S` drawn by
    :func:`sample_uniform_subsets`, using Adam. ``model`` is deep-copied
    twice (the frozen teacher in eval mode, and the trained copy); the
    user's model is never modified.

    Args:
        model (torch.nn.Module): the stock ViT classifier to explain.
        dataloader (iterable): yields image batches (a tensor, a
            tuple/list whose first item is the images, or a dict with
            ``"image"``/``"images"``), in the model's input space.
        epochs (int, optional): passes over ``dataloader``. Default: 1
        lr (float, optional): Adam learning rate. Default: 1e-4
        weight_decay (float, optional): Adam weight decay. Default: 0.0
        masks_per_image (int, optional): subsets drawn per image and step.
            Default: 1
        max_steps (int, optional): stop after this many batches.
            Default: None
        seed (int, optional): seeds the subset sampling. Default: 0
        device (optional): where to train. Default: the model's device
        show_progress (bool, optional): tqdm progress bar. Default: True

    Returns:
        ShapleySurrogate: the trained surrogate, in eval mode.

    Examples::

        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> loader = DataLoader(TensorDataset(images), batch_size=64, shuffle=True)
        >>> surrogate = cv.ViTShapley.train_surrogate(model, loader, epochs=5)
        >>> keep = torch.ones(len(images), surrogate.num_players((224, 224)))
        >>> keep[:, :98] = 0  # hold out the top half of a 14 x 14 grid
        >>> logits = surrogate(images, keep)
    """
    schedule = Schedule(epochs, lr, weight_decay, max_steps, show_progress)
    if masks_per_image < 1:
        raise ValueError(f"masks_per_image must be >= 1, got {masks_per_image}")
    adapter = check_shapley_model(adapters.get(model))  # before any copy
    device = training_device(adapter.model, device)
    teacher = adapters.get(copy_for_training(adapter.model, device, train=False))
    student = copy_for_training(adapter.model, device, train=True)
    surrogate = ShapleySurrogate(student)
    gen = torch.Generator().manual_seed(seed)

    def kl_to_teacher(images: Tensor) -> Tensor:
        with torch.no_grad():
            target = teacher.forward(images).log_softmax(-1)
        x = images.repeat_interleave(masks_per_image, 0)
        t = target.repeat_interleave(masks_per_image, 0)
        P = surrogate.num_players((images.shape[-2], images.shape[-1]))
        mask = sample_uniform_subsets(x.shape[0], P, gen).to(device)
        logp = surrogate(x, mask).log_softmax(-1)
        return F.kl_div(logp, t, reduction="batchmean", log_target=True)

    fit(
        student,
        kl_to_teacher,
        dataloader,
        schedule,
        device=device,
        desc="ViTShapley surrogate",
        postfix="kl={:.4f}",
    )
    return surrogate.eval()


def train_explainer(
    surrogate: ShapleySurrogate,
    dataloader: Iterable[Any],
    epochs: int = 1,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    num_subsets: int = 32,
    link: str = "softmax",
    model: Optional[nn.Module] = None,
    hidden_dim: Optional[int] = None,
    num_mlp_layers: int = 3,
    max_steps: Optional[int] = None,
    seed: int = 0,
    device: Any = None,
    show_progress: bool = True,
) -> ShapleyExplainer:
    r"""Train a :class:`ShapleyExplainer` for ``surrogate``.

    Minimises, with Adam,

    .. math::
        d \cdot \mathrm{mean}\big(v_x(\mathbf 0) + \mathbf 1_S^\top
        \phi(x) - v_x(S)\big)^2

    over ``num_subsets`` paired Shapley-kernel subsets per image
    (:func:`sample_shapley_subsets`), with :math:`\phi` after the
    additive efficient normalisation. The surrogate is frozen (its
    parameters, flags and mode are restored afterwards, also on error); the
    explainer's backbone is a deep copy, so neither the surrogate's model nor
    ``model`` is modified.

    Args:
        surrogate (ShapleySurrogate): from :meth:`train_surrogate`.
        dataloader (iterable): image batches (see :meth:`train_surrogate`).
        epochs (int, optional): passes over ``dataloader``. Default: 1
        lr (float, optional): Adam learning rate. Default: 1e-4
        weight_decay (float, optional): Adam weight decay. Default: 0.0
        num_subsets (int, optional): subsets per image and step, even.
            Default: 32
        link (str, optional): ``"softmax"``, ``"logsoftmax"`` or
            ``"identity"``: the game is ``link(surrogate(x, S))``.
            Default: ``"softmax"``
        model (torch.nn.Module, optional): ViT to initialise the
            explainer's backbone from (deep-copied). Default: None (a copy
            of the surrogate's model)
        hidden_dim (int, optional): MLP width. Default: 2 x embed dim
        num_mlp_layers (int, optional): linear layers of the head.
            Default: 3
        max_steps (int, optional): stop after this many batches.
            Default: None
        seed (int, optional): seeds the head's initialisation (torch's
            global generator, forked: the caller's random state is restored)
            and the subset sampling. Default: 0
        device (optional): where to train. Default: the surrogate's device
        show_progress (bool, optional): tqdm progress bar. Default: True

    Returns:
        ShapleyExplainer: the trained explainer, in eval mode.

    Examples::

        >>> surrogate = cv.ViTShapley.train_surrogate(model, loader, epochs=5)
        >>> explainer = cv.ViTShapley.train_explainer(
        ...     surrogate, loader, epochs=5, num_subsets=32, link="softmax"
        ... )
        >>> attr = cv.ViTShapley(explainer, surrogate).attribute(images)
    """
    schedule = Schedule(epochs, lr, weight_decay, max_steps, show_progress)
    check_surrogate(surrogate)
    if num_subsets < 2 or num_subsets % 2:
        raise ValueError(
            f"num_subsets must be an even number >= 2 (paired), got {num_subsets}"
        )
    game = link_function(link)
    device = training_device(surrogate.model, device)
    source = surrogate.model if model is None else adapters.get(model).model
    backbone = copy_for_training(source, device, train=True)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        explainer = ShapleyExplainer(
            backbone, hidden_dim=hidden_dim, num_mlp_layers=num_mlp_layers
        )
    explainer = explainer.to(device).train()

    def shapley_regression(images: Tensor) -> Tensor:
        B = images.shape[0]
        P = surrogate.num_players((images.shape[-2], images.shape[-1]))
        masks = sample_shapley_subsets(B * num_subsets, P, True, gen).to(device)
        with torch.no_grad():
            x = images.repeat_interleave(num_subsets, 0)
            values = game(surrogate(x, masks)).reshape(B, num_subsets, -1)
            grand, null = grand_and_null(surrogate, images, game)
        phi = efficient_normalisation(explainer(images), grand, null)
        approx = null[:, None] + masks.reshape(B, num_subsets, P) @ phi
        return P * F.mse_loss(approx, values)

    with frozen(surrogate):
        fit(
            explainer,
            shapley_regression,
            dataloader,
            schedule,
            device=device,
            desc="ViTShapley explainer",
            postfix="loss={:.3e}",
        )
    return explainer.eval()
