"""NF4 (4-bit NormalFloat) weights for the big Flux modules: the transformer and the T5 encoder.

On CUDA the real models are loaded through diffusers'/transformers' `BitsAndBytesConfig`
(see registry.py). diffusers refuses that path without a GPU ("No GPU found"), so on other
devices `quantize_linear_nf4` swaps every `nn.Linear` in place for bitsandbytes `Linear4bit`
(bitsandbytes >= 0.49 runs NF4 on the CPU). Both give the same kind of weights.
"""
from __future__ import annotations

import torch
from torch import nn


def quantize_linear_nf4(module: nn.Module, compute_dtype: torch.dtype = torch.float32, skip: tuple[str, ...] = ()) -> int:
    """Replace every nn.Linear under `module` by an NF4 `Linear4bit`; returns how many were replaced.

    skip: substrings of module paths to leave in full precision.
    """
    import bitsandbytes as bnb

    targets = [
        (path, child)
        for path, child in module.named_modules()
        if type(child) is nn.Linear and not any(s in path for s in skip)
    ]
    for path, linear in targets:
        parent_path, _, attribute = path.rpartition(".")
        parent = module.get_submodule(parent_path) if parent_path else module
        device = linear.weight.device
        replacement = bnb.nn.Linear4bit(
            linear.in_features, linear.out_features, bias=linear.bias is not None,
            compute_dtype=compute_dtype, quant_type="nf4", device="meta",
        )
        replacement.weight = bnb.nn.Params4bit(
            linear.weight.data.detach().to("cpu", torch.float32), requires_grad=False, quant_type="nf4"
        )
        if linear.bias is not None:
            replacement.bias = nn.Parameter(linear.bias.data.detach().clone(), requires_grad=False)
        setattr(parent, attribute, replacement.to(device))  # .to() quantizes the weight
    return len(targets)


def weight_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers, NF4 quantisation state included."""
    total = 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        total += tensor.numel() * tensor.element_size()
        state = getattr(tensor, "quant_state", None)
        if state is not None:
            total += sum(t.numel() * t.element_size() for t in _quant_state_tensors(state))
    return total


def _quant_state_tensors(state) -> list[torch.Tensor]:
    tensors = [state.absmax, state.code]
    if getattr(state, "state2", None) is not None:
        tensors += [state.state2.absmax, state.state2.code]
    return [t for t in tensors if torch.is_tensor(t)]
