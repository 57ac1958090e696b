"""The ViT Shapley attribution method: one explainer forward per batch."""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .._base import ViTAttribution
from ._explainer import ShapleyExplainer
from ._game import efficient_normalisation, grand_and_null, link_function
from ._io import load_parts, save_parts
from ._surrogate import NO_CLASS_ATTENTION, ShapleySurrogate, check_surrogate
from ._training import train_explainer, train_surrogate


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
    and returns :math:`\phi_{i,t}(x)` for the target class :math:`t`. With
    ``internal_batch_size``, chunks of that many images are explained one
    after the other, and :math:`v_x(\mathbf 0)` gets a pass of its own.

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

    _batches_copies = True  # v(0) is one more surrogate row
    _no_class_attention = NO_CLASS_ATTENTION

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
        check_surrogate(surrogate)
        link_function(link)
        super().__init__(surrogate.model, interpolate_mode)
        self.explainer = explainer
        self.surrogate = surrogate
        self.link = link

    @classmethod
    def get_name(cls) -> str:
        """The method's readable name, ``"ViT Shapley"``."""
        return "ViT Shapley"

    def _attribute(
        self,
        inputs: Tensor,
        target: Optional[Tensor],
        args: Tuple[Any, ...],
        internal_batch_size: Optional[int] = None,
    ) -> Tensor:
        if args:
            raise ValueError("ViTShapley does not take additional_forward_args")
        with torch.no_grad():
            phi, grand = self.shapley_values(
                inputs, return_grand=True, internal_batch_size=internal_batch_size
            )
        if target is None:
            target = grand.argmax(dim=-1)
        target = target.to(phi.device)
        return phi.gather(2, target[:, None, None].expand(-1, phi.shape[1], 1))[..., 0]

    # -------------------------------------------------------------- values
    def shapley_values(
        self,
        inputs: Tensor,
        return_grand: bool = False,
        internal_batch_size: Optional[int] = None,
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        r"""Normalised values of every patch and class ``(B, P, classes)``.

        Differentiable (no ``no_grad`` inside); ``attribute`` wraps it.

        Args:
            inputs (Tensor): images ``(B, C, H, W)``.
            return_grand (bool, optional): also return
                :math:`v_x(\mathbf 1)` ``(B, classes)``. Default: False
            internal_batch_size (int, optional): the most rows of one
                surrogate forward: :math:`v_x(\mathbf 0)` (one extra row)
                gets its own pass when the batch fills it. Default: None

        Returns:
            Tensor or tuple of Tensor: :math:`\phi(x)` ``(B, P, classes)``,
            and :math:`v_x(\mathbf 1)` with ``return_grand``.
        """
        raw = self.explainer(inputs)
        game = link_function(self.link)
        grand, null = grand_and_null(self.surrogate, inputs, game, internal_batch_size)
        phi = efficient_normalisation(raw, grand, null)
        return (phi, grand) if return_grand else phi

    # ---------------------------------------------------------- save/load
    def save(self, path: str) -> None:
        """Save both trained parts (state dicts and head config), torch.save.

        Args:
            path (str): file to write.
        """
        save_parts(path, self.explainer, self.surrogate, self.link)

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

        Returns:
            ViTShapley: the method, its explainer and surrogate in eval mode.
        """
        explainer, surrogate, link = load_parts(path, model_factory, map_location)
        return cls(explainer, surrogate, link=link, interpolate_mode=interpolate_mode)

    # ------------------------------------------------------------ training
    train_surrogate = staticmethod(train_surrogate)
    train_explainer = staticmethod(train_explainer)
