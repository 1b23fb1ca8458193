"""Import sdxl-unbox (SDLens) top-k SAE checkpoints as a `topk_sae` that encodes identically.

An sdxl-unbox checkpoint folder holds config.json (n_dirs_local, d_model, k, auxk,
dead_steps_threshold) and state_dict.pth ({"state_dict": {encoder.weight (n, d),
decoder.weight (d, n), pre_bias (d,), latent_bias (n,), stats_last_nonzero (n,)}}).
Their encoder is relu(topk((x - pre_bias) @ encoder.weight^T + latent_bias)), which is ours
with W_enc = encoder.weight, b_enc = latent_bias, b_dec = pre_bias, W_dec = decoder.weight^T.
Read with torch.load(weights_only=True): no code from the checkpoint is executed.

Training state, as the reference trains: its loss is mse / Var(x) with Var taken once from a
data sample (never saved), so `sample` sets that scale; without one it is taken from the first
batch a fine-tune sees. Its dead rule counts steps: `stats_last_nonzero` is 1 in a step where
the latent fired and grows by one per step without firing, and a latent is dead when it exceeds
`dead_steps_threshold` T. Our counter is tokens since the latent last fired (0 in a step where
it fired), dead at >= `dead_tokens`: with counter (stats - 1) * batch_size and dead_tokens =
T * batch_size the two agree step for step.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diffdict.dictionaries.base import check_activations
from diffdict.dictionaries.errors import InputError, MissingFileError
from diffdict.dictionaries.topk_sae import TopKSAE, TopKSAEConfig

REQUIRED_CONFIG = ("n_dirs_local", "d_model", "k")
REQUIRED_WEIGHTS = ("encoder.weight", "decoder.weight", "pre_bias", "latent_bias")


def import_unbox(folder: str | Path, batch_size: int = 4096, sample: torch.Tensor | None = None) -> TopKSAE:
    """Load an sdxl-unbox checkpoint folder.

    `batch_size` converts their step-counted dead window to tokens (4096 in the paper);
    `sample` (N, d) activations set the loss scale 1/Var as they computed it (see above)."""
    folder = Path(folder)
    config_path, weights_path = folder / "config.json", folder / "state_dict.pth"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise MissingFileError(f"{folder} is not an sdxl-unbox checkpoint: {path.name} is missing")
    config = json.loads(config_path.read_text())
    missing = [key for key in REQUIRED_CONFIG if key not in config]
    if missing:
        raise InputError(f"{config_path}: missing keys {missing} (an sdxl-unbox config has {list(REQUIRED_CONFIG)})")
    loaded = torch.load(weights_path, map_location="cpu", weights_only=True)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_WEIGHTS):
        found = sorted(state) if isinstance(state, dict) else type(loaded).__name__
        raise InputError(f"{weights_path}: expected tensors {list(REQUIRED_WEIGHTS)}, found {found}")
    n, d, k = int(config["n_dirs_local"]), int(config["d_model"]), int(config["k"])
    threshold = config.get("dead_steps_threshold")
    sae = TopKSAE(
        TopKSAEConfig(
            d=d,
            n=n,
            k=k,
            k_aux=int(config.get("auxk") or 0),
            dead_tokens=int(threshold) * batch_size if threshold is not None else 10_000_000,
        )
    )
    encoder, decoder = state["encoder.weight"].float(), state["decoder.weight"].float()
    if tuple(encoder.shape) != (n, d) or tuple(decoder.shape) != (d, n):
        raise InputError(
            f"{weights_path}: encoder {tuple(encoder.shape)} / decoder {tuple(decoder.shape)} do not "
            f"match n_dirs_local={n}, d_model={d}"
        )
    sae.W_enc = encoder.contiguous()
    sae.W_dec = decoder.t().contiguous()
    sae.b_enc = state["latent_bias"].float().contiguous()
    sae.b_dec = state["pre_bias"].float().contiguous()
    if "stats_last_nonzero" in state:  # 0 = never stepped: one step short of "fired this step"
        sae.tokens_since_fired = (state["stats_last_nonzero"].long() - 1) * batch_size
    sae.mse_scale = 0.0  # unknown until a sample is seen
    if sample is not None:
        sae.set_loss_scale(check_activations(sample, d, "import_unbox sample").float())
    sae.initialized = True
    sae.meta.update({"imported_from": str(folder), "source": "sdxl-unbox"})
    return sae
