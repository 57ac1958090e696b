"""captum_vit: explainability methods of the Vision-Transformer literature as
Captum attributions, running on stock timm, Hugging Face and torchvision ViTs.
"""

__version__ = "0.1.0"

from . import adapters, metrics, viz  # noqa: E402
from .attr import (  # noqa: E402
    ATMAN,
    LRP,
    TAM,
    AttentionFlow,
    AttentionRollout,
    AttnLRP,
    BeyondIntuition,
    EViT,
    GenericAttention,
    GradSAM,
    PartialLRP,
    RawAttention,
    ShapleyExplainer,
    ShapleySurrogate,
    TransformerLRP,
    ViTAttribution,
    ViTCX,
    ViTGradCam,
    ViTShapley,
    forward_func,
    patch_feature_mask,
    patch_window,
    to_tokens,
)

__all__ = [
    "adapters",
    "metrics",
    "viz",
    "ViTAttribution",
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
]
