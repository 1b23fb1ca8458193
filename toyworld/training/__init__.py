"""The training lab of the toy models (`diffdict toy train`, `diffdict toy import-weights`).

  config.py         stage names, TrainConfig, presets (torch-free: the command line reads it)
  run.py            train(cfg): the stage table in order, finished stages skipped
  stages.py         the stages (VAEs, text encoders, base, turbo, flux, flux_distill) and STAGE_TABLE
  loop.py           the optimisation loop every stage runs (AdamW, EMA, caps, checkpoints)
  context.py        what the stages share: config, rendered training data, encoded latents
  data.py           the training stream of scenes as tensors
  models.py         the toy architectures (diffusers/transformers classes) and their text encoding
  teachers.py       teacher samples for the distillation stages
  text_pretrain.py  the text encoders' pre-training readout
  export.py         checkpoints -> the shipped diffusers folders
  warm_start.py     shipped folders -> a work dir to continue training from
  checkpoints.py    safetensors checkpoints, atomic, resumable
  user_errors.py    error types for a caller's mistake

Kept import-free: the world (toyworld.scenes, render, judge, eval) never imports this package.
"""
