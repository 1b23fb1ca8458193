"""Top-k sparse autoencoder (Gao et al.), trained the way sdxl-unbox trains it.

latents = relu(topk((x' - b_dec) W_enc^T + b_enc)),  x_hat' = latents W_dec + b_dec,
with x' the optionally standardised/whitened input. Recipe: b_dec starts at the geometric
median, W_enc starts as W_dec (the decoder's transpose in nn.Linear terms), decoder rows stay
unit-norm (the gradient along them is removed), AuxK on dead latents (k_aux, coefficient
1/32, dead after `dead_tokens` tokens without firing), loss scaled by 1/Var(x), Adam with
lr * sqrt(2^14 / n). Training is `sae_step.sae_train_step` (sparse, hand-written backward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffdict.dictionaries import distributed
from diffdict.dictionaries.base import Dictionary, SparseCode, batch_rows, check_activations, register, sparse_decode
from diffdict.dictionaries.distributed import World
from diffdict.dictionaries.errors import InputError
from diffdict.dictionaries.normalize import KINDS, InputNorm
from diffdict.dictionaries.options import check_ranges, option
from diffdict.dictionaries.sae_step import StepStats, sae_train_step

PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")
ENCODE_CHUNK = 4096  # rows per encoder product, bounds the (rows, n) pre-activation buffer


MAX_SEED = 2**63 - 1


@dataclass
class TopKSAEConfig:
    """The SAE's options: their types, defaults, ranges and docs are its option schema (dictionaries/options.py)."""

    d: int
    n: int
    k: int
    k_aux: int = option(
        256, "[]", 0, math.inf, doc="latents the AuxK loss reconstructs the error with; 0 disables AuxK"
    )
    aux_coef: float = option(1.0 / 32, "[]", 0.0, math.inf, doc="weight of the AuxK loss")
    dead_tokens: int = option(
        10_000_000, "[]", 1, math.inf, doc="a latent that has not fired for this many tokens is dead (AuxK revives it)"
    )
    lr: float = option(1e-4, "(]", 0.0, math.inf, doc="Adam's learning rate before the sqrt(2^14 / n) scaling")
    scale_lr_with_n: bool = option(True, doc="effective lr = lr * sqrt(2^14 / n) (Gao et al.)")
    beta1: float = option(0.9, "[)", 0.0, 1.0, doc="Adam's first-moment decay")
    beta2: float = option(0.999, "[)", 0.0, 1.0, doc="Adam's second-moment decay")
    eps: float = option(6.25e-10, "(]", 0.0, math.inf, doc="Adam's epsilon")
    input_norm: str = option("none", choices=KINDS, doc="standardise or whiten the input (folded back into the atoms)")
    fired_threshold: float = option(1e-3, "[]", 0.0, math.inf, doc="a latent above this value has fired")
    init_sample: int = option(32768, "[]", 1, math.inf, doc="tokens used for the geometric median and the variance")
    seed: int = option(0, "[]", 0, MAX_SEED, doc="seeds the initial weights")

    def __post_init__(self) -> None:
        for name in ("d", "n", "k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"topk_sae: {name} must be a positive integer, got {value!r}")
        if self.k > self.n:
            raise InputError(
                f"topk_sae: k={self.k} is larger than n={self.n}; choose k <= n (sdxl-unbox uses k=10 with n=5120)"
            )
        if self.input_norm not in KINDS:
            raise InputError(f"topk_sae: input_norm must be one of {KINDS}, got {self.input_norm!r}")
        check_ranges(self, "topk_sae")

    @property
    def effective_lr(self) -> float:
        return self.lr * math.sqrt(2**14 / self.n) if self.scale_lr_with_n else self.lr


def geometric_median(
    points: torch.Tensor, iterations: int = 100, eps: float = 1e-6, ftol: float = 1e-20
) -> torch.Tensor:
    """Weiszfeld's algorithm on points (N, d) -> (d,); starts at the mean."""
    points = points.double()
    median = points.mean(0)
    objective = (points - median).norm(dim=1).sum()
    for _ in range(iterations):
        weights = 1.0 / (points - median).norm(dim=1).clamp_min(eps)
        median = (points * weights[:, None]).sum(0) / weights.sum()
        previous, objective = objective, (points - median).norm(dim=1).sum()
        if abs(previous - objective) <= ftol * objective:
            break
    return median.float()


@register
class TopKSAE(Dictionary):
    architecture = "topk_sae"
    config_class = TopKSAEConfig
    size_keys = ("n", "k")
    resume_state = ("initialized", "tokens_seen", "steps")  # saved and restored by the base class
    init_from_sample = True  # b_dec at the geometric median, input norm and 1/Var from a sample
    supports_distributed = True  # partial_fit(x, world): gradients averaged over ranks

    @classmethod
    def training_memory(cls, n: int, d: int, batch: int) -> tuple[int, str]:
        # encoder + decoder, each with gradient and two Adam moments; dense batch codes
        return (
            8 * n * d * 4 + 3 * batch * n * 4,
            "n x d x 4 bytes x 8 (encoder, decoder, gradients, Adam) + batch x n x 4 x 3",
        )

    def __init__(self, config: TopKSAEConfig) -> None:
        super().__init__(config)
        generator = torch.Generator().manual_seed(config.seed)
        W_dec = torch.randn(config.n, config.d, generator=generator)
        self.W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
        self.W_enc = self.W_dec.clone()  # encoder = decoder transpose at init
        self.b_enc = torch.zeros(config.n)
        self.b_dec = torch.zeros(config.d)
        self.norm = InputNorm(config.input_norm, config.d)
        self.mse_scale = 1.0
        self.initialized = False
        self.tokens_since_fired = torch.zeros(config.n, dtype=torch.long)
        self.tokens_seen = 0
        self.steps = 0
        self._optimizer: torch.optim.Adam | None = None
        self._pending_adam: dict[str, torch.Tensor] | None = None

    # --- shape ---
    @property
    def n(self) -> int:
        return self.config.n

    @property
    def k(self) -> int:
        return self.config.k

    @property
    def atoms(self) -> torch.Tensor:
        """(n, d) decoder rows in activation space (unit norm unless an input norm is folded in)."""
        return self.norm.invert_directions(self.W_dec)

    @property
    def decoder_bias(self) -> torch.Tensor:
        """(d,) the reconstruction of an all-zero code, in activation space."""
        return self.norm.invert(self.b_dec)

    # --- device ---
    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    def to(self, device: str | torch.device) -> TopKSAE:
        """Move weights, normaliser, dead-latent counters and Adam state to `device`."""
        # The optimiser holds the old parameter tensors: keep its state as a pending restore
        # (the path a resume takes, bit-exact) and rebuild it on first use on the new device.
        adam = {k: v for k, v in self.training_tensors().items() if k.startswith("adam.")}
        for name in PARAM_NAMES:
            setattr(self, name, getattr(self, name).to(device))
        self.norm.to(device)
        self.tokens_since_fired = self.tokens_since_fired.to(device)
        self._optimizer = None
        self._pending_adam = {k: v.to(device) for k, v in adam.items()} or None
        return self

    # --- training ---
    def initialize(self, sample: torch.Tensor) -> None:
        """Data-dependent init from a sample (N, d): input norm, b_dec at the geometric median, 1/Var."""
        check_activations(sample, self.d, "topk_sae init sample", self.device)
        sample = sample[: self.config.init_sample].float()
        self.norm.fit(sample)
        normed = self.norm.apply(sample)
        self.b_dec = geometric_median(normed)
        self.set_loss_scale(normed)
        self.initialized = True

    def set_loss_scale(self, normed: torch.Tensor) -> None:
        """mse_scale = 1 / Var from a normalised sample (N, d): the mean over all entries of the
        squared deviation from the per-channel mean, as sdxl-unbox computes it."""
        normed = normed.float()
        variance = float((normed - normed.mean(0)).pow(2).mean())
        self.mse_scale = 1.0 / max(variance, 1e-30)

    def _adam(self) -> torch.optim.Adam:
        if self._optimizer is None:
            cfg = self.config
            params = [getattr(self, name) for name in PARAM_NAMES]
            self._optimizer = torch.optim.Adam(
                params, lr=cfg.effective_lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=True
            )
            if self._pending_adam is not None:
                self._restore_adam(self._optimizer, self._pending_adam)
                self._pending_adam = None
        return self._optimizer

    def adam_step(self, grads: list[torch.Tensor]) -> None:
        optimizer = self._adam()
        for param, grad in zip(optimizer.param_groups[0]["params"], grads):
            param.grad = grad
        optimizer.step()
        for param in optimizer.param_groups[0]["params"]:
            param.grad = None

    def partial_fit(self, x, world: World | None = None) -> dict[str, float]:
        """One step on x (N, d); with a World, x is this rank's slice of the global batch."""
        x = batch_rows(x)  # accepts a store TokenBatch
        check_activations(x, self.d, "topk_sae.partial_fit", self.device)
        if not self.initialized:  # on the whole batch, so every rank starts from the same point
            self.initialize(distributed.gather_rows(x, world) if world is not None else x)
        elif not self.mse_scale:  # imported weights without the loss scale they were trained with
            whole = distributed.gather_rows(x, world) if world is not None else x
            self.set_loss_scale(self.norm.apply(whole.float()))
        return self.train_step(x, world).as_dict()

    def train_step(self, x: torch.Tensor, world: World | None = None) -> StepStats:
        return sae_train_step(self, self.norm.apply(x.float()), world)

    # --- inference ---
    @torch.no_grad()
    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n) encoder pre-activations; for analyses, not for training."""
        x = self.norm.apply(check_activations(x, self.d, "topk_sae.encode", self.device).float())
        return torch.addmm(self.b_enc, x - self.b_dec, self.W_enc.t())

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> SparseCode:
        x = self.norm.apply(check_activations(x, self.d, "topk_sae.encode", self.device).float())
        values, indices = [], []
        for start in range(0, x.shape[0], ENCODE_CHUNK):
            pre = torch.addmm(self.b_enc, x[start : start + ENCODE_CHUNK] - self.b_dec, self.W_enc.t())
            top, idx = pre.topk(self.k, dim=1)
            values.append(top.clamp_min(0))
            indices.append(idx)
        if not values:
            return SparseCode(
                torch.zeros(0, self.k, device=x.device), torch.zeros(0, self.k, dtype=torch.long, device=x.device)
            )
        return SparseCode(torch.cat(values), torch.cat(indices))

    @torch.no_grad()
    def decode(self, code: SparseCode) -> torch.Tensor:
        return sparse_decode(code, self.atoms, self.decoder_bias)

    # --- persistence ---
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {name: getattr(self, name) for name in PARAM_NAMES}
        out.update(self.norm.tensors())
        out["mse_scale"] = torch.tensor([self.mse_scale], dtype=torch.float64, device=self.device)
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for name in PARAM_NAMES:
            expected = tuple(getattr(self, name).shape)
            if tuple(tensors[name].shape) != expected:
                raise InputError(
                    f"topk_sae: saved {name} has shape {tuple(tensors[name].shape)}, config says {expected}"
                )
            setattr(self, name, tensors[name].float().contiguous())
        self.norm.load_tensors(tensors)
        self.mse_scale = float(tensors["mse_scale"][0])
        self._optimizer = None

    def training_tensors(self) -> dict[str, torch.Tensor]:
        out = {"tokens_since_fired": self.tokens_since_fired}
        if self._optimizer is not None:
            state = self._optimizer.state
            for name, param in zip(PARAM_NAMES, self._optimizer.param_groups[0]["params"]):
                if param in state:
                    out[f"adam.{name}.exp_avg"] = state[param]["exp_avg"]
                    out[f"adam.{name}.exp_avg_sq"] = state[param]["exp_avg_sq"]
                    out[f"adam.{name}.step"] = state[param]["step"].reshape(1).float()
        elif self._pending_adam is not None:
            out.update(self._pending_adam)
        return out

    def load_training_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tokens_since_fired = tensors["tokens_since_fired"].long().to(self.device, copy=True)
        adam = {k: v for k, v in tensors.items() if k.startswith("adam.")}
        self._optimizer = None
        self._pending_adam = adam or None

    def _restore_adam(self, optimizer: torch.optim.Adam, adam: dict[str, torch.Tensor]) -> None:
        for name, param in zip(PARAM_NAMES, optimizer.param_groups[0]["params"]):
            if f"adam.{name}.exp_avg" in adam:
                # fused Adam wants its state (the step too) on the parameter's device
                optimizer.state[param] = {
                    "step": adam[f"adam.{name}.step"].reshape(()).float().to(param.device, copy=True),
                    "exp_avg": adam[f"adam.{name}.exp_avg"].to(param.device, copy=True),
                    "exp_avg_sq": adam[f"adam.{name}.exp_avg_sq"].to(param.device, copy=True),
                }
