"""SDXL and Flux at their real width on a CPU, random weights, through the project's adapters.

Builds the published architectures in-process with seeded random weights (nothing downloaded),
wraps the pipeline in the family's adapter as `adapters.load` does, and runs one denoising step
twice: capturing the hook points, then with an `AddDirection` edit on the first of them. Checks:
every captured map is (1, h, w, d) as the real model's hook table (`diffdict hooks`) says; the edit
moved that hook's update by exactly strength * direction and changed the later hooks. Reports wall
and CPU seconds and peak RSS (VmHWM, reset per phase) of the build and of each generation, and
each generation's seconds in the text encoders, the denoiser and the VAE decoder.

- sdxl: SDXL's U-Net, CLIP ViT-L and OpenCLIP bigG text models, VAE, EulerAncestral "trailing"
  (SDXL Turbo); 512 px; hooks down.2.1 mid.0 up.0.0 up.0.1.
- flux: FLUX.1 schnell's transformer at full width with --double + --single blocks (default 2 + 4
  in fp32; all 19 + 38 with --nf4), T5 of T5-XXL's width with --t5-layers layers, CLIP-L, the
  16-channel VAE, flow-matching Euler; 256 px; hooks double.0 single.1.

    .venv/bin/python benchmarks/real_scale.py --model sdxl --json sdxl.json
    .venv/bin/python benchmarks/real_scale.py --model flux --json flux.json
    .venv/bin/python benchmarks/real_scale.py --model flux --nf4 --double 19 --single 38

--reduced: every width as published, few layers, a small image (tests/test_real_scale.py).
Run one model per process, so that each peak memory is that model's own.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from diffdict import adapters
from diffdict.adapters.base import model_config
from diffdict.adapters.families import FAMILIES
from diffdict.adapters.flux import FLUX_TRANSFORMER
from diffdict.adapters.quantize import quantize_linear_nf4, weight_bytes
from diffdict.adapters.registry import REAL_MODELS
from diffdict.adapters.sdxl import SDXL_UNET
from diffdict.adapters.tiny import TINY_VOCAB
from diffdict.adapters.tokenizers import special_token_ids, word_tokenizer

SDXL_ID, FLUX_ID = "stabilityai/sdxl-turbo", "black-forest-labs/FLUX.1-schnell"
SDXL_HOOKS, FLUX_HOOKS = ("down.2.1", "mid.0", "up.0.0", "up.0.1"), ("double.0", "single.1")
PROMPT = "a red circle on the left of a blue square"
CLIP_L: dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    projection_dim=768,
    hidden_act="quick_gelu",
)
CLIP_BIGG: dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    projection_dim=1280,
    hidden_act="gelu",
)
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_heads=64, feed_forward_proj="gated-gelu")
VAE: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=1024,
)
GIB = 2**30


# ---- measuring --------------------------------------------------------------------------
def _peak_rss_reset() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) so the next phase reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # then the peak is the process's since its start (ru_maxrss)


def _peak_rss_gib() -> float:
    try:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024 / GIB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


@contextmanager
def phase(phases: dict, name: str):
    """Record wall and CPU seconds and peak RSS (GiB) of the block under phases[name]."""
    gc.collect()
    _peak_rss_reset()
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    phases[name] = dict(
        wall_s=round(time.perf_counter() - wall, 2),
        cpu_s=round(time.process_time() - cpu, 2),
        peak_rss_gib=round(_peak_rss_gib(), 2),
    )


@contextmanager
def component_clock(modules: dict[str, torch.nn.Module], seconds: dict[str, float]):
    """Accumulate wall seconds spent in each module's forward into seconds[name]."""
    handles, started = [], {}
    for name, module in modules.items():
        seconds.setdefault(name, 0.0)
        handles.append(module.register_forward_pre_hook(lambda *_, n=name: started.__setitem__(n, time.perf_counter())))
        handles.append(
            module.register_forward_hook(
                lambda *_, n=name: seconds.__setitem__(n, seconds[n] + time.perf_counter() - started[n])
            )
        )
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- building ---------------------------------------------------------------------------
def clip_text(tokenizer, config: dict, projection: bool, layers: int | None, vocab: int | None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    settings = dict(
        config, **({"num_hidden_layers": layers} if layers else {}), **({"vocab_size": vocab} if vocab else {})
    )
    text_config = CLIPTextConfig(
        max_position_embeddings=tokenizer.model_max_length, **settings, **special_token_ids(tokenizer)
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(text_config).eval()


def vae(latent_channels: int, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(latent_channels=latent_channels, **VAE, **extra).eval()


def build_sdxl(reduced: bool, counts: dict):
    """A StableDiffusionXLPipeline with SDXL's U-Net, text encoders and VAE; reduced: 1 transformer
    layer per level and 1 layer per text encoder (every width as published)."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer = word_tokenizer(TINY_VOCAB, max_length=77)
    layers, vocab = (1, len(tokenizer)) if reduced else (None, None)
    unet_config = dict(SDXL_UNET, **({"transformer_layers_per_block": (1, 1, 1)} if reduced else {}))
    parts = dict(
        unet=UNet2DConditionModel(**unet_config).eval(),
        text_encoder=clip_text(tokenizer, CLIP_L, False, layers, vocab),
        text_encoder_2=clip_text(tokenizer, CLIP_BIGG, True, layers, vocab),
        vae=vae(4, scaling_factor=0.13025),
    )
    counts.update({name: params(m) for name, m in parts.items()})
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing", steps_offset=1
    )
    return StableDiffusionXLPipeline(tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=scheduler, **parts)


def flux_transformer(n_double: int, n_single: int, nf4: bool, counts: dict):
    """FLUX.1's transformer (schnell: no guidance embedding) with n_double + n_single blocks.

    Blocks are built one at a time and, with nf4, quantised at once, so that memory never holds
    more than one block in fp32 (all 57 blocks in fp32 would need 48 GB)."""
    from diffusers import FluxTransformer2DModel
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

    model = FluxTransformer2DModel(**dict(FLUX_TRANSFORMER, num_layers=0, num_single_layers=0, guidance_embeds=False))
    total = params(model)
    width: dict[str, Any] = dict(
        dim=model.inner_dim,
        num_attention_heads=model_config(model).num_attention_heads,
        attention_head_dim=model_config(model).attention_head_dim,
    )
    for blocks, kind, n in (
        (model.transformer_blocks, FluxTransformerBlock, n_double),
        (model.single_transformer_blocks, FluxSingleTransformerBlock, n_single),
    ):
        for _ in range(n):
            block = kind(**width).eval()
            total += params(block)
            if nf4:
                quantize_linear_nf4(block)
            blocks.append(block)
    if nf4:
        quantize_linear_nf4(model)  # the embedders and the output projection, as load(quantize="nf4")
    model.register_to_config(num_layers=n_double, num_single_layers=n_single)
    counts["transformer"] = total
    return model.eval()


def build_flux(reduced: bool, n_double: int, n_single: int, t5_layers: int, nf4: bool, counts: dict):
    """A FluxPipeline: the transformer above, a T5 encoder of T5-XXL's width (t5_layers layers),
    CLIP-L and the 16-channel VAE. reduced: 1 CLIP layer and text vocabularies cut to the tokenizer's."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import T5Config, T5EncoderModel

    clip_tokenizer = word_tokenizer(TINY_VOCAB, max_length=77)
    t5_tokenizer = word_tokenizer(TINY_VOCAB, max_length=REAL_MODELS[FLUX_ID].defaults.max_sequence_length)
    t5_ids = special_token_ids(t5_tokenizer)
    vocab = len(t5_tokenizer) if reduced else None
    t5 = T5EncoderModel(
        T5Config(
            **dict(T5_XXL, **({"vocab_size": vocab} if vocab else {})),
            num_layers=t5_layers,
            pad_token_id=t5_ids["pad_token_id"],
            eos_token_id=t5_ids["eos_token_id"],
            decoder_start_token_id=0,
        )
    ).eval()
    counts["text_encoder_2"] = params(t5)
    if nf4:
        quantize_linear_nf4(t5)
    parts = dict(
        text_encoder=clip_text(clip_tokenizer, CLIP_L, False, 1 if reduced else None, vocab),
        vae=vae(16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False),
    )
    counts.update({name: params(m) for name, m in parts.items()})
    transformer = flux_transformer(n_double, n_single, nf4, counts)
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
        tokenizer=clip_tokenizer,
        tokenizer_2=t5_tokenizer,
        text_encoder_2=t5,
        transformer=transformer,
        **parts,
    )


def wrap(family: str, model_id: str, pipe) -> adapters.Adapter:
    """The family's adapter around an in-memory pipeline, as `adapters.load` makes it, with the
    real model's protocol defaults."""
    pipe.set_progress_bar_config(disable=True)
    return FAMILIES[family].adapter(model_id, pipe, REAL_MODELS[model_id].defaults)


# ---- checking ---------------------------------------------------------------------------
def check_maps(adapter, gen, hooks, size: int) -> dict[str, list[int]]:
    """Each hook's captured map -> its shape (1, h, w, d); asserts it is the hook table's (the
    adapter's own and the real model's meta-device table, which `diffdict hooks` prints)."""
    table = adapters.load(adapter.model_id, device="meta")
    shapes = {}
    for hook in hooks:
        mine, real = adapter.hook_point(hook), table.hook_point(hook)
        assert mine == real, f"{hook}: built {mine} but the real model's table says {real}"
        (captured,) = gen.maps(hook=hook)
        expected = (1, *real.grid(size, size), real.d)
        assert tuple(captured.value.shape) == expected, (
            f"{hook}: captured {tuple(captured.value.shape)}, table {expected}"
        )
        assert torch.isfinite(captured.value).all(), f"{hook}: non-finite values"
        shapes[hook] = list(captured.value.shape)
    return shapes


def check_edit(plain, edited, hooks, direction: torch.Tensor, strength: float) -> dict:
    """The edit moved hooks[0]'s update by strength * direction at every cell and changed the rest."""
    first = edited.maps(hook=hooks[0])[0].value - plain.maps(hook=hooks[0])[0].value
    error = float((first - strength * direction).norm() / (strength * direction).expand_as(first).norm())
    assert error < 1e-3, f"{hooks[0]}: the edit's change differs from strength * direction by {error:.2e} (relative)"
    moved = {}
    for hook in hooks[1:]:
        a, b = plain.maps(hook=hook)[0].value, edited.maps(hook=hook)[0].value
        moved[hook] = round(float((b - a).norm() / a.norm()), 4)
        assert moved[hook] > 0, f"{hook}: the edit on {hooks[0]} did not change it"
    pixels = [torch.from_numpy(np.asarray(img, dtype=np.float32)) for img in (plain.images[0], edited.images[0])]
    return dict(
        edit_error=error,
        downstream_relative_change=moved,
        image_mean_abs_change=round(float((pixels[1] - pixels[0]).abs().mean()), 2),
    )


# ---- running ----------------------------------------------------------------------------
def generate(adapter, hooks, size: int, seconds: dict, interventions=()):
    """One image, one step, no guidance, capturing `hooks`, timing the pipeline's components."""
    pipe = adapter.pipe
    parts = {n: getattr(pipe, n) for n in ("text_encoder", "text_encoder_2") if getattr(pipe, n, None) is not None}
    parts.update(denoiser=adapter.denoiser, vae_decoder=pipe.vae.decoder)
    start = time.perf_counter()
    with component_clock(parts, seconds):
        gen = adapter.generate(
            [PROMPT], seeds=0, hooks=hooks, interventions=interventions, steps=1, guidance=0.0, height=size, width=size
        )
    seconds["total"] = time.perf_counter() - start
    seconds.update({k: round(v, 2) for k, v in seconds.items()})
    return gen


# Each model's image side and, for Flux, blocks and T5 layers: the benchmark and the test's reduced run.
FULL = {"sdxl": dict(size=512), "flux": dict(size=256, double=2, single=4, t5_layers=2)}
REDUCED = {"sdxl": dict(size=128), "flux": dict(size=64, double=1, single=2, t5_layers=1)}


def unit_edit(plain, hook: str, d: int, strength: float, seed: int) -> adapters.AddDirection:
    """AddDirection of a random unit (d,) direction, `strength` times hook's mean per-cell update norm."""
    direction = torch.nn.functional.normalize(torch.randn(d, generator=torch.Generator().manual_seed(seed)), dim=0)
    scale = strength * float(plain.maps(hook=hook)[0].value.norm(dim=-1).mean())
    return adapters.AddDirection(hook, direction=direction, strength=round(scale, 3))


def run(model: str, reduced: bool = False, nf4: bool = False, strength: float = 4.0, seed: int = 0, **given) -> dict:
    """Build, generate with capture, generate with one edit; returns every number and check.

    given: size, and for Flux double, single, t5_layers (None or absent: FULL / REDUCED)."""
    family, model_id, hooks = ("sdxl", SDXL_ID, SDXL_HOOKS) if model == "sdxl" else ("flux", FLUX_ID, FLUX_HOOKS)
    opts = dict((REDUCED if reduced else FULL)[family], **{k: v for k, v in given.items() if v is not None})
    size, phases, counts, seconds = opts["size"], {}, {}, {"capture": {}, "edit": {}}
    torch.manual_seed(seed)
    with phase(phases, "build"):
        pipe = (
            build_sdxl(reduced, counts)
            if family == "sdxl"
            else build_flux(reduced, opts["double"], opts["single"], opts["t5_layers"], nf4, counts)
        )
        adapter = wrap(family, model_id, pipe)
    with phase(phases, "generate_capture"):
        plain = generate(adapter, hooks, size, seconds["capture"])
    shapes = check_maps(adapter, plain, hooks, size)
    edit = unit_edit(plain, hooks[0], adapter.hook_point(hooks[0]).d, strength, seed)
    with phase(phases, "generate_edit"):
        edited = generate(adapter, hooks, size, seconds["edit"], interventions=[edit])
    check_maps(adapter, edited, hooks, size)
    result: dict[str, Any] = dict(
        model=model,
        model_id=model_id,
        reduced=reduced,
        steps=1,
        dtype="float32",
        nf4=nf4,
        threads=torch.get_num_threads(),
        **opts,
        params=counts,
        params_total=sum(counts.values()),
        phases=phases,
        component_seconds=seconds,
        hooks=list(hooks),
        shapes=shapes,
        edit=dict(
            hook=edit.hook, strength=edit.strength, **check_edit(plain, edited, hooks, edit.direction, edit.strength)
        ),
    )
    if family == "flux":
        result["transformer_weight_gib"] = round(weight_bytes(adapter.denoiser) / GIB, 2)
    del adapter, pipe, plain, edited
    gc.collect()
    result["process_peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 2)
    return result


def summary(r: dict) -> str:
    lines = [
        f"{r['model_id']} architecture, random weights, {r['size']}x{r['size']} px, 1 step, "
        f"{r['dtype']}{' + NF4' if r['nf4'] else ''}, {r['threads']} threads" + (" [reduced]" if r["reduced"] else "")
    ]
    if r["model"] == "flux":
        lines.append(
            f"  transformer blocks: {r['double']} double + {r['single']} single; "
            f"T5 layers: {r['t5_layers']}; transformer weights {r['transformer_weight_gib']} GiB"
        )
    lines.append(
        "  parameters: "
        + ", ".join(f"{k} {v / 1e6:,.1f} M" for k, v in r["params"].items())
        + f"; total {r['params_total'] / 1e9:.3f} B"
    )
    for name, p in r["phases"].items():
        lines.append(
            f"  {name:17s} wall {p['wall_s']:8.2f} s  CPU {p['cpu_s']:8.2f} s  peak RSS {p['peak_rss_gib']:6.2f} GiB"
        )
    lines.append(f"  process peak RSS (ru_maxrss) {r['process_peak_rss_gib']:.2f} GiB")
    for name, s in r["component_seconds"].items():
        lines.append(f"  {name} seconds: " + ", ".join(f"{k} {v}" for k, v in s.items()))
    lines.append("  captured: " + ", ".join(f"{h} {tuple(s)}" for h, s in r["shapes"].items()) + " = hook table")
    e = r["edit"]
    lines.append(
        f"  edit AddDirection on {e['hook']} (strength {e['strength']}): change error {e['edit_error']:.1e}, "
        f"downstream relative change {e['downstream_relative_change']}, image mean |diff| {e['image_mean_abs_change']}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("sdxl", "flux"), required=True)
    parser.add_argument("--size", type=int, default=None, help="image side in px (default 512 SDXL, 256 Flux)")
    parser.add_argument("--reduced", action="store_true", help="real widths, few layers, small image (the test)")
    parser.add_argument("--nf4", action="store_true", help="Flux: transformer and T5 in NF4 (adapters.quantize)")
    parser.add_argument("--double", type=int, default=None, help="Flux double blocks (default 2; real: 19)")
    parser.add_argument("--single", type=int, default=None, help="Flux single blocks (default 4; real: 38)")
    parser.add_argument("--t5-layers", type=int, default=None, help="T5 layers at d_model 4096 (default 2; T5-XXL: 24)")
    parser.add_argument("--strength", type=float, default=4.0, help="edit strength / mean update norm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the numbers to this JSON file")
    args = parser.parse_args()
    blocks = (args.double or 0) + (args.single or 0)
    if args.model == "flux" and not args.nf4 and blocks > 8:
        parser.error("Flux with more than 8 blocks needs --nf4 here (all 57 in fp32: 48 GB)")
    torch.set_num_threads(args.threads)
    result = run(
        args.model,
        reduced=args.reduced,
        nf4=args.nf4,
        strength=args.strength,
        size=args.size,
        double=args.double,
        single=args.single,
        t5_layers=args.t5_layers,
    )
    print(summary(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
