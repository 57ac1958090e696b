"""ViT Shapley: a learned Shapley-value explainer (Covert, Kim, Lee, ICLR 2023).

Three calls: :meth:`ViTShapley.train_surrogate` fine-tunes a copy of the
classifier to accept partial inputs (patch tokens held out by attention
masking), :meth:`ViTShapley.train_explainer` trains a ViT with a per-token head
to output Shapley values of that surrogate, and :meth:`ViTShapley.attribute`
explains a batch with one explainer forward.
"""

from __future__ import annotations

import copy
import numbers
from typing import Any, Callable, Iterable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import adapters
from ..adapters import Tracer, ViTAdapter
from ._base import ViTAttribution

__all__ = [
    "ViTShapley",
    "ShapleySurrogate",
    "ShapleyExplainer",
    "sample_uniform_subsets",
    "sample_shapley_subsets",
]

_LINKS = ("softmax", "logsoftmax", "identity")


# ------------------------------------------------------------------ helpers
def _link(name: str) -> Callable[[Tensor], Tensor]:
    if name == "softmax":
        return lambda z: z.softmax(dim=-1)
    if name == "logsoftmax":
        return lambda z: z.log_softmax(dim=-1)
    if name == "identity":
        return lambda z: z
    raise ValueError(f"link must be one of {_LINKS}, got {name!r}")


def _images_of(batch: Any) -> Tensor:
    """The image tensor of a dataloader batch (tensor, tuple/list, dict)."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, dict):
        for key in ("image", "images", "pixel_values", "x"):
            if key in batch:
                return batch[key]
        raise ValueError(
            f"cannot find the images in a dict batch with keys {sorted(batch)}; "
            "use one of 'image', 'images', 'pixel_values', 'x'"
        )
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise ValueError(
        "a dataloader batch must be an image tensor, a tuple/list whose first "
        f"element is the image tensor, or a dict; got {type(batch).__name__}"
    )


def _check_training_args(epochs: int, lr: float, max_steps: Optional[int]) -> None:
    if not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if max_steps is not None and (
        not isinstance(max_steps, numbers.Integral) or max_steps < 1
    ):
        raise ValueError(f"max_steps must be a positive int or None, got {max_steps!r}")


def _progress(iterable: Iterable, total: Optional[int], desc: str, show: bool):
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc)


def _steps(
    dataloader: Iterable, epochs: int, max_steps: Optional[int]
) -> Iterable[Tensor]:
    step = 0
    for _ in range(epochs):
        for batch in dataloader:
            if max_steps is not None and step >= max_steps:
                return
            yield _images_of(batch)
            step += 1


def _total(dataloader: Iterable, epochs: int, max_steps: Optional[int]):
    try:
        n = len(dataloader) * epochs  # type: ignore[arg-type]
    except TypeError:
        return max_steps
    return n if max_steps is None else min(n, max_steps)


def sample_uniform_subsets(
    batch: int, num_players: int, generator: Optional[torch.Generator] = None
) -> Tensor:
    r"""Subsets for surrogate training: uniform size, then a uniform subset.

    :math:`|S| \sim \mathcal U\{0, \dots, d\}`, then :math:`S` uniform among
    the subsets of that size (the paper's surrogate distribution).

    Args:
        batch (int): number of subsets.
        num_players (int): number of players :math:`d` (patch tokens).
        generator (torch.Generator, optional): random generator. Default: None

    Returns:
        Tensor: ``(batch, num_players)`` float 0/1 masks (1 = kept).
    """
    size = torch.randint(0, num_players + 1, (batch,), generator=generator)
    return _random_subsets(size, num_players, generator)


def _random_subsets(
    size: Tensor, num_players: int, generator: Optional[torch.Generator]
) -> Tensor:
    # a uniform random permutation per row (argsort of uniform noise); the
    # first `size` players of the permutation are kept
    ranks = torch.rand(size.shape[0], num_players, generator=generator).argsort(-1)
    ranks = ranks.argsort(-1)
    return (ranks < size[:, None]).float()


def sample_shapley_subsets(
    batch: int,
    num_players: int,
    paired: bool = True,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    r"""Subsets drawn from the Shapley kernel, optionally paired.

    .. math::
        p(S) \propto \frac{d - 1}{\binom{d}{|S|}\,|S|\,(d - |S|)},
        \qquad 0 < |S| < d

    i.e. the size :math:`s` with probability :math:`\propto 1 / (s (d - s))`,
    then a uniform subset of that size. With ``paired`` every odd row is the
    complement of the row before it (paired sampling, Covert & Lee 2021).

    Args:
        batch (int): number of subsets (even when ``paired``).
        num_players (int): number of players :math:`d \ge 2`.
        paired (bool, optional): complement pairs. Default: True
        generator (torch.Generator, optional): random generator. Default: None

    Returns:
        Tensor: ``(batch, num_players)`` float 0/1 masks (1 = kept).
    """
    if num_players < 2:
        raise ValueError("the Shapley kernel needs at least 2 players")
    if paired and batch % 2:
        raise ValueError(
            f"paired sampling needs an even number of subsets, got {batch}"
        )
    s = torch.arange(1, num_players, dtype=torch.float64)
    probs = 1.0 / (s * (num_players - s))
    n = batch // 2 if paired else batch
    size = 1 + torch.multinomial(probs, n, replacement=True, generator=generator)
    masks = _random_subsets(size, num_players, generator)
    if paired:
        masks = torch.stack([masks, 1.0 - masks], dim=1).reshape(batch, num_players)
    return masks


# --------------------------------------------------------------- surrogate
class _MaskTracer(Tracer):
    """Holds out patch tokens by a ``-inf`` on their keys in every layer.

    A held-out token may only attend to itself (so no row of the softmax is
    empty); no other token sees it. For average-pooled models the pooling
    is restricted to the kept patch tokens.
    """

    def __init__(self, keep_tokens: Tensor, patch_weights: Optional[Tensor]):
        super().__init__(keep_attention=False, score_hook=self._hook)
        N = keep_tokens.shape[-1]
        eye = torch.eye(N, dtype=torch.bool, device=keep_tokens.device)
        self.allowed = (keep_tokens[:, None, :] | eye)[:, None]  # (B, 1, N, N)
        self.patch_weights = patch_weights
        self.trace_ends = patch_weights is not None

    def _hook(self, layer: int, scores: Tensor) -> Tensor:
        return scores.masked_fill(~self.allowed, float("-inf"))

    def attention(self, layer, q, k, v, scale, mask=None, dropout=None):
        if dropout is not None:  # explicit softmax, mask through score_hook
            return super().attention(layer, q, k, v, scale, mask, dropout)
        # the same function through torch's fused kernel: a boolean mask
        # (True = may attend) is the -inf on the held-out keys
        allowed = self.allowed
        if mask is not None:
            if mask.dtype == torch.bool:
                allowed = allowed & mask
            else:
                bias = torch.zeros_like(mask).masked_fill(~allowed, float("-inf"))
                allowed = mask + bias
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)

    def pool(self, x: Tensor, weights: Tensor) -> Tensor:
        if self.patch_weights is None:  # pragma: no cover - trace_ends is off
            return super().pool(x, weights)
        return torch.einsum("bn,bnd->bd", self.patch_weights.to(x.dtype), x)


class ShapleySurrogate(nn.Module):
    r"""A classifier that evaluates partial inputs :math:`v(S)`.

    Wraps a stock Vision Transformer; ``forward(images, mask)`` holds out the
    patch tokens with ``mask == 0`` by adding :math:`-\infty` to their keys'
    pre-softmax scores in every layer (the adapter's
    :attr:`~captum_vit.adapters.Tracer.score_hook`; no model rewrite). Prefix
    tokens (class, distillation, register) are always kept; a held-out token
    attends only to itself so that no softmax row is empty, and no other token
    attends to it. For average-pooled models the pooled vector is the mean
    over the kept patch tokens only. With every patch held out the output does
    not depend on the image.

    The wrapped model is used as is (not copied); use
    :meth:`ViTShapley.train_surrogate` to fine-tune a copy of a classifier.

    Args:
        model (torch.nn.Module): a stock timm, Hugging Face or torchvision ViT.

    Examples::

        >>> surrogate = ShapleySurrogate(model)
        >>> mask = torch.ones(2, surrogate.num_players((32, 32)))
        >>> logits = surrogate(images, mask)
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if isinstance(model, ViTAdapter):
            model = model.model
        self.model = model
        adapters.get(model)  # raises UnsupportedModelError early

    @property
    def adapter(self) -> ViTAdapter:
        return adapters.get(self.model)

    def num_players(self, image_size: Tuple[int, int]) -> int:
        """Number of patch tokens for images of ``image_size``."""
        gh, gw = self.adapter.grid_size(tuple(image_size))
        return gh * gw

    def forward(self, images: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Logits ``(B, classes)`` of ``images`` with the patches of ``mask``.

        Args:
            images (Tensor): ``(B, C, H, W)``.
            mask (Tensor, optional): ``(B, num_players)`` 0/1 (or bool), 1 =
                the patch token is kept. Default: None (all kept)
        """
        adapter = self.adapter
        B = images.shape[0]
        P = self.num_players(tuple(images.shape[-2:]))
        if mask is None:
            mask = torch.ones(B, P, device=images.device)
        if mask.dim() != 2 or mask.shape != (B, P):
            raise ValueError(
                f"mask must have shape (B, num_players) = {(B, P)}, got "
                f"{tuple(mask.shape)}"
            )
        keep = mask.to(images.device) > 0.5
        prefix = adapter.num_prefix_tokens
        keep_tokens = torch.cat(
            [torch.ones(B, prefix, dtype=torch.bool, device=keep.device), keep], 1
        )
        weights = None
        if adapter.pooling == "avg":
            kf = keep.to(images.dtype)
            w = kf / kf.sum(-1, keepdim=True).clamp_min(1.0)
            weights = torch.cat([w.new_zeros(B, prefix), w], 1)
        tracer = _MaskTracer(keep_tokens, weights)
        with adapter.trace(tracer):
            logits = adapter.forward(images)
        return logits


# --------------------------------------------------------------- explainer
class ShapleyExplainer(nn.Module):
    r"""A ViT with a per-token head: one value per patch token and class.

    The backbone is a stock ViT (a copy of the classifier); the final
    representation of each patch token (last block output, through the
    model's final norm) goes through an MLP to ``num_classes`` outputs. The
    model's own classifier head is left in place and unused.
    ``forward(images)`` returns the *unnormalised* values ``(B, P, classes)``;
    :meth:`ViTShapley.attribute` applies the efficient normalisation.

    Args:
        model (torch.nn.Module): a stock ViT, used as is (not copied).
        num_classes (int, optional): outputs per token. Default: the model's
            number of classes
        hidden_dim (int, optional): width of the MLP's hidden layers.
            Default: 2 x the embedding dimension
        num_mlp_layers (int, optional): linear layers of the head (GELU in
            between). Default: 3 (the paper's best head)
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: Optional[int] = None,
        hidden_dim: Optional[int] = None,
        num_mlp_layers: int = 3,
    ) -> None:
        super().__init__()
        if isinstance(model, ViTAdapter):
            model = model.model
        self.backbone = model
        adapter = adapters.get(model)
        dim = adapter.head_parts().classifiers[0].in_features
        num_classes = adapter.num_classes if num_classes is None else num_classes
        hidden_dim = 2 * dim if hidden_dim is None else hidden_dim
        if num_mlp_layers < 1:
            raise ValueError(f"num_mlp_layers must be >= 1, got {num_mlp_layers}")
        layers = []
        width = dim
        for _ in range(num_mlp_layers - 1):
            layers += [nn.Linear(width, hidden_dim), nn.GELU()]
            width = hidden_dim
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)
        self.config = {
            "num_classes": int(num_classes),
            "hidden_dim": int(hidden_dim),
            "num_mlp_layers": int(num_mlp_layers),
        }

    def tokens(self, images: Tensor) -> Tensor:
        """Final patch-token representations ``(B, P, D)``."""
        adapter = adapters.get(self.backbone)
        last = adapter.num_layers - 1
        # layers=() keeps torch's fused attention; only block outputs recorded
        tracer = Tracer(keep_attention=False, keep_blocks=True, layers=())
        with adapter.trace(tracer):
            adapter.forward(images)
        x = tracer.block_outputs[last]
        head = adapter.head_parts()
        if head.norm is not None:
            x = head.norm(x)
        if head.fc_norm is not None:
            x = head.fc_norm(x)
        return x[:, adapter.num_prefix_tokens :]

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.tokens(images))


def _efficient_normalisation(raw: Tensor, grand: Tensor, null: Tensor) -> Tensor:
    # raw (B, P, C); grand (B, C); null (1 or B, C)
    gap = grand - null - raw.sum(dim=1)
    return raw + gap[:, None, :] / raw.shape[1]


# ---------------------------------------------------------------- method
class ViTShapley(ViTAttribution):
    r"""ViT Shapley of Covert, Kim and Lee (ICLR 2023,
    https://arxiv.org/abs/2206.05282): Shapley values of the patch tokens,
    predicted by a learned explainer in one forward pass.

    **Surrogate.** A copy of the classifier :math:`f` is fine-tuned into
    :math:`g(x, S)`, which sees only the patch tokens in :math:`S` (the others
    are held out by :math:`-\infty` on their keys before the softmax, in every
    layer), to match the classifier's predictions under random subsets:

    .. math::
        \min_g \; \mathbb{E}_{x}\,\mathbb{E}_{S \sim p_U}
            \mathrm{KL}\big(\mathrm{softmax} f(x) \,\|\,
            \mathrm{softmax} g(x, S)\big),

    :math:`p_U`: :math:`|S|` uniform on :math:`\{0, \dots, d\}`, then a
    uniform subset of that size. The game is
    :math:`v_x(S) = \mathrm{link}(g(x, S))` (softmax probabilities by
    default, as in the paper).

    **Explainer.** :math:`\phi(x) \in \mathbb{R}^{d \times C}` is a ViT
    initialised from the (surrogate's) classifier with an MLP on every patch
    token, made efficient by the additive normalisation

    .. math::
        \phi_i(x) = \tilde\phi_i(x) + \frac{1}{d}\Big(v_x(\mathbf 1)
            - v_x(\mathbf 0) - \sum_{j=1}^{d} \tilde\phi_j(x)\Big),

    so that :math:`\sum_i \phi_i(x) = v_x(\mathbf 1) - v_x(\mathbf 0)`
    exactly, per class, and trained with the weighted-least-squares
    characterisation of the Shapley value (Charnes et al. 1988):

    .. math::
        \min_\phi \; \mathbb{E}_x\,\mathbb{E}_{S \sim p_{Sh}}
            \big\| v_x(\mathbf 0) + \mathbf 1_S^\top \phi(x) - v_x(S)
            \big\|_2^2, \qquad
        p_{Sh}(S) \propto \frac{d - 1}{\binom{d}{|S|}|S|(d - |S|)},

    with paired sampling (each :math:`S` with its complement). The loss is
    the mean squared error times :math:`d`, as in the authors' code.

    ``attribute`` is one explainer forward plus one surrogate forward (for
    :math:`v_x(\mathbf 1)` and the image-independent :math:`v_x(\mathbf 0)`),
    and returns :math:`\phi_{i,t}(x)` for the target class :math:`t`.

    Choices where the paper leaves room: the explainer head is a 3-layer MLP
    on the final, normalised patch tokens (the paper's best head also adds an
    attention block); the explainer is initialised from the surrogate's
    weights unless another model is given; a held-out token still attends to
    itself (its own row must not be empty), which no kept token can observe;
    for average-pooled models the pooling is over kept patches only;
    ``target=None`` explains the surrogate's predicted class on the full
    image.

    Args:
        explainer (ShapleyExplainer): a trained explainer
            (:meth:`train_explainer`).
        surrogate (ShapleySurrogate): the surrogate it explains
            (:meth:`train_surrogate`).
        link (str, optional): ``"softmax"``, ``"logsoftmax"`` or
            ``"identity"`` (logits) applied to the surrogate's output; must
            be the one the explainer was trained with. Default: ``"softmax"``
        interpolate_mode (str, optional): upsampling of the token map to
            pixels. Default: ``"bilinear"``

    Examples::

        >>> import captum_vit as cv
        >>> surrogate = cv.ViTShapley.train_surrogate(model, loader, epochs=5)
        >>> explainer = cv.ViTShapley.train_explainer(surrogate, loader, epochs=5)
        >>> method = cv.ViTShapley(explainer, surrogate)
        >>> attr = method.attribute(images, target=labels)
        >>> grid = method.attribute(images, target=labels, output="tokens")
        >>> method.save("vit_shapley.pt")
        >>> method = cv.ViTShapley.load("vit_shapley.pt", lambda: make_model())
    """

    def __init__(
        self,
        explainer: ShapleyExplainer,
        surrogate: ShapleySurrogate,
        link: str = "softmax",
        interpolate_mode: str = "bilinear",
    ) -> None:
        if not isinstance(explainer, ShapleyExplainer):
            raise TypeError(
                "explainer must be a ShapleyExplainer (see ViTShapley.train_explainer)"
                f", got {type(explainer).__name__}"
            )
        if not isinstance(surrogate, ShapleySurrogate):
            raise TypeError(
                "surrogate must be a ShapleySurrogate (see ViTShapley.train_surrogate)"
                f", got {type(surrogate).__name__}"
            )
        _link(link)
        super().__init__(surrogate.model, interpolate_mode)
        self.explainer = explainer
        self.surrogate = surrogate
        self.link = link

    @classmethod
    def get_name(cls) -> str:
        """The method's readable name, ``"ViT Shapley"``."""
        return "ViT Shapley"

    def _attribute(self, inputs: Tensor, target, args: tuple) -> Tensor:
        if args:
            raise ValueError("ViTShapley does not take additional_forward_args")
        with torch.no_grad():
            phi, grand = self.shapley_values(inputs, return_grand=True)
        if target is None:
            target = grand.argmax(dim=-1)
        target = target.to(phi.device)
        return phi.gather(2, target[:, None, None].expand(-1, phi.shape[1], 1))[..., 0]

    # -------------------------------------------------------------- values
    def shapley_values(
        self, inputs: Tensor, return_grand: bool = False
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        r"""Normalised values of every patch and class ``(B, P, classes)``.

        Differentiable (no ``no_grad`` inside); ``attribute`` wraps it.

        Args:
            inputs (Tensor): images ``(B, C, H, W)``.
            return_grand (bool, optional): also return
                :math:`v_x(\mathbf 1)` ``(B, classes)``. Default: False
        """
        raw = self.explainer(inputs)
        grand, null = _grand_null(self.surrogate, inputs, _link(self.link))
        phi = _efficient_normalisation(raw, grand, null)
        return (phi, grand) if return_grand else phi

    # ---------------------------------------------------------- save/load
    def save(self, path: str) -> None:
        """Save both trained parts (state dicts and head config), torch.save.

        Args:
            path (str): file to write.
        """
        torch.save(
            {
                "format": "captum_vit.ViTShapley/1",
                "link": self.link,
                "explainer_config": dict(self.explainer.config),
                "explainer": self.explainer.state_dict(),
                "surrogate": self.surrogate.state_dict(),
            },
            path,
        )

    @classmethod
    def load(
        cls,
        path: str,
        model_factory: Callable[[], nn.Module],
        map_location: Any = "cpu",
        interpolate_mode: str = "bilinear",
    ) -> ViTShapley:
        """Rebuild a saved :class:`ViTShapley`.

        Args:
            path (str): a file written by :meth:`save`.
            model_factory (callable): returns a fresh model of the classifier's
                architecture (weights are overwritten); called twice.
            map_location (optional): passed to :func:`torch.load`.
                Default: ``"cpu"``
            interpolate_mode (str, optional): see the class. Default:
                ``"bilinear"``
        """
        state = torch.load(path, map_location=map_location, weights_only=True)
        if state.get("format") != "captum_vit.ViTShapley/1":
            raise ValueError(f"{path} is not a file written by ViTShapley.save")
        surrogate = ShapleySurrogate(model_factory())
        surrogate.load_state_dict(state["surrogate"])
        explainer = ShapleyExplainer(model_factory(), **state["explainer_config"])
        explainer.load_state_dict(state["explainer"])
        return cls(
            explainer.eval(),
            surrogate.eval(),
            link=state["link"],
            interpolate_mode=interpolate_mode,
        )

    # ------------------------------------------------------------ training
    @staticmethod
    def train_surrogate(
        model: nn.Module,
        dataloader: Iterable,
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
        """
        _check_training_args(epochs, lr, max_steps)
        if masks_per_image < 1:
            raise ValueError(f"masks_per_image must be >= 1, got {masks_per_image}")
        adapter = adapters.get(model)  # raises for unsupported models
        device = _device(adapter.model, device)
        teacher = copy.deepcopy(adapter.model).to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        student = copy.deepcopy(adapter.model).to(device).train()
        for p in student.parameters():
            p.requires_grad_(True)
        surrogate = ShapleySurrogate(student)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(student.parameters(), lr=lr, weight_decay=weight_decay)
        teacher_adapter = adapters.get(teacher)
        steps = _progress(
            _steps(dataloader, epochs, max_steps),
            _total(dataloader, epochs, max_steps),
            "ViTShapley surrogate",
            show_progress,
        )
        with torch.enable_grad():
            for images in steps:
                images = images.to(device)
                with torch.no_grad():
                    target = teacher_adapter.forward(images).log_softmax(-1)
                P = surrogate.num_players(tuple(images.shape[-2:]))
                x = images.repeat_interleave(masks_per_image, 0)
                t = target.repeat_interleave(masks_per_image, 0)
                mask = sample_uniform_subsets(x.shape[0], P, gen).to(device)
                logp = surrogate(x, mask).log_softmax(-1)
                loss = F.kl_div(logp, t, reduction="batchmean", log_target=True)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if show_progress and hasattr(steps, "set_postfix"):
                    steps.set_postfix(kl=f"{loss.item():.4f}")
        opt.zero_grad(set_to_none=True)
        for p in student.parameters():
            p.grad = None
        return surrogate.eval()

    @staticmethod
    def train_explainer(
        surrogate: ShapleySurrogate,
        dataloader: Iterable,
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
        parameters, flags and mode are restored afterwards).

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
            seed (int, optional): seeds the head's initialisation and the
                subset sampling. Default: 0
            device (optional): where to train. Default: the surrogate's device
            show_progress (bool, optional): tqdm progress bar. Default: True

        Returns:
            ShapleyExplainer: the trained explainer, in eval mode.
        """
        _check_training_args(epochs, lr, max_steps)
        if not isinstance(surrogate, ShapleySurrogate):
            raise TypeError(
                "surrogate must be a ShapleySurrogate (see ViTShapley.train_surrogate)"
                f", got {type(surrogate).__name__}"
            )
        if num_subsets < 2 or num_subsets % 2:
            raise ValueError(
                f"num_subsets must be an even number >= 2 (paired), got {num_subsets}"
            )
        fn = _link(link)
        device = _device(surrogate.model, device)
        source = surrogate.model if model is None else adapters.get(model).model
        backbone = copy.deepcopy(source)
        for p in backbone.parameters():
            p.requires_grad_(True)
        gen = torch.Generator().manual_seed(seed)
        with _fork_rng(seed):
            explainer = ShapleyExplainer(
                backbone, hidden_dim=hidden_dim, num_mlp_layers=num_mlp_layers
            )
        explainer = explainer.to(device).train()
        opt = torch.optim.Adam(explainer.parameters(), lr=lr, weight_decay=weight_decay)
        steps = _progress(
            _steps(dataloader, epochs, max_steps),
            _total(dataloader, epochs, max_steps),
            "ViTShapley explainer",
            show_progress,
        )
        with _frozen(surrogate), torch.enable_grad():
            for images in steps:
                images = images.to(device)
                B = images.shape[0]
                P = surrogate.num_players(tuple(images.shape[-2:]))
                masks = sample_shapley_subsets(B * num_subsets, P, True, gen)
                masks = masks.to(device)
                with torch.no_grad():
                    values = fn(
                        surrogate(images.repeat_interleave(num_subsets, 0), masks)
                    ).reshape(B, num_subsets, -1)
                    grand, null = _grand_null(surrogate, images, fn)
                phi = _efficient_normalisation(explainer(images), grand, null)
                approx = null[:, None] + masks.reshape(B, num_subsets, P) @ phi
                loss = P * F.mse_loss(approx, values)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if show_progress and hasattr(steps, "set_postfix"):
                    steps.set_postfix(loss=f"{loss.item():.3e}")
        for p in explainer.parameters():
            p.grad = None
        return explainer.eval()


def _grand_null(
    surrogate: ShapleySurrogate, images: Tensor, fn: Callable[[Tensor], Tensor]
) -> Tuple[Tensor, Tensor]:
    """``v(1)`` per image ``(B, C)`` and ``v(0)`` ``(1, C)`` in one forward.

    With every patch held out, kept tokens see only prefix tokens, so
    ``v(0)`` does not depend on the image; it is computed on the first one.
    """
    B = images.shape[0]
    P = surrogate.num_players(tuple(images.shape[-2:]))
    x = torch.cat([images, images[:1]], 0)
    mask = torch.cat([images.new_ones(B, P), images.new_zeros(1, P)], 0)
    out = fn(surrogate(x, mask))
    return out[:B], out[B:]


def _device(model: nn.Module, device: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class _fork_rng:
    """Seed torch's global generator inside the context, restore it after."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self):
        self.state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        torch.random.set_rng_state(self.state)
        return False


class _frozen:
    """Surrogate in eval mode without gradients; mode and flags restored."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.module.modules()]
        self.flags = [(p, p.requires_grad) for p in self.module.parameters()]
        self.module.eval()
        for p, _ in self.flags:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode
        for p, flag in self.flags:
            p.requires_grad_(flag)
        return False
