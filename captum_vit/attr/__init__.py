"""Attribution methods for Vision Transformers, one per file.

Each method registers its name where it is defined (``@register_method``);
importing this package imports every method file, so :func:`list_methods`
sees them all.
"""

from ._base import ViTAttribution, fuse_heads, tokens_to_pixels
from ._describe import ModelInfo, describe, grid_size, patch_size
from ._registry import create_method, get_method, list_methods, register_method
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
from .grad_eclip import GradECLIP
from .grad_sam import GradSAM
from .legrad import LeGrad
from .lrp import LRP
from .partial_lrp import PartialLRP
from .raw_attention import RawAttention
from .rollout import AttentionRollout
from .similarity import embedding_similarity, image_similarity, text_similarity
from .tam import TAM
from .tis import TIS
from .transformer_lrp import TransformerLRP
from .vit_cx import ViTCX
from .vit_reciprocam import ViTReciproCAM
from .vit_shapley import ShapleyExplainer, ShapleySurrogate, ViTShapley

__all__ = [
    "create_method",
    "get_method",
    "describe",
    "ModelInfo",
    "patch_size",
    "grid_size",
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
    "LeGrad",
    "GradECLIP",
    "text_similarity",
    "image_similarity",
    "embedding_similarity",
]
