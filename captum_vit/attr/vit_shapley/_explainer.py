r"""The explainer :math:`\phi(x)`: a stock ViT with a per-token MLP head."""

from __future__ import annotations

from typing import List, Optional

from torch import Tensor, nn

from ... import adapters
from ...adapters import Tracer
from ._surrogate import check_shapley_model


class ShapleyExplainer(nn.Module):
    r"""A ViT with a per-token head: one value per patch token and class.

    The backbone is a stock ViT (a copy of the classifier); the final
    representation of each patch token (last block output, through the
    model's final norm) goes through an MLP to ``num_classes`` outputs. The
    model's own classifier head is left in place and unused.
    ``forward(images)`` returns the *unnormalised* values ``(B, P, classes)``;
    :meth:`ViTShapley.attribute` applies the efficient normalisation.

    Args:
        model (torch.nn.Module): a stock ViT, used as is (not copied).
        num_classes (int, optional): outputs per token. Default: the model's
            number of classes
        hidden_dim (int, optional): width of the MLP's hidden layers.
            Default: 2 x the embedding dimension
        num_mlp_layers (int, optional): linear layers of the head (GELU in
            between). Default: 3 (the paper's best head)
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: Optional[int] = None,
        hidden_dim: Optional[int] = None,
        num_mlp_layers: int = 3,
    ) -> None:
        super().__init__()
        adapter = check_shapley_model(adapters.get(model))
        self.backbone = adapter.model
        # one token's width (the last attention's output projection); heads
        # that concatenate the class token and the patch mean (DINOv2) or
        # project into an embedding (CLIP) are not read
        weight = adapter.block_parts(adapter.num_layers - 1).proj.weight
        assert isinstance(weight, Tensor)  # the projection: a linear layer
        dim = weight.shape[0]
        classes = adapter.num_classes if num_classes is None else int(num_classes)
        hidden = 2 * dim if hidden_dim is None else int(hidden_dim)
        if num_mlp_layers < 1:
            raise ValueError(f"num_mlp_layers must be >= 1, got {num_mlp_layers}")
        layers: List[nn.Module] = []
        width = dim
        for _ in range(num_mlp_layers - 1):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        layers.append(nn.Linear(width, classes))
        self.head = nn.Sequential(*layers)
        #: the head's configuration, saved by :meth:`ViTShapley.save`
        self.config = {
            "num_classes": classes,
            "hidden_dim": hidden,
            "num_mlp_layers": int(num_mlp_layers),
        }

    def tokens(self, images: Tensor) -> Tensor:
        """Final patch-token representations ``(B, P, D)``."""
        adapter = adapters.get(self.backbone)
        last = adapter.num_layers - 1
        # layers=() keeps torch's fused attention; only block outputs recorded
        tracer = Tracer(keep_attention=False, keep_blocks=True, layers=())
        with adapter.trace(tracer):
            adapter.forward(images)
        x = tracer.block_outputs[last]
        head = adapter.head_parts()
        if head.norm is not None:
            x = head.norm(x)
        if head.fc_norm is not None:
            x = head.fc_norm(x)
        return x[:, adapter.num_prefix_tokens :]

    def forward(self, images: Tensor) -> Tensor:
        """Unnormalised values ``(B, P, classes)`` of ``images``."""
        return self.head(self.tokens(images))
