"""Training checkpoints as safetensors (never pickle): weights, EMA weights, AdamW state, step.

A stage writes `<stage>.partial.safetensors` while it runs and `<stage>.safetensors` (the EMA
weights only) when it is done; a finished stage is skipped on the next run. Writes are
atomic (temporary file, then rename), so a killed run never leaves a broken checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffdict.dictionaries.atomic import write_file_atomic


def save_tensors_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Safetensors file written through dictionaries.atomic (temporary sibling, fsync, rename)."""
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    write_file_atomic(path, lambda tmp: save_file(cpu, str(tmp), metadata=metadata))


def module_tensors(modules: dict[str, torch.nn.Module], prefix: str = "") -> dict[str, torch.Tensor]:
    out, seen = {}, set()
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            # Tied weights (T5's shared embedding) share storage, which safetensors refuses.
            pointer = value.data_ptr()
            out[f"{prefix}{name}.{key}"] = value.clone() if pointer in seen else value
            seen.add(pointer)
    return out


def load_modules(modules: dict[str, torch.nn.Module], tensors: dict[str, torch.Tensor], prefix: str = "") -> None:
    for name, module in modules.items():
        start = f"{prefix}{name}."
        state = {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}
        module.load_state_dict(state, strict=True)


def save_final(path: Path, modules: dict[str, torch.nn.Module], info: dict | None = None) -> None:
    save_tensors_atomic(module_tensors(modules), path, {"info": json.dumps(info or {})})


def load_final(path: Path, modules: dict[str, torch.nn.Module], missing_ok: bool = False) -> dict:
    """Loads weights into `modules`; returns the info saved with them. missing_ok: modules the file holds
    nothing of keep their weights (a warm start whose stage gained a module, e.g. a new readout)."""
    tensors = load_file(str(path))
    if missing_ok:
        modules = {name: m for name, m in modules.items() if any(k.startswith(f"{name}.") for k in tensors)}
    load_modules(modules, {k: v.float() for k, v in tensors.items()})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return json.loads((handle.metadata() or {}).get("info", "{}"))


def save_partial(
    path: Path,
    modules: dict[str, torch.nn.Module],
    ema: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    step: int,
    total_steps: int,
    seconds: float,
) -> None:
    """`seconds`: wall-clock time the stage has run so far (its cap counts across resumes)."""
    tensors = module_tensors(modules) | module_tensors(ema, prefix="ema.")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, param in enumerate(params):
        for key, value in optimizer.state.get(param, {}).items():
            tensors[f"optimizer.{i}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    save_tensors_atomic(
        tensors, path, {"step": str(step), "total_steps": str(total_steps), "seconds": f"{seconds:.1f}"}
    )


def load_partial(
    path: Path, modules: dict[str, torch.nn.Module], ema: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer
) -> tuple[int, int, float]:
    """Restores a running stage; returns (step, total_steps, seconds run so far)."""
    from safetensors import safe_open

    tensors = load_file(str(path))
    load_modules(modules, tensors)
    load_modules(ema, tensors, prefix="ema.")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, param in enumerate(params):
        # AdamW keeps its step counter on the CPU unless it runs "capturable".
        state = {
            k.split(".", 2)[2]: v if k.endswith(".step") else v.to(param.device)
            for k, v in tensors.items()
            if k.startswith(f"optimizer.{i}.")
        }
        if state:
            optimizer.state[param] = state
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    # Checkpoints written before the time was kept have no "seconds".
    return int(metadata["step"]), int(metadata["total_steps"]), float(metadata.get("seconds", 0.0))
