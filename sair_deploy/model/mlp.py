"""The ReLU MLP used by both implicit functions."""

from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Module):
    """``depth`` Linear layers with ReLU between them (the paper's "four-layer MLP, hidden 256")."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, depth: int):
        super().__init__()
        if depth < 2:
            raise ValueError("an implicit-function MLP needs at least 2 layers")
        dims = [in_dim] + [hidden] * (depth - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < depth - 1:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self.layers if isinstance(m, nn.Linear)]

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
