"""`diffdict check`: resolve a config fully without downloading or generating anything.

Models are built on the meta device from their configs, hooks are looked up, each
dictionary's architecture config is built with the hook's d (which validates every option).
"""

from __future__ import annotations

from .config import StudyConfig
from .errors import UserError
from .registry import study_kind
from .run import SIZE_KEYS
from .validate import available_memory, human_bytes, memory_estimate


def check_config(config: StudyConfig, device: str | None = None) -> list[str]:
    """Lines describing the resolved config and its cost; raises UserError on the first problem found,
    and when the run's writes would not fit on the disk.

    device: where dictionaries will train (memory estimates are checked against it; default the CPU)."""
    return check_and_cost(config, device)[0]


def check_and_cost(config: StudyConfig, device: str | None = None):
    """(lines, cost.RunCost) of check_config."""
    from .cost import describe, estimate, refuse_if_no_room

    lines, resolved = _resolve(config, device)
    cost = estimate(config, resolved, device)
    lines[-2:-2] = describe(cost)  # before "studies: ..." and "ok"
    try:
        refuse_if_no_room(cost, str(config.path or "<config>"))
    except UserError as error:  # the numbers behind the refusal come with it
        raise UserError("\n".join([str(error), *describe(cost)])) from None
    return lines, cost


def _resolve(config: StudyConfig, device: str | None = None) -> tuple[list[str], dict]:
    """Lines describing the resolved config, and the meta-device adapter of each model."""
    from diffdict import adapters
    from diffdict.adapters.families import FAMILIES, nf4_titles
    from diffdict.dictionaries.base import architecture_class, config_from_dict

    source = str(config.path or "<config>")
    from .prompt_sources import describe

    lines = [f"config {source}: {config.name!r}, output in {config.out}", describe(config.prompts, config.path)]
    resolved = {}
    for entry in config.models:
        adapter = adapters.load(entry.id, device="meta", quantize=None)
        resolved[entry.name] = adapter
        if entry.quantize and not FAMILIES[adapter.family].nf4_components:
            raise UserError(
                f"{source}: models: {entry.name!r} asks quantize={entry.quantize!r}, "
                f"which is supported for {nf4_titles()} models only"
            )
        steps = entry.steps or adapter.defaults.steps
        guidance = adapter.defaults.guidance if entry.guidance is None else entry.guidance
        lines.append(
            f"model {entry.name:14s} {entry.id} ({adapter.family}): {steps} steps, guidance {guidance}, "
            f"{_size(entry, adapter)[0]}x{_size(entry, adapter)[1]} px"
            + (f", {entry.quantize}" if entry.quantize else "")
        )
    for name in sorted(config.harvested_models()):
        adapter = resolved[name]
        for hook_name in config.hooks_of(name):
            try:
                hook = adapter.hook_point(hook_name)
            except KeyError as error:
                where = "harvest.hooks" if config.model(name).hooks is None else f"models ({name!r}).hooks"
                raise UserError(f"{source}: {where}: {error.args[0]}") from None
            height, width = _size(config.model(name), adapter)  # the configured size, else the model's
            try:
                h, w = hook.grid(height, width)
            except ValueError as error:
                i = [m.name for m in config.models].index(name)
                raise UserError(f"{source}: models[{i}].height/width: {error}") from None
            lines.append(f"hook  {name:14s} {hook_name:14s} {hook.module_path:36s} d={hook.d:5d} grid {h}x{w}")
    for i, entry in enumerate(config.dictionaries):
        d = resolved[entry.model].hook_point(entry.hook).d
        cls = architecture_class(entry.architecture)
        n_key, k_key = SIZE_KEYS[entry.architecture]
        params = {"d": d, n_key: entry.n, k_key: entry.k, **entry.options}
        try:
            config_from_dict(cls.config_class, params, where=f"{source}: dictionaries[{i}] ({entry.name!r})")
        except (ValueError, TypeError) as error:  # the architecture's own range checks
            raise UserError(f"{source}: dictionaries[{i}] ({entry.name!r}): {error}") from None
        need, how = memory_estimate(entry.architecture, entry.n, d, entry.batch)
        have, what = available_memory(device or config.device)
        if need > have:
            raise UserError(
                f"{source}: dictionaries[{i}].n: n={entry.n:,} at d={d} needs about {human_bytes(need)} "
                f"to train ({how}) but {what} is {human_bytes(have)}; lower n (or batch)"
            )
        lines.append(
            f"dictionary {entry.name:14s} {entry.architecture:9s} on {entry.model} {entry.hook}: "
            f"d={d} n={entry.n} k={entry.k}, {entry.tokens:,} tokens in batches of {entry.batch}"
        )
    for study_name, study in config.studies.items():  # each study's checks that need the models
        check = study_kind(study_name).function("check")
        if check is not None:
            check(config, study, resolved, f"{source}: studies.{study_name}")
    studies = [name for name, _ in config.studies.items()]
    lines.append(f"studies: {', '.join(studies) or 'none'}")
    lines.append("ok: nothing was downloaded or generated")
    return lines, resolved


def hooks_on_some_model(config, study, resolved: dict, where: str) -> None:
    """A study's `hooks` (and `groups` members) each exist on at least one of its `models`: each model
    studies the hooks it has, so one map can cover a U-Net and a transformer."""
    named = [*study.hooks, *[h for hooks in getattr(study, "groups", {}).values() for h in hooks]]
    for hook_name in named:
        errors = []
        for model in study.models:
            try:
                resolved[model].hook_point(hook_name)
                break
            except KeyError as error:
                errors.append(error.args[0])
        else:
            raise UserError(f"{where}: {errors[0]}")


def _size(entry, adapter) -> tuple[int, int]:
    """(height, width) in px a model entry generates at: its own, else the model's default."""
    return entry.height or adapter.defaults.height, entry.width or adapter.defaults.width
