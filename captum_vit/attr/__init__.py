"""Attribution methods for Vision Transformers, one per file."""

from ._base import ViTAttribution, fuse_heads, tokens_to_pixels
from ._registry import create_method, list_methods, register_method
from .agcam import AGCAM
from .atman import ATMAN
from .attcat import AttCAT
from .attention_flow import AttentionFlow
from .attn_lrp import AttnLRP
from .beyond_intuition import BeyondIntuition
from .captum_helpers import (
    ViTGradCam,
    forward_func,
    patch_feature_mask,
    patch_window,
    to_tokens,
)
from .evit import EViT
from .generic_attention import GenericAttention
from .grad_sam import GradSAM
from .lrp import LRP
from .partial_lrp import PartialLRP
from .raw_attention import RawAttention
from .rollout import AttentionRollout
from .tam import TAM
from .tis import TIS
from .transformer_lrp import TransformerLRP
from .vit_cx import ViTCX
from .vit_reciprocam import ViTReciproCAM
from .vit_shapley import ShapleyExplainer, ShapleySurrogate, ViTShapley

for _name, _cls in {
    "raw_attention": RawAttention,
    "rollout": AttentionRollout,
    "grad_sam": GradSAM,
    "generic_attention": GenericAttention,
    "vit_cx": ViTCX,
    "evit": EViT,
    "vit_gradcam": ViTGradCam,
    "atman": ATMAN,
    "transformer_lrp": TransformerLRP,
    "lrp": LRP,
    "partial_lrp": PartialLRP,
    "attn_lrp": AttnLRP,
    "attention_flow": AttentionFlow,
    "tam": TAM,
    "beyond_intuition": BeyondIntuition,
}.items():
    register_method(_name)(_cls)

__all__ = [
    "create_method",
    "list_methods",
    "register_method",
    "ViTAttribution",
    "fuse_heads",
    "tokens_to_pixels",
    "RawAttention",
    "AttentionRollout",
    "GradSAM",
    "GenericAttention",
    "TransformerLRP",
    "LRP",
    "PartialLRP",
    "AttnLRP",
    "AttentionFlow",
    "TAM",
    "BeyondIntuition",
    "ViTShapley",
    "ShapleySurrogate",
    "ShapleyExplainer",
    "ATMAN",
    "ViTGradCam",
    "forward_func",
    "patch_feature_mask",
    "patch_window",
    "to_tokens",
    "EViT",
    "ViTCX",
    "ViTReciproCAM",
    "TIS",
    "AttCAT",
    "AGCAM",
]
