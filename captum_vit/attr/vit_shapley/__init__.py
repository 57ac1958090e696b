r"""ViT Shapley: a learned Shapley-value explainer (Covert, Kim, Lee, ICLR 2023).

Three calls: :meth:`ViTShapley.train_surrogate` fine-tunes a copy of the
classifier to accept partial inputs (patch tokens held out by attention
masking), :meth:`ViTShapley.train_explainer` trains a ViT with a per-token head
to output Shapley values of that surrogate, and :meth:`ViTShapley.attribute`
explains a batch with one explainer forward.

One job per module:

* ``_method``: :class:`ViTShapley`, the Captum attribution;
* ``_surrogate`` and ``_masking``: :class:`ShapleySurrogate` and the tracer
  that holds patch tokens out of every attention layer;
* ``_explainer``: :class:`ShapleyExplainer`, the ViT with a per-token head;
* ``_game``: the link, :math:`v(\mathbf 1)`, :math:`v(\mathbf 0)` and the
  efficient normalisation, shared by inference and training;
* ``_sampling``: the surrogate's and the Shapley kernel's subset samplers;
* ``_training``: the two objectives, over the one loop of ``_loop``;
* ``_state``: the only code that copies a model or changes its mode or flags;
* ``_io``: the file format of save/load.
"""

from ._explainer import ShapleyExplainer
from ._method import ViTShapley
from ._sampling import sample_shapley_subsets, sample_uniform_subsets
from ._surrogate import ShapleySurrogate

__all__ = [
    "ViTShapley",
    "ShapleySurrogate",
    "ShapleyExplainer",
    "sample_uniform_subsets",
    "sample_shapley_subsets",
]
