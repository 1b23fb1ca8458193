"""Turn shipped pipeline folders back into a `diffdict toy train` work dir.

Training checkpoints live outside the repo and do not outlive a machine; the shipped fp16
folders do. `import_weights` writes each stage's final checkpoint from them, as if the stage
had just finished, so a later run skips what it needs as input and continues what it is told
to train (`continue_stages` become `<stage>.init.safetensors`, a warm start).

Stage files and what they hold (see toyworld.training.stages):
  vae_sdxl / vae_flux  {"vae"} (+ vae_<family>_stats.json: scaling and shift factors)
  base                 {"unet", "text_encoder", "text_encoder_2"} of sdxl-base
  turbo                {"unet"} of sdxl-turbo
  flux                 {"transformer", "text_encoder", "text_encoder_2"} of flux
  flux_distill         {"transformer"} of flux
  text                 {"sdxl_text_encoder", "sdxl_text_encoder_2"} of sdxl-base and
                       {"flux_text_encoder", "flux_text_encoder_2"} of flux

The shipped flux transformer is the distilled student (the guided teacher is not shipped),
so `flux` is written with the student's transformer: continuing `flux` warm-starts the
teacher from the student. The text stage's file lets a continued denoiser whose family is in
text_pretrain (flux by default) find its frozen encoders: the shipped ones.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel

from diffdict.dictionaries.atomic import write_json_atomic
from diffdict.toyworld.training.checkpoints import save_final
from diffdict.toyworld.training.user_errors import ToyInputError, ToyMissingFileError

STAGE_PARTS = {
    "vae_sdxl": ("sdxl-base", {"vae": "vae"}),
    "vae_flux": ("flux", {"vae": "vae"}),
    "base": ("sdxl-base", {"unet": "unet", "text_encoder": "text_encoder", "text_encoder_2": "text_encoder_2"}),
    "turbo": ("sdxl-turbo", {"unet": "unet"}),
    "flux": (
        "flux",
        {"transformer": "transformer", "text_encoder": "text_encoder", "text_encoder_2": "text_encoder_2"},
    ),
    "flux_distill": ("flux", {"transformer": "transformer"}),
}
TEXT_FOLDERS = {"sdxl": "sdxl-base", "flux": "flux"}  # family -> the folder whose encoders the text stage gets


def import_weights(weights_dir: Path, work_dir: Path, continue_stages: tuple[str, ...] = ()) -> list[Path]:
    """Write every stage's checkpoint from the pipeline folders under `weights_dir`.

    Stages in `continue_stages` are written as `<stage>.init.safetensors` (the next run of
    that stage warm-starts from them and trains); the others as `<stage>.safetensors`
    (finished: the next run skips them). Refuses to overwrite a checkpoint or a running
    stage's partial file. Returns the files written.
    """
    from diffusers import DiffusionPipeline

    unknown = set(continue_stages) - set(STAGE_PARTS) - {"text"}
    if unknown:
        raise ToyInputError(f"cannot continue {sorted(unknown)}: choose from {', '.join((*STAGE_PARTS, 'text'))}")
    work_dir.mkdir(parents=True, exist_ok=True)
    targets = {
        stage: work_dir / (f"{stage}.init.safetensors" if stage in continue_stages else f"{stage}.safetensors")
        for stage in (*STAGE_PARTS, "text")
    }
    clashes = [
        p
        for stage, p in targets.items()
        if p.exists()
        or (work_dir / f"{stage}.safetensors").exists()
        or (work_dir / f"{stage}.partial.safetensors").exists()
    ]
    if clashes:
        raise ToyInputError(
            f"{work_dir} already holds checkpoints for these stages ({', '.join(p.name for p in clashes)}): "
            "import into an empty work dir"
        )
    pipes = {}
    for folder in sorted({folder for folder, _ in STAGE_PARTS.values()}):
        if not (weights_dir / folder / "model_index.json").exists():
            raise ToyMissingFileError(
                f"no pipeline folder {weights_dir / folder} (expected sdxl-base, sdxl-turbo, flux)"
            )
        pipes[folder] = DiffusionPipeline.from_pretrained(str(weights_dir / folder), dtype=torch.float32)
    for pipe in pipes.values():  # shipped encoders learnt an older vocabulary: give them today's
        for encoder, tokenizer in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
            resize_to_vocabulary(getattr(pipe, encoder), getattr(pipe, tokenizer))
    written = []
    for stage, (folder, parts) in STAGE_PARTS.items():
        modules = {name: getattr(pipes[folder], attribute) for name, attribute in parts.items()}
        save_final(targets[stage], modules, {"imported_from": str(weights_dir / folder)})
        written.append(targets[stage])
    encoders = {
        f"{family}_{name}": getattr(pipes[folder], name)
        for family, folder in TEXT_FOLDERS.items()
        for name in ("text_encoder", "text_encoder_2")
    }
    save_final(targets["text"], encoders, {"imported_from": str(weights_dir)})
    written.append(targets["text"])
    for family, folder in (("sdxl", "sdxl-base"), ("flux", "flux")):
        config = pipes[folder].vae.config
        stats = {"scaling_factor": float(config.scaling_factor), "shift_factor": float(config.shift_factor or 0.0)}
        path = work_dir / f"vae_{family}_stats.json"
        write_json_atomic(path, stats)
        written.append(path)
    return written


def resize_to_vocabulary(encoder: PreTrainedModel, old_tokenizer, seed: int = 0) -> bool:
    """Give a text encoder trained with `old_tokenizer` the toy world's current vocabulary, in place.

    Rows of words it knew are kept (by word: a word's id moves when words are added before it); a new
    word starts at the mean row plus noise of the rows' own spread, so that a warm start learns it
    from there. Returns whether anything changed."""
    from diffdict.toyworld.training.models import tokenizer

    old_vocab, new_vocab = old_tokenizer.get_vocab(), tokenizer().get_vocab()
    if old_vocab == new_vocab:
        return False
    embeddings = encoder.get_input_embeddings()
    assert isinstance(embeddings, torch.nn.Embedding), "a toy text encoder embeds tokens with nn.Embedding"
    old = embeddings.weight.detach().clone()
    generator = torch.Generator().manual_seed(seed)
    rows = old.mean(0) + old.std(0) * torch.randn(len(new_vocab), old.shape[1], generator=generator)
    for word, index in new_vocab.items():
        if word in old_vocab:
            rows[index] = old[old_vocab[word]]
    encoder.resize_token_embeddings(len(new_vocab))
    resized = encoder.get_input_embeddings()
    assert isinstance(resized, torch.nn.Embedding)
    with torch.no_grad():
        resized.weight.copy_(rows)
    encoder.config.vocab_size = len(new_vocab)
    return True
