"""NF4 (4-bit NormalFloat) weights for the big Flux modules: the transformer and the T5 encoder.

On CUDA the real models are loaded through diffusers'/transformers' `BitsAndBytesConfig`
(see registry.py). diffusers refuses that path without a GPU ("No GPU found"), so on other
devices `quantize_linear_nf4` swaps every `nn.Linear` in place for bitsandbytes `Linear4bit`
(bitsandbytes >= 0.49 runs NF4 on the CPU). Both give the same kind of weights.
"""

from __future__ import annotations

import logging
import sys

import torch
from torch import nn


def quantize_linear_nf4(
    module: nn.Module, compute_dtype: torch.dtype = torch.float32, skip: tuple[str, ...] = ()
) -> int:
    """Replace every nn.Linear under `module` by an NF4 `Linear4bit`; returns how many were replaced.

    skip: substrings of module paths to leave in full precision.
    """
    import bitsandbytes as bnb

    _note_cpu_kernel(module)
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
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=compute_dtype,
            quant_type="nf4",
            device="meta",
        )
        weight = linear.weight.data.detach().to("cpu", torch.float32)
        # Params4bit.__new__ takes quant_type; pyright checks the call against torch.nn.Parameter's __init__ too.
        replacement.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")  # pyright: ignore[reportCallIssue]
        if linear.bias is not None:
            replacement.bias = nn.Parameter(linear.bias.data.detach().clone(), requires_grad=False)
        setattr(parent, attribute, replacement.to(device))  # .to() quantizes the weight
    return len(targets)


def _note_cpu_kernel(module: nn.Module) -> None:
    """Say once, where NF4 runs on the CPU, that bitsandbytes' optional fast kernel is not loaded.

    adapters/__init__.py silences bitsandbytes' own import-time warning about it (printed in
    every process); this is the same fact, told only to those it concerns."""
    global _kernel_noted
    on_cpu = any(p.device.type == "cpu" for p in module.parameters())
    ops = sys.modules.get("bitsandbytes.backends.cpu.ops")
    if _kernel_noted or not on_cpu or ops is None or getattr(ops, "gemm_4bit_forward_kernel", True) is not None:
        return
    _kernel_noted = True
    logging.getLogger(__name__).warning(
        "NF4 on the CPU runs on bitsandbytes' built-in kernels: the optional kernels-community "
        "gemm_4bit_forward kernel was not loaded (it is fetched from the Hub and must be trusted)"
    )


_kernel_noted = False


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
