"""The Adapter: one model behind one hook-point interface, whatever its architecture.

A family module (sdxl.py, flux.py) says how to find hook points, where a block's input and
output live in its call, how maps are laid out, how timesteps normalise and how CFG splits
the batch; its `Family` declaration says which CFG branches a call's guidance setting gives and
which pipeline arguments carry it (`Guidance`), and the adapter passes each call's guidance there.
This file owns what is the same for every family: generation with capture and interventions
through forward hooks that are always removed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .capture import CapturedMap, Generation
from .errors import AdapterInputError, UnknownNameError
from .hookpoints import HookPoint, unknown_hook_message
from .interventions import Intervention
from .prefix_cache import PrefixCache, TrajectorySettings

if TYPE_CHECKING:  # family_spec imports this module
    from .family_spec import Family


def model_config(model: torch.nn.Module) -> Any:
    """A diffusers model's `config` (a FrozenDict whose keys read as attributes). torch's types make any attribute
    of a module a tensor or a submodule, so the config is read through this, which says what it is."""
    return model.config


def vae_scale_factor(vae_config: Any) -> int:
    """Image pixels per latent pixel, as diffusers pipelines compute it."""
    return 2 ** (len(vae_config.block_out_channels) - 1)


@dataclass(frozen=True)
class ProtocolDefaults:
    """What a model is run with unless a call says otherwise."""

    steps: int
    guidance: float
    height: int
    width: int
    max_sequence_length: int | None = None  # Flux T5 tokens


@dataclass
class CallState:
    """Where the denoiser is in the current generation: updated by a pre-forward hook."""

    step: int = -1
    timestep: float | None = None
    t: float = 1.0
    call_branch: str | None = None  # the branch of the whole call, where a family runs CFG as separate calls


class Adapter:
    """A diffusers pipeline plus named hook points. Subclasses implement the `_` methods."""

    family = "base"

    def __init__(
        self,
        model_id: str,
        pipe: Any,
        defaults: ProtocolDefaults,
        denoiser: torch.nn.Module | None = None,
        vae_factor: int | None = None,
    ):
        """pipe may be None for a config-only (meta-device) adapter: then give the denoiser
        and vae_factor; such an adapter lists hook points but cannot generate."""
        self.model_id = model_id
        self.pipe = pipe
        self.defaults = defaults
        self.denoiser = denoiser if denoiser is not None else self._denoiser_of(pipe)
        self.vae_factor = vae_factor if vae_factor is not None else vae_scale_factor(pipe.vae.config)
        self.hook_points: dict[str, HookPoint] = self._discover_hook_points()

    # ---- family-specific pieces -------------------------------------------------------
    def _denoiser_of(self, pipe: Any) -> torch.nn.Module:
        raise NotImplementedError

    def _discover_hook_points(self) -> dict[str, HookPoint]:
        raise NotImplementedError

    def _block_io(self, hook: HookPoint, args: tuple, kwargs: dict, output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, output) tensors of the hooked block in its native layout."""
        raise NotImplementedError

    def _with_output(self, hook: HookPoint, output: Any, new: torch.Tensor) -> Any:
        """The block's return value with its hooked tensor replaced by `new`."""
        raise NotImplementedError

    def _to_grid(self, hook: HookPoint, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Native layout -> (batch, h, w, d)."""
        raise NotImplementedError

    def _from_grid(self, hook: HookPoint, x: torch.Tensor) -> torch.Tensor:
        """(batch, h, w, d) -> native layout."""
        raise NotImplementedError

    def _read_timestep(self, args: tuple, kwargs: dict) -> tuple[float, float]:
        """(scheduler timestep, normalised t) from a denoiser call."""
        raise NotImplementedError

    def _step_times(self, scheduler: Any, steps: int, height: int, width: int) -> list[float]:
        """The normalised t `_read_timestep` will read at each of `steps` steps at height x width px, from a
        fresh scheduler set up as the family's pipeline sets it (adapters.schedules; no pipeline needed)."""
        raise NotImplementedError

    def _row_branches(self, rows: int, state: CallState) -> list[str]:
        """The CFG branch of each row of the current denoiser batch."""
        raise NotImplementedError

    def _call_branch(self, repeated: bool) -> str | None:
        """The branch a whole denoiser call holds (repeated: a second call at the same timestep), for
        families that run CFG branches as separate calls; None where rows carry their branch."""
        return None

    def _pipeline_kwargs(self, steps: int, guidance: float, height: int, width: int, negative_prompt: Any) -> dict:
        """The pipeline's arguments besides prompts, generators and steps: the image size, and the call's guidance
        (and negative prompt) as the family's declaration says its pipeline takes them."""
        return {**self.family_spec.guidance_kwargs(guidance, negative_prompt), "height": height, "width": width}

    @property
    def family_spec(self) -> Family:
        """The registered `Family` this adapter's class belongs to (by its `family` name)."""
        from .families import FAMILIES

        if self.family not in FAMILIES:
            raise AdapterInputError(
                f"{type(self).__name__} says family = {self.family!r}, which is not a registered family; "
                "register its Family (adapters.families.register) first"
            )
        return FAMILIES[self.family]

    def branches(self, guidance: float | None = None) -> tuple[str, ...]:
        """The CFG branches a generation at `guidance` (default: the protocol's) captures, without a
        negative prompt: what a harvest stores per step. The family's declaration says which (`Guidance`)."""
        guidance = self.defaults.guidance if guidance is None else guidance
        return self.family_spec.branches(guidance, model_config(self.denoiser))

    # ---- shared ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def hook_point(self, name: str) -> HookPoint:
        if name not in self.hook_points:
            raise UnknownNameError(unknown_hook_message(name, list(self.hook_points), self.model_id))
        return self.hook_points[name]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.model_id!r}, {len(self.hook_points)} hook points, defaults={self.defaults})"
        )

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str] | str,
        seeds: Sequence[int] | int = 0,
        *,
        hooks: Iterable[str] = (),
        capture: str = "update",
        interventions: Iterable[Intervention] = (),
        steps: int | None = None,
        guidance: float | None = None,
        height: int | None = None,
        width: int | None = None,
        negative_prompt: Sequence[str] | str | None = None,
        capture_steps: Iterable[int] | None = None,
        capture_dtype: torch.dtype = torch.float32,
        prefix_cache: PrefixCache | None = None,
    ) -> Generation:
        """Generate one image per prompt, capturing `hooks` and applying `interventions`.

        seeds: one per prompt, or one int for all (prompt i then uses seed + i).
        capture: "update" (block output - input, the default) or "output" (the stream).
        capture_steps: only keep maps of these step indices (None = every step).
        prefix_cache: serves (and records) the denoiser's predictions on steps no intervention or capture
            touches, from earlier generations of the same prompts and seeds (see prefix_cache.py).
        Returns images and, per hook, per denoiser call, per branch, a (batch, h, w, d) map.
        """
        if self.pipe is None:
            raise AdapterInputError(
                f"{self.model_id!r} was loaded on the meta device (config only, no weights): it lists hook "
                "points but cannot generate; load it with device='cpu' or 'cuda'"
            )
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise AdapterInputError("generate needs at least one prompt")
        seeds = [int(seeds) + i for i in range(len(prompts))] if isinstance(seeds, int) else [int(s) for s in seeds]
        if len(seeds) != len(prompts):
            raise AdapterInputError(
                f"got {len(seeds)} seeds for {len(prompts)} prompts; give one seed per prompt or one int"
            )
        if capture not in ("update", "output"):
            raise AdapterInputError(f"capture must be 'update' or 'output', got {capture!r}")
        steps = self.defaults.steps if steps is None else int(steps)
        guidance = self.defaults.guidance if guidance is None else float(guidance)
        height = self.defaults.height if height is None else int(height)
        width = self.defaults.width if width is None else int(width)
        if steps < 1:
            raise AdapterInputError(f"steps must be >= 1, got {steps}")
        if steps > 1000:
            raise AdapterInputError(f"steps must be at most 1000 (the scheduler's training timesteps), got {steps}")
        if not math.isfinite(guidance) or guidance < 0:
            raise AdapterInputError(f"guidance must be a finite number >= 0 (0 turns guidance off), got {guidance}")
        if height < 1 or width < 1:
            raise AdapterInputError(f"image size must be positive, got {height}x{width} px")
        bad_seeds = [s for s in seeds if not 0 <= s < 2**63]
        if bad_seeds:
            raise AdapterInputError(f"seeds must be integers from 0 to 2**63 - 1, got {bad_seeds[:3]}")
        hook_names = list(dict.fromkeys(hooks))
        interventions = list(interventions)
        for name in hook_names + [iv.hook for iv in interventions]:
            self.hook_point(name)
        for iv in interventions:
            iv.validate(self.hook_point(iv.hook).grid(height, width), steps, len(prompts))

        generation = Generation(images=[], prompts=prompts, seeds=seeds)
        keep_steps = None if capture_steps is None else frozenset(capture_steps)
        prefix = None
        if prefix_cache is not None:
            negatives = (
                [negative_prompt] * len(prompts)
                if negative_prompt is None or isinstance(negative_prompt, str)
                else list(negative_prompt)
            )
            settings = TrajectorySettings(
                tuple(prompts), tuple(negatives), tuple(seeds), steps, guidance, height, width
            )
            prefix = (prefix_cache, settings)
        session = _HookSession(
            self, generation, hook_names, capture, interventions, (height, width), keep_steps, capture_dtype, prefix
        )
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        kwargs = self._pipeline_kwargs(steps, guidance, height, width, negative_prompt)
        with session:
            out = self.pipe(
                prompt=prompts, generator=generators, num_inference_steps=steps, output_type="pil", **kwargs
            )
        generation.images = list(out.images)
        return generation


class _HookSession:
    """Registers the forward hooks of one generation and removes them on exit, even on error."""

    def __init__(
        self,
        adapter: Adapter,
        generation: Generation,
        hook_names: list[str],
        capture: str,
        interventions: list[Intervention],
        size: tuple[int, int],
        keep_steps: frozenset[int] | None,
        capture_dtype: torch.dtype,
        prefix: tuple[PrefixCache, TrajectorySettings] | None = None,
    ):
        self.adapter = adapter
        self.prefix = prefix
        self.interventions = interventions
        self.edited = False  # an intervention has been active: later steps are no longer the unedited ones
        self.generation = generation
        self.capture_hooks = set(hook_names)
        self.capture = capture
        self.size = size
        self.keep_steps = keep_steps
        self.capture_dtype = capture_dtype
        self.by_hook: dict[str, list[Intervention]] = {}
        for iv in interventions:
            self.by_hook.setdefault(iv.hook, []).append(iv)
        self.state = CallState()
        self.handles: list[Any] = []
        # Where a family runs CFG as separate calls (Flux's true CFG: the uncond call after the cond
        # call of the same step), a "cond+uncond-" edit subtracts there the change it made on the cond rows.
        self.last_cond_change: dict[int, torch.Tensor] = {}

    def __enter__(self) -> _HookSession:
        denoiser = self.adapter.denoiser
        self.handles.append(denoiser.register_forward_pre_hook(self._on_denoiser_call, with_kwargs=True))
        if self.prefix is not None:
            # An instance attribute shadows the class's forward (nn.Module.__call__ reads self.forward); one set
            # before (an offload hook's wrapper) is put back on exit.
            self.shadowed_forward = denoiser.__dict__.get("forward")
            denoiser.forward = self._prefix_forward(denoiser.forward, *self.prefix)
        modules = dict(self.adapter.denoiser.named_modules())
        for name in sorted(self.capture_hooks | set(self.by_hook)):
            hook = self.adapter.hook_points[name]
            fn = self._make_block_hook(hook)
            self.handles.append(modules[hook.module_path].register_forward_hook(fn, with_kwargs=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        if self.prefix is not None:
            denoiser = self.adapter.denoiser
            if self.shadowed_forward is None:
                del denoiser.forward
            else:
                denoiser.forward = self.shadowed_forward

    def _prefix_forward(self, forward: Any, cache: PrefixCache, settings: TrajectorySettings) -> Any:
        """`forward` that serves an untouched step from `cache` when it holds every row, and records it otherwise."""

        def cached_forward(*args: Any, **kwargs: Any) -> Any:
            sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
            untouched = self._untouched_step()  # first: it also notes an edit that starts at this step
            keys = None
            if untouched and kwargs.get("return_dict") is False and isinstance(sample, torch.Tensor):
                keys = settings.row_keys(self.adapter._row_branches(sample.shape[0], self.state), self.state.step)
                prediction = None if keys is None else cache.lookup(keys, sample.device)
                if prediction is not None:
                    return (prediction,)
            output = forward(*args, **kwargs)
            if keys is not None:
                cache.store(keys, output[0])
            return output

        return cached_forward

    def _untouched_step(self) -> bool:
        """No intervention is active at the current step or was at an earlier one (the latents are still the
        unedited generation's), and no hook is captured at it: the denoiser's prediction is the unedited one."""
        state = self.state
        if any(iv.active(state.step, state.t) for iv in self.interventions):
            self.edited = True
        if self.edited:
            return False
        return not (self.capture_hooks and (self.keep_steps is None or state.step in self.keep_steps))

    def _on_denoiser_call(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        timestep, t = self.adapter._read_timestep(args, kwargs)
        repeated = timestep == self.state.timestep
        if not repeated:
            self.state.step += 1
        self.state.call_branch = self.adapter._call_branch(repeated)
        self.state.timestep, self.state.t = timestep, t

    def _make_block_hook(self, hook: HookPoint):
        grid = hook.grid(*self.size)

        def on_block(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            state = self.state
            inp, out = self.adapter._block_io(hook, args, kwargs, output)
            active = [iv for iv in self.by_hook.get(hook.name, ()) if iv.active(state.step, state.t)]
            branches = self.adapter._row_branches(out.shape[0], state)
            new_out = None
            if active:
                update = self.adapter._to_grid(hook, out - inp, grid)
                update = update + self._total_change(active, update, branches)
                new_out = inp + self.adapter._from_grid(hook, update).to(out.dtype)
            if hook.name in self.capture_hooks and (self.keep_steps is None or state.step in self.keep_steps):
                final = out if new_out is None else new_out
                value = final if self.capture == "output" else final - inp
                self._record(hook, self.adapter._to_grid(hook, value, grid), branches)
            return None if new_out is None else self.adapter._with_output(hook, output, new_out)

        return on_block

    def _total_change(self, active: list[Intervention], update: torch.Tensor, branches: list[str]) -> torch.Tensor:
        """Sum of the active interventions' changes, each placed on the rows its branch rule allows."""
        total = torch.zeros_like(update)
        cond_rows = [i for i, b in enumerate(branches) if b == "cond"]
        uncond_rows = [i for i, b in enumerate(branches) if b == "uncond"]
        for iv in active:
            current = update + total  # interventions compose in the order given
            if iv.branch in ("cond", "both", "cond+uncond-") and cond_rows:
                change = iv.change(current[cond_rows])
                total[cond_rows] += change
                if iv.branch == "cond+uncond-":
                    self.last_cond_change[id(iv)] = change
            if iv.branch in ("uncond", "both") and uncond_rows:
                total[uncond_rows] += iv.change(current[uncond_rows])
            if iv.branch == "cond+uncond-" and uncond_rows:
                change = self.last_cond_change.get(id(iv))
                if change is not None and change.shape[0] == len(uncond_rows):
                    total[uncond_rows] -= change
        return total

    def _record(self, hook: HookPoint, value: torch.Tensor, branches: list[str]) -> None:
        value = value.detach().to("cpu", self.capture_dtype)
        timestep = self.state.timestep
        assert timestep is not None, "a block ran before the denoiser call that sets the timestep"
        for branch in ("uncond", "cond"):
            rows = [i for i, b in enumerate(branches) if b == branch]
            if rows:
                maps = value if len(rows) == len(branches) else value[rows]
                self.generation.captures.append(
                    CapturedMap(
                        hook=hook.name,
                        step=self.state.step,
                        timestep=float(timestep),
                        t=float(self.state.t),
                        branch=branch,
                        value=maps.contiguous(),
                    )
                )
