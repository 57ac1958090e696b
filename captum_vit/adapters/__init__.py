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

from typing import List, Type, Union, cast

from torch import nn

from ._base import (
    BlockParts,
    EmbeddingParts,
    HeadMix,
    HeadParts,
    Mask,
    Tracer,
    UnsupportedModelError,
    ViTAdapter,
    autocast_model_only,
)
from ._delegate import DelegatingAdapter
from ._graph import (
    LayerWindows,
    Merge,
    Stage,
    TokenGraph,
    patch_merge_2x2,
    window_index,
)
from ._hf import HFViTAdapter
from ._hf_beit import HFBeitAdapter
from ._hf_clip import HFCLIPAdapter
from ._hf_dinov2 import HFDinov2Adapter
from ._hf_swin import HFSwinAdapter
from ._open_clip import OpenCLIPAdapter, OpenCLIPTimmAdapter
from ._similarity import SCORES, SimilarityAdapter
from ._surgery import Patcher, model_lock, patching
from ._swin import SwinAdapter
from ._text import TextTower, TokenizerMismatchError
from ._timm import TimmViTAdapter
from ._timm_beit import TimmBeitAdapter
from ._timm_cait import TimmCaitAdapter
from ._timm_eva import TimmEvaAdapter
from ._timm_swin import TimmSwinAdapter
from ._torchvision import TorchvisionViTAdapter
from ._torchvision_swin import TorchvisionSwinAdapter

__all__ = [
    "autocast_model_only",
    "get",
    "unwrap",
    "register",
    "supported_families",
    "ViTAdapter",
    "Tracer",
    "HeadMix",
    "Mask",
    "BlockParts",
    "EmbeddingParts",
    "HeadParts",
    "UnsupportedModelError",
    "TokenGraph",
    "Stage",
    "LayerWindows",
    "Merge",
    "window_index",
    "patch_merge_2x2",
    "model_lock",
    "patching",
    "Patcher",
    "TimmViTAdapter",
    "HFViTAdapter",
    "TorchvisionViTAdapter",
    "SwinAdapter",
    "TimmSwinAdapter",
    "HFSwinAdapter",
    "TorchvisionSwinAdapter",
    "TimmBeitAdapter",
    "TimmCaitAdapter",
    "TimmEvaAdapter",
    "HFBeitAdapter",
    "HFDinov2Adapter",
    "OpenCLIPAdapter",
    "OpenCLIPTimmAdapter",
    "HFCLIPAdapter",
    "DelegatingAdapter",
    "SimilarityAdapter",
    "SCORES",
    "TextTower",
    "TokenizerMismatchError",
]

_REGISTRY: List[Type[ViTAdapter]] = [
    TimmViTAdapter,
    HFViTAdapter,
    TorchvisionViTAdapter,
    TimmBeitAdapter,
    TimmEvaAdapter,
    TimmCaitAdapter,
    HFBeitAdapter,
    HFDinov2Adapter,
    OpenCLIPAdapter,
    OpenCLIPTimmAdapter,
    HFCLIPAdapter,
    TimmSwinAdapter,
    HFSwinAdapter,
    TorchvisionSwinAdapter,
]


def register(adapter_cls: Type[ViTAdapter]) -> Type[ViTAdapter]:
    """Register an adapter class (usable as a decorator); newest is tried first."""
    _REGISTRY.insert(0, adapter_cls)
    return adapter_cls


def supported_families() -> List[str]:
    """Human-readable names of the model families that have an adapter."""
    return [cls.family for cls in _REGISTRY]


def unwrap(model: nn.Module) -> nn.Module:
    """The module an explanation of ``model`` runs.

    ``torch.nn.DataParallel`` and ``DistributedDataParallel`` are unwrapped to
    their ``.module`` and a model compiled by ``torch.compile`` to its ``._orig_mod``
    (repeatedly, so ``torch.compile(DataParallel(model))`` works): they share
    the wrapped module's parameters and compute the same function, and the
    explanation runs that module directly, in this process, on its device,
    uncompiled (the temporary explicit forwards could not be compiled anyway).

    Raises:
        UnsupportedModelError: a model sharded with FSDP (``fully_shard`` or
            ``FullyShardedDataParallel``), whose parameters are not whole
            outside its own forward; the message says to explain an unsharded
            copy.
    """
    while True:
        if _sharded(model):
            raise UnsupportedModelError(
                f"{type(model).__name__} is sharded with FSDP: its parameters are "
                "not whole outside its forward, so the explanation cannot read them. "
                "Explain an unsharded copy (e.g. a plain model that loads the full "
                "state dict, torch.distributed.checkpoint.state_dict."
                "get_model_state_dict(model, options=StateDictOptions("
                "full_state_dict=True)))."
            )
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = cast(nn.Module, model.module)
        elif _compiled(model):
            model = cast(nn.Module, model._orig_mod)
        else:
            return model


def _compiled(model: nn.Module) -> bool:
    # torch._dynamo's OptimizedModule, recognised without importing dynamo
    return type(model).__module__.startswith("torch._dynamo") and isinstance(
        getattr(model, "_orig_mod", None), nn.Module
    )


def _sharded(model: nn.Module) -> bool:
    return any(
        cls.__module__.startswith("torch.distributed.fsdp")
        for module in model.modules()
        for cls in type(module).__mro__
    )


def get(model: Union[nn.Module, ViTAdapter]) -> ViTAdapter:
    """Return the adapter for ``model``.

    Wrappers are unwrapped first (:func:`unwrap`): the adapter of
    ``DataParallel(model)``, ``DistributedDataParallel(model)`` or
    ``torch.compile(model)`` is that of ``model``, and explanations run
    ``model`` itself.

    Args:
        model (torch.nn.Module): a stock Vision Transformer (possibly
            wrapped), or an adapter (returned unchanged).

    Returns:
        ViTAdapter: the adapter of the model's family.

    Raises:
        UnsupportedModelError: no adapter matches; the message lists the
            supported families (and names the wrapped module to pass, for an
            unknown wrapper with a ``.module``).
    """
    if isinstance(model, ViTAdapter):
        return model
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(
            f"expected a torch.nn.Module, got {type(model).__name__}"
        )
    model = unwrap(model)
    for cls in _REGISTRY:
        if cls.matches(model):
            return cls(model)
    families = "\n  - ".join(supported_families())
    hint = ""
    inner = getattr(model, "module", None)
    if isinstance(inner, nn.Module):
        hint = (
            f" It wraps a {type(inner).__name__} in `.module`: pass the wrapped "
            "model (`model.module`) instead."
        )
    raise UnsupportedModelError(
        f"{type(model).__module__}.{type(model).__name__} is not a supported Vision "
        f"Transformer.{hint} Supported families:\n  - {families}"
    )
