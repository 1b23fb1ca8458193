"""Bad-input catalogue, issue 31 (second hardening pass): reserved names, a Hub subfolder that escapes, `push`
without a token or network, seeds whose offsets overflow, `atlas` counts, caption columns that are not text,
and time windows that hold no step of the model.

As in test_bad_inputs.py, each case goes through the command line (or the Python API where that is the entry
point), exits with status 2 and a message naming the file or key and the fix, and leaves what was written alone.
"""
from __future__ import annotations

import hashlib
import http.server
import re
import shutil
import threading
from pathlib import Path

import polars as pl
import pytest
import torch

from diffdict import dictionaries
from diffdict.dictionaries import base
from diffdict.dictionaries.errors import InputError
from diffdict.studies.cli import main

from study_fixtures import TINY_WINDOWS, write_tiny_study


def _tree_digest(root: Path) -> dict[str, str]:
    """Path -> sha256 of every file under root (what 'nothing written is lost' compares)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(argv: list[str], message: str, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err, err
    assert re.search(message, err, re.DOTALL), err
    return err


# ---- 1. names that collide with the framework's own files ------------------------------------------------
# The four names of the issue: NAME.old is a folder swap's backup (deleted after the swap), NAME.tmp-* a
# temporary (deleted by the stale-temp sweep), checkpoints/ and settings.json sit beside the dictionaries.
RESERVED = ["turbo-sae.old", "turbo-itda.tmp-1", "checkpoints", "settings.json"]
_RESERVED_MESSAGE = (r"dictionaries\[1\]\.name: '{name}' is reserved: in RUN/fits/GROUP/ the run keeps its own files "
                     r"under these names \(checkpoints, metrics, settings\.json, metrics\.parquet, features\.parquet, "
                     r"names ending in '\.old', names containing '\.tmp-'\).*choose another name, e\.g\. '{fix}'")


def _renamed_itda(name: str) -> dict[str, str]:
    return {'name = "itda"': f'name = "{name}"', '"sae", "itda"': f'"sae", "{name}"'}


@pytest.mark.parametrize("name,fix", [("turbo-sae.old", "turbo-sae-old"), ("turbo-itda.tmp-1", "turbo-itda-tmp-1"),
                                      ("checkpoints", "checkpoints-1"), ("settings.json", "settings-json"),
                                      ("Metrics.Parquet", "Metrics-Parquet")])
def test_reserved_dictionary_names_are_refused_before_anything_is_written(name, fix, tmp_path, capsys):
    config = write_tiny_study(tmp_path, **_renamed_itda(name))
    before = _tree_digest(tmp_path)
    message = _RESERVED_MESSAGE.format(name=re.escape(name), fix=re.escape(fix))
    for command in (["check"], ["run", "--device", "cpu"]):
        _refused([command[0], str(config), *command[1:]], message, capsys)
    assert _tree_digest(tmp_path) == before and not (tmp_path / "run").exists()


def test_reserved_model_names_are_refused(tmp_path, capsys):
    renamed = {'name = "multi"': 'name = "multi.old"', '"one", "multi"': '"one", "multi.old"'}
    config = write_tiny_study(tmp_path, **renamed)
    _refused(["check", str(config)], r"models\[1\]\.name: 'multi\.old' is reserved: in RUN/stores/ .*names ending in "
                                     r"'\.old'.*e\.g\. 'multi-old'", capsys)


def _sae_only_study(folder: Path, **replace: str) -> Path:
    """The tiny study with its first dictionary alone and no studies (which need toy-world prompts)."""
    config = write_tiny_study(folder, **replace)
    text = config.read_text()
    config.write_text(text[:text.index('[[dictionaries]]\nname = "itda"')])
    return config


@pytest.fixture(scope="module")
def trained_group(tmp_path_factory) -> Path:
    """A fit group as `diffdict train` leaves it (harvest and train only)."""
    folder = tmp_path_factory.mktemp("group")
    config = _sae_only_study(folder)
    assert main(["harvest", str(config), "--no-progress", "--device", "cpu"]) == 0
    assert main(["train", str(config), "--no-progress", "--device", "cpu"]) == 0
    return folder


def test_reserved_names_cover_every_entry_a_fit_group_keeps(trained_group):
    """The list the check refuses is the list the framework writes: every entry of a trained group folder that is
    not a dictionary is reserved (a new framework file must be added to FIT_GROUP_ENTRIES)."""
    from diffdict.studies.validate import FIT_GROUP_ENTRIES

    group = next((trained_group / "run" / "fits").iterdir())
    framework = {p.name.lower() for p in group.iterdir()} - {"sae"}
    assert framework and framework <= set(FIT_GROUP_ENTRIES), framework


@pytest.mark.parametrize("name", RESERVED)
def test_a_reserved_name_on_a_trained_run_loses_nothing(name, trained_group, tmp_path, capsys):
    """The reported losses: a rerun with the new name must not replace or delete anything of the run."""
    shutil.copytree(trained_group / "run", tmp_path / "run")
    text = (trained_group / "study.toml").read_text().replace(str(trained_group / "run"), str(tmp_path / "run"))
    config = tmp_path / "study.toml"
    config.write_text(text.replace('name = "sae"', f'name = "{name}"'))
    before = _tree_digest(tmp_path / "run")
    for stage in ("train", "run"):
        _refused([stage, str(config), "--no-progress", "--device", "cpu"], rf"'{re.escape(name)}' is reserved", capsys)
    assert _tree_digest(tmp_path / "run") == before


# ---- 2. the Hub: a subfolder that escapes, push without a token or network -----------------------------------
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def _saved_dictionary(folder: Path) -> Path:
    sae = base.create("topk_sae", d=16, n=64, k=4)
    sae.meta.update({"name": "outside", "hook": "down.2.1"})
    sae.save(folder)
    return folder


def _snapshot(cache: Path, repo: str) -> Path:
    """An (empty) snapshot of `repo` on main in the Hub cache, laid out as huggingface_hub lays it out."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(COMMIT)
    _saved_dictionary(snapshot / "inside")
    return snapshot


@pytest.mark.parametrize("subfolder,message", [
    ("../../../../outside", r"climbs out with '\.\.'"),
    ("inside/../../../../../outside", r"climbs out with '\.\.'"),
    ("/abs/outside", r"is an absolute path"),
    ("C:\\outside", r"is an absolute path"),
])
def test_a_hostile_subfolder_cannot_load_from_outside_the_snapshot(subfolder, message, tmp_path, offline_hub):
    snapshot = _snapshot(offline_hub, "someone/saes")
    _saved_dictionary(tmp_path / "outside")  # what the hostile path points at: never loaded
    assert (snapshot / "../../../../outside").resolve() == (tmp_path / "outside").resolve()
    assert dictionaries.load("someone/saes", subfolder="inside").meta["name"] == "outside"  # the legit one loads
    with pytest.raises(InputError, match=message):
        dictionaries.load("someone/saes", subfolder=subfolder)


def test_a_symlink_planted_in_the_snapshot_is_not_followed_out(tmp_path, offline_hub):
    snapshot = _snapshot(offline_hub, "someone/saes")
    _saved_dictionary(tmp_path / "outside")
    (snapshot / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(InputError, match=r"subfolder 'link' resolves to .*outside, outside .*refusing to load"):
        dictionaries.load("someone/saes", subfolder="link")


def test_a_local_source_refuses_a_subfolder_that_climbs_out(tmp_path):
    _saved_dictionary(tmp_path / "outside")
    (tmp_path / "source").mkdir()
    with pytest.raises(InputError, match=r"climbs out with '\.\.'"):
        dictionaries.load(tmp_path / "source", subfolder="../outside")


@pytest.fixture
def trained_dictionary(tmp_path) -> Path:
    return _saved_dictionary(tmp_path / "run" / "fits" / "one-4096-256-abcd" / "sae")


@pytest.fixture
def no_token(tmp_path, monkeypatch):
    """No HF_TOKEN and no stored login (the token file points into tmp_path), network mode on."""
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"), raising=False)


def _push_argv(folder: Path) -> list[str]:
    return ["push", str(folder), "someone/saes", "--subfolder", "sae"]


def test_push_offline_says_to_unset_offline_mode(trained_dictionary, no_token, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _refused(_push_argv(trained_dictionary), r"HF_HUB_OFFLINE is set, so nothing can be uploaded; unset HF_HUB_OFFLINE",
             capsys)


def test_push_without_a_token_says_how_to_log_in(trained_dictionary, no_token, capsys):
    _refused(_push_argv(trained_dictionary),
             r"no Hugging Face token found; log in with `hf auth login` \(or set HF_TOKEN", capsys)


def test_push_without_network_says_the_hub_is_unreachable(trained_dictionary, no_token, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    _refused(_push_argv(trained_dictionary), r"cannot reach the Hugging Face Hub at http://127\.0\.0\.1:9 .*check the "
                                             r"network .*nothing was uploaded", capsys)


def test_push_with_a_refused_token_says_to_log_in_again(trained_dictionary, no_token, monkeypatch, capsys):
    from huggingface_hub import constants

    class Unauthorized(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # http.server's name for it
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_TOKEN", "hf_expired")
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        _refused(_push_argv(trained_dictionary), r"refused the token \(401\).*log in again with `hf auth login`",
                 capsys)
    finally:
        server.shutdown()


def test_push_refuses_a_subfolder_that_climbs_out(trained_dictionary, capsys):
    _refused(["push", str(trained_dictionary), "someone/saes", "--subfolder", "../x"], r"subfolder '\.\./x' climbs out",
             capsys)


# ---- 3. seeds whose offsets overflow, atlas counts ------------------------------------------------------------
MAX = 2**63 - 1


@pytest.mark.parametrize("replace,message", [
    ({'clip_model = "random"': f'clip_model = "random"\nseed = {MAX}'},
     (rf"seed: {MAX} is too large: training draws its token stream with seed \+ 1, which must stay below 2\*\*63; "
      r"use a seed from 0 to 2\*\*63 - 2")),
    ({"eval_fraction = 0.34": f"eval_fraction = 0.34\nseeds = [{MAX}]"},
     rf"prompts\.seeds\[0\]: {MAX} is too large: the layout study draws its other-seed baseline with seed \+ 1"),
    ({"eval_fraction = 0.34": "eval_fraction = 0.34\nshuffle_seed = -1"},
     r"prompts\.shuffle_seed: -1 is out of range; seeds are integers from 0 to 2\*\*63 - 1"),
], ids=["seed", "first prompt seed", "shuffle seed"])
def test_seeds_whose_offsets_overflow_are_refused_at_check(replace, message, tmp_path, capsys):
    config = write_tiny_study(tmp_path, **replace)
    _refused(["check", str(config)], message, capsys)
    assert not (tmp_path / "run").exists()


def test_a_later_harvest_seed_may_be_the_largest(tmp_path):
    """Only the first prompt seed gets an offset (the studies' seed); the others are used as they are."""
    config = write_tiny_study(tmp_path, **{"eval_fraction = 0.34": f"eval_fraction = 0.34\nseeds = [0, {MAX}]"})
    assert main(["check", str(config)]) == 0


@pytest.mark.parametrize("argv,message", [
    (["generate", "tiny/sdxl", "a cat", "a dog", "--seed", str(MAX)],
     rf"--seed {MAX} is too large for 2 prompts: prompt i uses seed \+ i.*use a seed of at most {MAX - 1}"),
    (["atlas", "nowhere", "--dictionary", "sae", "--features", "1", "--images", "0"], r"--images must be at least 1"),
    (["atlas", "nowhere", "--dictionary", "sae", "--features", "1", "--images", "-3"],
     r"--images must be at least 1.*got -3"),
    (["atlas", "nowhere", "--dictionary", "sae", "--features", "2,-1"],
     r"--features \[-1\]: feature indices are 0 or more"),
], ids=["generate seed + i", "atlas images 0", "atlas images negative", "atlas negative feature"])
def test_cli_counts_and_seeds_are_refused_before_loading(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _refused(argv, message, capsys)
    assert not any(tmp_path.iterdir())


def test_study_seed_leaves_room_for_the_layout_offset(tmp_path, capsys):
    config = write_tiny_study(tmp_path)
    _refused(["study", str(config), "--seed", str(MAX), "--device", "cpu"],
             r"--seed 9223372036854775807 is out of range; study seeds are integers from 0 to 2\*\*63 - 2", capsys)
    assert not (tmp_path / "run").exists()


# ---- 3. caption columns that are not text ----------------------------------------------------------------------
def _caption_table(folder: Path, suffix: str) -> Path:
    path = folder / f"captions.{suffix}"
    frame = pl.DataFrame({"caption": list(range(12)), "text": [f"a red circle number {i}" for i in range(12)]})
    if suffix == "jsonl":
        frame.write_ndjson(path)
    elif suffix == "csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("source", ["dataset", "file"])
def test_a_caption_column_that_is_not_text_is_refused_at_check(source, suffix, tmp_path, capsys):
    _caption_table(tmp_path, suffix)
    key = "dataset" if source == "dataset" else "file"
    config = _sae_only_study(tmp_path, **{
        'source = "toyworld"': f'source = "{source}"\n{key} = "captions.{suffix}"\ncolumn = "caption"'})
    before = _tree_digest(tmp_path)
    for command in (["check"], ["run", "--device", "cpu"]):
        _refused([command[0], str(config), *command[1:]],
                 rf"study\.toml: prompts\.column: column 'caption' of .*captions\.{suffix} holds integers \(Int64\), "
                 r"not text; every caption must be a string: give a column of caption text \(its text columns: text\)",
                 capsys)
    assert _tree_digest(tmp_path) == before


def test_reading_a_caption_column_that_is_not_text_names_file_and_column(tmp_path):
    """The harvest's own read refuses the same column (a config validated elsewhere, a table changed since)."""
    from diffdict.studies.errors import UserError
    from diffdict.studies.prompt_sources import read_table

    path = _caption_table(tmp_path, "jsonl")
    with pytest.raises(UserError, match=r"column 'caption' of .*captions\.jsonl holds integers"):
        read_table(path, "caption", 12)
    assert read_table(path, "text", 2) == ["a red circle number 0", "a red circle number 1"]


# ---- 3. time windows that hold no step of the model ---------------------------------------------------------
def test_a_window_no_step_falls_in_is_refused_at_check(tmp_path, capsys):
    """The issue's case: late = [0.0, 0.4] on the 1-step model (its only step is t = 1)."""
    config = write_tiny_study(tmp_path, **{TINY_WINDOWS: "windows = { early = [0.6, 1.0], late = [0.0, 0.4] }"})
    for command in (["check"], ["run", "--device", "cpu"]):
        _refused([command[0], str(config), *command[1:]],
                 r"studies\.windows\.windows\.late: \[0\.0, 0\.4\] holds no denoising step \(model 'one': 1 step at "
                 r"t = 1\.000\), so its edits would change nothing; remove the window, widen it to hold a step "
                 r"\(e\.g\. \[0\.0, 1\.0\]\)", capsys)
    assert not (tmp_path / "run").exists()


def test_a_window_that_holds_a_step_of_one_edited_model_is_kept(tmp_path):
    """Base's late window is empty on Flux's 4 steps: the study leaves Flux's late rows out instead."""
    from diffdict.studies.check import check_config
    from diffdict.studies.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "toy_papers.toml")
    check_config(config)  # late = [0.0, 0.2] holds steps of toy/sdxl-base, none of toy/flux (4 steps)


@pytest.mark.parametrize("model_id", ["tiny/sdxl", "tiny/flux"])
@pytest.mark.parametrize("steps", [1, 3])
def test_step_times_are_the_times_the_hooks_see(model_id, steps, request):
    """adapters/schedules.py computes without the model what generation records (the windows check relies on it)."""
    from diffdict import adapters
    from diffdict.adapters.schedules import step_times

    adapter = request.getfixturevalue(model_id.replace("/", "_"))
    hook = next(h.name for h in adapter.hook_points.values() if h.stream == "image")
    generation = adapter.generate(["a red circle"], seeds=0, hooks=[hook], steps=steps)
    recorded = [m.t for m in generation.maps(hook=hook, branch="cond")]
    meta = adapters.load(model_id, device="meta")
    assert step_times(meta, steps, adapter.defaults.height, adapter.defaults.width) == recorded


def test_flux_dev_step_times_follow_the_pipelines_shift():
    """Flux dev shifts its sigmas by the image size (dynamic shifting): as FluxPipeline computes them."""
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    from diffdict import adapters
    from diffdict.adapters.schedules import REAL_SCHEDULERS, step_times

    config = REAL_SCHEDULERS["black-forest-labs/FLUX.1-dev"]
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / 28, 28), mu=calculate_shift(64 * 64, 256, 4096, 0.5, 1.15))
    expected = [float(t) for t in scheduler.timesteps.to(torch.float32) / 1000]
    meta = adapters.load("black-forest-labs/FLUX.1-dev", device="meta")
    assert step_times(meta, 28, 1024, 1024) == expected
    assert expected[-1] > 1 / 28  # shifted towards noise: the unshifted last step would be 1/28


def test_the_toy_papers_windows_are_placed_as_documented():
    """Sanity for the shipped toy models: Base's 25 steps fill every default window, Flux's 4 miss the late one."""
    from diffdict import adapters
    from diffdict.adapters.schedules import step_times

    base_times = step_times(adapters.load("toy/sdxl-base", device="meta"), 25, 64, 64)
    flux_times = step_times(adapters.load("toy/flux", device="meta"), 4, 64, 64)
    assert all(any(low <= t <= high for t in base_times) for low, high in ([0.6, 1.0], [0.2, 0.6], [0.0, 0.2]))
    assert flux_times == [1.0, 0.75, 0.5, 0.25]
