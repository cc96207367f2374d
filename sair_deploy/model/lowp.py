"""Float32 islands inside a bfloat16 autocast region (the torch backend's ``--precision bf16``).

CPU autocast runs convolutions and matrix products in bfloat16, and on the CPU it also runs
normalisation and softmax in bfloat16. :class:`Float32Islands` keeps these in float32:

* normalisations and softmax (their statistics need float32's range and mantissa);
* matrix products whose contracted dimension is 2: the coordinate and cell parts of the MLPs'
  first layers (``rel @ W_rel``, ``cell @ W_cell``); no learned feature is 2 channels wide;
* the final RGB layer (matched by its weight), so colours are not rounded to 8 mantissa bits.

Index arithmetic (floor, gathers' indices) is never autocast, so it stays float32 anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_NORMS = {F.layer_norm, F.group_norm, F.batch_norm, F.instance_norm, F.softmax, F.log_softmax,
          torch.softmax, torch.log_softmax, torch.Tensor.softmax, torch.Tensor.log_softmax,
          torch.layer_norm, torch.group_norm, torch.batch_norm}
_PRODUCTS = {F.linear, torch.addmm, torch.matmul, torch.mm, torch.bmm, torch.Tensor.__matmul__,
             torch.Tensor.matmul, torch.Tensor.mm}


def _float(x):
    return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def _contracted_dim(func, args) -> int | None:
    """The inner dimension of a matrix product call (None when it cannot be read)."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if func is F.linear:
        return tensors[0].shape[-1] if tensors else None
    if func is torch.addmm and len(tensors) >= 2:
        return tensors[1].shape[-1]
    return tensors[0].shape[-1] if tensors else None


class Float32Islands(TorchFunctionMode):
    """Within autocast, run normalisation, softmax, coordinate products and the layer with
    weight ``rgb_weight`` in float32 (inputs cast up, autocast off for that call)."""

    def __init__(self, rgb_weight: torch.Tensor):
        super().__init__()
        self.rgb_weight = rgb_weight

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        keep = func in _NORMS
        if not keep and func in _PRODUCTS:
            keep = _contracted_dim(func, args) == 2 or (
                func is F.linear and len(args) > 1 and args[1] is self.rgb_weight)
        if not keep:
            return func(*args, **kwargs)
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device, enabled=False):
            return func(*[_float(a) for a in args], **{k: _float(v) for k, v in kwargs.items()})
