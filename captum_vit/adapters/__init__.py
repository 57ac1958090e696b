"""Model-family adapters: the only code in captum_vit that knows timm,
Hugging Face ``transformers`` and torchvision.

>>> import timm
>>> from captum_vit import adapters
>>> model = timm.create_model("vit_tiny_patch16_224", pretrained=False)
>>> adapter = adapters.get(model)
>>> adapter.num_prefix_tokens, adapter.grid_size((224, 224))
(1, (14, 14))
"""

from __future__ import annotations

from typing import List, Type

from torch import nn

from ._base import (
    BlockParts,
    EmbeddingParts,
    HeadParts,
    Tracer,
    UnsupportedModelError,
    ViTAdapter,
)
from ._hf import HFViTAdapter
from ._surgery import Patcher, model_lock, patching
from ._timm import TimmViTAdapter
from ._torchvision import TorchvisionViTAdapter

__all__ = [
    "get",
    "register",
    "supported_families",
    "ViTAdapter",
    "Tracer",
    "BlockParts",
    "EmbeddingParts",
    "HeadParts",
    "UnsupportedModelError",
    "model_lock",
    "patching",
    "Patcher",
    "TimmViTAdapter",
    "HFViTAdapter",
    "TorchvisionViTAdapter",
]

_REGISTRY: List[Type[ViTAdapter]] = [
    TimmViTAdapter,
    HFViTAdapter,
    TorchvisionViTAdapter,
]


def register(adapter_cls: Type[ViTAdapter]) -> Type[ViTAdapter]:
    """Register an adapter class (usable as a decorator); newest is tried first."""
    _REGISTRY.insert(0, adapter_cls)
    return adapter_cls


def supported_families() -> List[str]:
    """Human-readable names of the model families that have an adapter."""
    return [cls.family for cls in _REGISTRY]


def get(model: nn.Module) -> ViTAdapter:
    """Return the adapter for ``model``.

    Args:
        model (torch.nn.Module): a stock Vision Transformer, or an adapter
            (returned unchanged).

    Returns:
        ViTAdapter: the adapter of the model's family.

    Raises:
        UnsupportedModelError: no adapter matches; the message lists the
            supported families.
    """
    if isinstance(model, ViTAdapter):
        return model
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(
            f"expected a torch.nn.Module, got {type(model).__name__}"
        )
    for cls in _REGISTRY:
        if cls.matches(model):
            return cls(model)
    families = "\n  - ".join(supported_families())
    raise UnsupportedModelError(
        f"{type(model).__module__}.{type(model).__name__} is not a supported Vision "
        f"Transformer. Supported families:\n  - {families}"
    )
