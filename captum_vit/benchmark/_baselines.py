r"""Sanity baselines of the benchmark: maps that a useful explanation must beat.

Adebayo et al. (2018), "Sanity Checks for Saliency Maps",
https://arxiv.org/abs/1810.03292, compare saliency maps with an edge detector
(a map that needs no model at all) and with maps of a randomised model; Wu et
al. (2024), https://arxiv.org/abs/2404.01415, show that a *random* map scores
well on the cumulative deletion metrics. These are registered as baseline
"methods" of the benchmark (not of :mod:`captum_vit.attr`'s method registry,
which holds explanation methods): :func:`list_baselines`,
:func:`create_baseline`, :func:`register_baseline`; the benchmark's
``methods`` accept their names beside the registered methods.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from captum.attr import Attribution
from torch import Tensor, nn

#: ``factory(model, seed) -> Attribution`` of each baseline, by name.
BaselineFactory = Callable[[nn.Module, int], Attribution]
_BASELINES: Dict[str, BaselineFactory] = {}

#: Prefix of the randomised-model baselines: ``"randomised_model:<method>"``
#: explains with the registered ``<method>`` on a fully re-initialised copy of
#: the model.
RANDOMISED_PREFIX = "randomised_model:"


def register_baseline(name: str) -> Callable[[BaselineFactory], BaselineFactory]:
    """Decorator registering ``factory(model, seed)`` as the baseline ``name``."""

    def deco(factory: BaselineFactory) -> BaselineFactory:
        _BASELINES[name] = factory
        return factory

    return deco


def list_baselines() -> List[str]:
    """Names of the registered sanity baselines (``"random_map"``,
    ``"edge_map"``); ``"randomised_model:<method>"`` is accepted too."""
    return list(_BASELINES)


def is_baseline(name: str) -> bool:
    """Whether ``name`` names a sanity baseline."""
    return name in _BASELINES or name.startswith(RANDOMISED_PREFIX)


def create_baseline(name: str, model: nn.Module, seed: int = 0) -> Attribution:
    """The baseline ``name`` on ``model``, its random draws seeded with ``seed``.

    Raises:
        ValueError: unknown name.
    """
    if name.startswith(RANDOMISED_PREFIX):
        return RandomisedModelMap(model, name[len(RANDOMISED_PREFIX) :], seed=seed)
    try:
        return _BASELINES[name](model, seed)
    except KeyError:
        raise ValueError(
            f"unknown baseline {name!r}; available: {', '.join(_BASELINES)} and "
            f"{RANDOMISED_PREFIX}<method>"
        ) from None


def _as_tuple_like(fn: Callable[[Any, Tensor], Tensor]) -> Callable[..., Any]:
    """``attribute(inputs, ...)`` for a Tensor or a 1-tuple (as Captum's
    ``sensitivity_max`` passes them), returning the same form."""

    def attribute(self: Any, inputs: Any, target: Any = None, **kwargs: Any) -> Any:
        if isinstance(inputs, tuple):
            if len(inputs) != 1:
                raise ValueError("a sanity baseline explains one input tensor")
            return (fn(self, inputs[0]),)
        if not isinstance(inputs, Tensor) or inputs.dim() != 4:
            raise ValueError("inputs must be a batch of images (B, C, H, W)")
        return fn(self, inputs)

    attribute.__doc__ = fn.__doc__
    return attribute


def _image_seed(image: Tensor, seed: int) -> int:
    """A seed from the image's bytes and ``seed``: a sample's random map does not
    depend on the other samples of its batch."""
    data = image.detach().cpu().contiguous().numpy().tobytes()
    digest = hashlib.blake2b(data, digest_size=8, key=str(int(seed)).encode())
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


class RandomMap(Attribution):
    r"""A random map: i.i.d. :math:`\mathcal U(0, 1)` per patch of the model
    (per pixel where the model has no patch grid), repeated over the channels
    (the input's shape, as the methods), the "Random Attribution" of Wu et al.
    (2024). Each sample's map is drawn from a generator seeded with
    its pixels and ``seed``, so it does not depend on the batch.

    Args:
        model (nn.Module): the model (only its patch grid is used).
        seed (int, optional): seed of the draws. Default: 0
    """

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        super().__init__(model)
        self.model = model
        self.seed = int(seed)

    @_as_tuple_like
    def attribute(self, inputs: Tensor) -> Tensor:
        """The random map of ``inputs`` ``(B, C, H, W)`` (the target is
        ignored)."""
        from ..attr import patch_feature_mask

        try:
            ids = patch_feature_mask(self.model, inputs)[0, 0]
        except (TypeError, ValueError):  # no ViT patch grid: one value per pixel
            ids = torch.arange(inputs.shape[-2] * inputs.shape[-1]).reshape(
                inputs.shape[-2:]
            )
        n = int(ids.max()) + 1
        maps = []
        for image in inputs:
            gen = torch.Generator().manual_seed(_image_seed(image, self.seed))
            values = torch.rand(n, generator=gen)
            maps.append(values[ids.cpu()])
        out = torch.stack(maps)[:, None].expand(-1, inputs.shape[1], -1, -1)
        return out.contiguous().to(inputs.device)  # repeated over channels

    def has_convergence_delta(self) -> bool:
        return False


class EdgeMap(Attribution):
    r"""Sobel edge magnitude of the image, summed over the channels
    (:func:`scipy.ndimage.sobel`): the model-independent edge detector of
    Adebayo et al. (2018),

    .. math::

        E(x)_p = \sum_c \sqrt{(S_h * x_c)_p^2 + (S_v * x_c)_p^2},

    repeated over the channels.

    Args:
        model (nn.Module): the model (unused: the map needs none).
        seed (int, optional): unused. Default: 0
    """

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        super().__init__(model)

    @_as_tuple_like
    def attribute(self, inputs: Tensor) -> Tensor:
        """The edge map of ``inputs`` ``(B, C, H, W)`` (the target is ignored)."""
        from scipy.ndimage import sobel

        x = inputs.detach().double().cpu().numpy()
        mag = np.zeros((x.shape[0], 1) + x.shape[2:])
        for b in range(x.shape[0]):  # 2-D filters: no smoothing across images
            for channel in x[b]:
                mag[b, 0] += np.hypot(sobel(channel, axis=1), sobel(channel, axis=0))
        out = torch.from_numpy(mag).expand(-1, inputs.shape[1], -1, -1).contiguous()
        return out.to(dtype=inputs.dtype, device=inputs.device)  # over channels

    def has_convergence_delta(self) -> bool:
        return False


class RandomisedModelMap(Attribution):
    r"""The registered ``method``'s map on a copy of the model with every layer
    re-initialised (the end of Adebayo et al.'s cascade,
    :func:`captum_vit.metrics.randomised_copy`): it explains nothing the trained
    model learned, so a metric that rates it as well as the trained model's map
    does not measure the explanation.

    Args:
        model (nn.Module): the trained model (left unchanged).
        method (str): a name of :func:`captum_vit.attr.list_methods`.
        seed (int, optional): seed of the re-initialisation. Default: 0
    """

    def __init__(self, model: nn.Module, method: str, seed: int = 0) -> None:
        from ..attr import create_method
        from ..metrics import randomised_copy

        super().__init__(model)
        self.copy = randomised_copy(model, seed=seed)
        self.method = create_method(method, self.copy)

    def attribute(
        self, inputs: Any, target: Optional[Any] = None, **kwargs: Any
    ) -> Any:
        """The method's map of ``inputs`` on the randomised copy."""
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        self.copy.to(x.device)
        return self.method.attribute(inputs, target=target, **kwargs)

    def has_convergence_delta(self) -> bool:
        return False


register_baseline("random_map")(RandomMap)
register_baseline("edge_map")(EdgeMap)
