"""airbench94_muon's optimizer (Keller Jordan, 2024): Muon for the convolution filters, Nesterov SGD for the rest.

Muon replaces a filter's momentum by the nearest semi-orthogonal matrix (its rows of equal length and at
right angles), so every direction the gradient points in moves the filter by the same amount; airbench94_muon
reaches airbench94's accuracy in about 80% of its training images with it. torch 2.14 ships
``torch.optim.Muon``, but for 2-D parameters only (a convolution's 4-D filters are refused with a
ValueError) and without airbench's renormalisation of the filter before each step, so the update is
written out here, in airbench's form.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import Optimizer

from lit_cifar.cpu import has_bf16_units

# The quintic Newton–Schulz iteration's coefficients (Keller Jordan's), chosen for speed of reaching roughly
# orthogonal, not for converging: the singular values end between about 0.5 and 1.5.
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalized(matrix: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """``matrix`` (2-D) with its singular values moved towards 1 by ``steps`` Newton–Schulz iterations, in bf16
    as airbench does, or in fp32 on a CPU without bf16 units, where bf16 matrix products are emulated and many
    times slower."""
    a, b, c = NEWTON_SCHULZ
    x = matrix.to(torch.float32 if matrix.device.type == "cpu" and not has_bf16_units() else torch.bfloat16)
    x = x / (x.norm() + eps)  # the largest singular value at most 1, where the iteration converges
    wide = x.size(0) <= x.size(1)
    if not wide:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.T


class MuonWithSGD(Optimizer):
    """Muon on every parameter of 4 dimensions (convolution filters), Nesterov SGD on the others.

    Each parameter group given is kept for its other parameters (with ``lr``, ``momentum``,
    ``weight_decay`` as ``torch.optim.SGD`` with Nesterov momentum); the filters of all groups are
    gathered into one group after them, with ``muon_lr`` and ``muon_momentum``. A schedule scales every
    group's learning rate by the same factor, the filters' too. A Muon step: the filter is rescaled to
    the norm sqrt(out_channels) (airbench's; its length then carries no information, so weight decay has
    nothing to do there), its gradient goes into a Nesterov momentum, and the momentum, as an
    out_channels × (in_channels · kh · kw) matrix, orthogonalised by ``ns_steps`` Newton–Schulz
    iterations, is subtracted times the learning rate.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        momentum: float = 0.85,
        weight_decay: float = 0.0,
        muon_lr: float = 0.24,
        muon_momentum: float = 0.6,
        ns_steps: int = 3,
    ) -> None:
        for name, value in {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "muon_lr": muon_lr,
                            "muon_momentum": muon_momentum}.items():
            if value < 0:
                raise ValueError(f"{name} must be 0 or more, got {value}")
        if ns_steps < 1:
            raise ValueError(f"ns_steps must be at least 1, got {ns_steps}")
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        filters: list[torch.Tensor] = []
        others = []
        for group in groups:
            group_params = list(group["params"])
            filters += [p for p in group_params if p.ndim == 4]
            others.append({"muon": False, **group, "params": [p for p in group_params if p.ndim != 4]})
        muon_group = {"params": filters, "lr": muon_lr, "momentum": muon_momentum, "weight_decay": 0.0, "muon": True}
        # The defaults are the constructor's arguments, so type(optimizer)(optimizer.param_groups, **optimizer.defaults)
        # rebuilds it (the model checks a schedule on such a copy).
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "muon_lr": muon_lr,
                    "muon_momentum": muon_momentum, "ns_steps": ns_steps}
        super().__init__([*others, muon_group] if filters else others, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if group["muon"] else p.grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(grad)
                buffer = state["momentum_buffer"].mul_(momentum).add_(grad)
                update = grad.add(buffer, alpha=momentum)  # Nesterov
                if group["muon"]:
                    p.mul_(len(p) ** 0.5 / p.norm())
                    update = orthogonalized(update.reshape(len(p), -1), group["ns_steps"]).view_as(p)
                p.add_(update.to(p.dtype), alpha=-lr)
        return loss
