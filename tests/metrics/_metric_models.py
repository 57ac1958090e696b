"""Tiny models with known attributions, shared by the metrics tests."""

import torch


class RegionModel(torch.nn.Module):
    """Two classes; logit 0 = scale * (sum of the pixels in ``mask``), logit 1 = 0.

    It depends only on the masked region, so the true mask is the oracle attribution.
    """

    def __init__(self, mask: torch.Tensor, scale: float = 1.0):
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.scale = scale

    def forward(self, x):
        s = (x * self.mask).sum(dim=(1, 2, 3)) * self.scale
        return torch.stack([s, torch.zeros_like(s)], dim=1)


class SumModel(torch.nn.Module):
    """logit c = sum(w_c * x): linear, so w * x is its exact attribution."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.register_buffer("w", w)  # (K, C, H, W)

    def forward(self, x):
        return torch.einsum("bchw,kchw->bk", x, self.w)


def small_cnn(num_classes: int = 4, state=None) -> torch.nn.Module:
    """A small CNN (any image size) of the ROAD reference data; ``state``
    replaces its seeded initial weights."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Conv2d(6, 6, 3, padding=1, stride=2),
        torch.nn.Tanh(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(24, num_classes),
    )
    if state is not None:
        m.load_state_dict(state)
    return m.eval()
