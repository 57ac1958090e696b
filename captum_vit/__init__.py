"""captum_vit: explainability methods of the Vision-Transformer literature as
Captum attributions, running on stock timm, Hugging Face and torchvision ViTs.
"""

__version__ = "0.1.0"

from . import adapters, attr, metrics, viz  # noqa: E402
from .attr import *  # noqa: E402,F403

#: the subpackages, then every public name of :mod:`captum_vit.attr`
__all__ = ["adapters", "metrics", "viz", *attr.__all__]
