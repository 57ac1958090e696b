"""Attribution methods for Vision Transformers, one per file."""

from ._base import ViTAttribution, fuse_heads, tokens_to_pixels
from .generic_attention import GenericAttention
from .grad_sam import GradSAM
from .lrp import LRP
from .partial_lrp import PartialLRP
from .raw_attention import RawAttention
from .rollout import AttentionRollout
from .transformer_lrp import TransformerLRP

__all__ = [
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
]
