"""Bad-input catalogue, issue 31 (second hardening pass): reserved names, a Hub subfolder that escapes, `push`
without a token or network, seeds whose offsets overflow, `atlas` counts, caption columns that are not text,
time windows that hold no step of the model, prompt sources that give no captions (read before any model
loads; a Hub dataset probed), a full disk on a real tmpfs, `--threads`, and the toy export's out-dir.
(Damaged run files are at the end of test_bad_inputs.py, beside its trained run.)

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
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


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
_RESERVED_MESSAGE = (
    r"dictionaries\[1\]\.name: '{name}' is reserved: in RUN/fits/GROUP/ the run keeps its own files "
    r"under these names \(checkpoints, metrics, settings\.json, metrics\.parquet, features\.parquet, "
    r"names ending in '\.old', names containing '\.tmp-'\).*choose another name, e\.g\. '{fix}'"
)


def _renamed_itda(name: str) -> dict[str, str]:
    return {'name = "itda"': f'name = "{name}"', '"sae", "itda"': f'"sae", "{name}"'}


@pytest.mark.parametrize(
    "name,fix",
    [
        ("turbo-sae.old", "turbo-sae-old"),
        ("turbo-itda.tmp-1", "turbo-itda-tmp-1"),
        ("checkpoints", "checkpoints-1"),
        ("settings.json", "settings-json"),
        ("Metrics.Parquet", "Metrics-Parquet"),
    ],
)
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
    _refused(
        ["check", str(config)],
        r"models\[1\]\.name: 'multi\.old' is reserved: in RUN/stores/ .*names ending in "
        r"'\.old'.*e\.g\. 'multi-old'",
        capsys,
    )


def _sae_only_study(folder: Path, **replace: str) -> Path:
    """The tiny study with its first dictionary alone and no studies (which need toy-world prompts)."""
    config = write_tiny_study(folder, **replace)
    text = config.read_text()
    config.write_text(text[: text.index('[[dictionaries]]\nname = "itda"')])
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


@pytest.mark.parametrize(
    "subfolder,message",
    [
        ("../../../../outside", r"climbs out with '\.\.'"),
        ("inside/../../../../../outside", r"climbs out with '\.\.'"),
        ("/abs/outside", r"is an absolute path"),
        ("C:\\outside", r"is an absolute path"),
    ],
)
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
    _refused(
        _push_argv(trained_dictionary),
        r"HF_HUB_OFFLINE is set, so nothing can be uploaded; unset HF_HUB_OFFLINE",
        capsys,
    )


def test_push_without_a_token_says_how_to_log_in(trained_dictionary, no_token, capsys):
    _refused(
        _push_argv(trained_dictionary),
        r"no Hugging Face token found; log in with `hf auth login` \(or set HF_TOKEN",
        capsys,
    )


def test_push_without_network_says_the_hub_is_unreachable(trained_dictionary, no_token, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    _refused(
        _push_argv(trained_dictionary),
        r"cannot reach the Hugging Face Hub at http://127\.0\.0\.1:9 .*check the "
        r"network .*nothing was uploaded",
        capsys,
    )


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
        _refused(
            _push_argv(trained_dictionary), r"refused the token \(401\).*log in again with `hf auth login`", capsys
        )
    finally:
        server.shutdown()


def test_push_refuses_a_subfolder_that_climbs_out(trained_dictionary, capsys):
    _refused(
        ["push", str(trained_dictionary), "someone/saes", "--subfolder", "../x"],
        r"subfolder '\.\./x' climbs out",
        capsys,
    )


# ---- 3. seeds whose offsets overflow, atlas counts ------------------------------------------------------------
MAX = 2**63 - 1


@pytest.mark.parametrize(
    "replace,message",
    [
        (
            {'clip_model = "random"': f'clip_model = "random"\nseed = {MAX}'},
            (
                rf"seed: {MAX} is too large: training draws its token stream with seed \+ 1, "
                r"which must stay below 2\*\*63; use a seed from 0 to 2\*\*63 - 2"
            ),
        ),
        (
            {"eval_fraction = 0.34": f"eval_fraction = 0.34\nseeds = [{MAX}]"},
            rf"prompts\.seeds\[0\]: {MAX} is too large: the layout study draws its other-seed baseline with seed \+ 1",
        ),
        (
            {"eval_fraction = 0.34": "eval_fraction = 0.34\nshuffle_seed = -1"},
            r"prompts\.shuffle_seed: -1 is out of range; seeds are integers from 0 to 2\*\*63 - 1",
        ),
    ],
    ids=["seed", "first prompt seed", "shuffle seed"],
)
def test_seeds_whose_offsets_overflow_are_refused_at_check(replace, message, tmp_path, capsys):
    config = write_tiny_study(tmp_path, **replace)
    _refused(["check", str(config)], message, capsys)
    assert not (tmp_path / "run").exists()


def test_a_later_harvest_seed_may_be_the_largest(tmp_path):
    """Only the first prompt seed gets an offset (the studies' seed); the others are used as they are."""
    config = write_tiny_study(tmp_path, **{"eval_fraction = 0.34": f"eval_fraction = 0.34\nseeds = [0, {MAX}]"})
    assert main(["check", str(config)]) == 0


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["generate", "tiny/sdxl", "a cat", "a dog", "--seed", str(MAX)],
            rf"--seed {MAX} is too large for 2 prompts: prompt i uses seed \+ i.*use a seed of at most {MAX - 1}",
        ),
        (
            ["atlas", "nowhere", "--dictionary", "sae", "--features", "1", "--images", "0"],
            r"--images must be at least 1",
        ),
        (
            ["atlas", "nowhere", "--dictionary", "sae", "--features", "1", "--images", "-3"],
            r"--images must be at least 1.*got -3",
        ),
        (
            ["atlas", "nowhere", "--dictionary", "sae", "--features", "2,-1"],
            r"--features \[-1\]: feature indices are 0 or more",
        ),
    ],
    ids=["generate seed + i", "atlas images 0", "atlas images negative", "atlas negative feature"],
)
def test_cli_counts_and_seeds_are_refused_before_loading(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _refused(argv, message, capsys)
    assert not any(tmp_path.iterdir())


def test_study_seed_leaves_room_for_the_layout_offset(tmp_path, capsys):
    config = write_tiny_study(tmp_path)
    _refused(
        ["study", str(config), "--seed", str(MAX), "--device", "cpu"],
        r"--seed 9223372036854775807 is out of range; study seeds are integers from 0 to 2\*\*63 - 2",
        capsys,
    )
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
    config = _sae_only_study(
        tmp_path, **{'source = "toyworld"': f'source = "{source}"\n{key} = "captions.{suffix}"\ncolumn = "caption"'}
    )
    before = _tree_digest(tmp_path)
    for command in (["check"], ["run", "--device", "cpu"]):
        _refused(
            [command[0], str(config), *command[1:]],
            rf"study\.toml: prompts\.column: column 'caption' of .*captions\.{suffix} holds integers \(Int64\), "
            r"not text; every caption must be a string: give a column of caption text \(its text columns: text\)",
            capsys,
        )
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
        _refused(
            [command[0], str(config), *command[1:]],
            r"studies\.windows\.windows\.late: \[0\.0, 0\.4\] holds no denoising step \(model 'one': 1 step at "
            r"t = 1\.000\), so its edits would change nothing; remove the window, widen it to hold a step "
            r"\(e\.g\. \[0\.0, 1\.0\]\)",
            capsys,
        )
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
    assert isinstance(scheduler, FlowMatchEulerDiscreteScheduler)  # not (scheduler, unused keys): none were asked for
    sigmas = np.linspace(1.0, 1 / 28, 28).tolist()
    scheduler.set_timesteps(sigmas=sigmas, mu=calculate_shift(64 * 64, 256, 4096, 0.5, 1.15))
    assert isinstance(scheduler.timesteps, torch.Tensor)
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


# ---- 4. prompt sources read far enough to know they will give captions (issue 31, part 3) ------------------------
def _bytes(name: str, data: bytes | str):
    def write(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return write


def _frame_file(name: str, frame: pl.DataFrame, cut: bool = False):
    def write(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(path)
        if cut:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return write


_DATASET = 'source = "dataset"\ndataset = "{name}"\ncolumn = "caption"'
SOURCE_CASES = [
    (
        "csv not UTF-8",
        "captions.csv",
        _bytes("captions.csv", b"caption\ncaf\xe9 au lait\na red circle\n"),
        r"prompts\.dataset: .*captions\.csv is not UTF-8 text \(invalid utf-8 sequence\); save it as UTF-8, "
        r"e\.g\. `iconv",
    ),
    (
        "ragged csv",
        "captions.csv",
        _bytes("captions.csv", "id,caption\n1,a red circle\n2,a blue, round square\n"),
        r"prompts\.dataset: .*captions\.csv has a row with more fields than its header "
        r".*quote every caption that holds the separator",
    ),
    ("empty csv", "captions.csv", _bytes("captions.csv", b""), r"prompts\.dataset: .*captions\.csv is empty"),
    (
        "csv with a header only",
        "captions.csv",
        _bytes("captions.csv", "caption\n"),
        r"prompts\.dataset: .*captions\.csv has no rows; give a table with one caption per row",
    ),
    (
        "all-blank jsonl",
        "captions.jsonl",
        _bytes("captions.jsonl", '{"caption": " "}\n{"caption": null}\n'),
        r"prompts\.column: column 'caption' of .*captions\.jsonl holds no caption: "
        r"its 2 row\(s\) are all empty or null",
    ),
    (
        "jsonl cut mid-line",
        "captions.jsonl",
        _bytes("captions.jsonl", '{"caption": "a red circle"}\n{"caption": \n'),
        r"prompts\.dataset: .*captions\.jsonl is not valid JSON lines \(.*\); write one JSON object per line",
    ),
    (
        "one caption repeated",
        "captions.parquet",
        _frame_file("captions.parquet", pl.DataFrame({"caption": ["a red circle"] * 3})),
        r"prompts\.column: column 'caption' of .*captions\.parquet has 1 distinct caption \(of 3 used\), but train and "
        r"eval are split by prompt text",
    ),
    (
        "truncated parquet",
        "captions.parquet",
        _frame_file("captions.parquet", pl.DataFrame({"caption": [f"a red circle {i}" for i in range(50)]}), cut=True),
        r"prompts\.dataset: .*captions\.parquet cannot be read as parquet \(parquet: .*\); it may be truncated",
    ),
    (
        "dataset folder with only a loading script",
        "laion-like",
        _bytes("laion-like/laion_like.py", "import datasets\n"),
        r"prompts\.dataset: .*laion-like holds only a loading script \(laion_like\.py\) and no data files; "
        r"the installed `datasets` no longer runs loading scripts: write the captions as data files",
    ),
    (
        "dataset folder of blank captions",
        "blank",
        _frame_file(
            "blank/train-00000.parquet", pl.DataFrame({"caption": ["", " ", None]}, schema={"caption": pl.String})
        ),
        r"prompts\.column: column 'caption' of the data files in .*blank holds no caption",
    ),
]


@pytest.mark.parametrize("name,table,setup,message", SOURCE_CASES, ids=[c[0] for c in SOURCE_CASES])
def test_a_prompt_source_that_gives_no_captions_is_refused_before_any_model(
    name, table, setup, message, tmp_path, capsys, monkeypatch
):
    from diffdict.studies.run import Run

    def no_model(self, model):
        raise AssertionError("a model was loaded for a source that gives no prompts")

    monkeypatch.setattr(Run, "adapter", no_model)
    setup(tmp_path)
    config = _sae_only_study(tmp_path, **{'source = "toyworld"': _DATASET.format(name=table)})
    before = _tree_digest(tmp_path)
    for command in (["check"], ["harvest", "--device", "cpu", "--no-progress"]):
        _refused([command[0], str(config), *command[1:]], rf"study\.toml: {message}", capsys)
    assert _tree_digest(tmp_path) == before and not (tmp_path / "run").exists()


def test_a_ragged_csv_named_as_prompts_file_names_the_file_key(tmp_path, capsys):
    _bytes("captions.csv", "id,caption\n1,a red circle\n2,a blue, round square\n")(tmp_path)
    config = _sae_only_study(
        tmp_path, **{'source = "toyworld"': 'source = "file"\nfile = "captions.csv"\ncolumn = "caption"'}
    )
    _refused(["check", str(config)], r"prompts\.file: .*captions\.csv has a row with more fields", capsys)


def test_the_harvest_s_own_read_refuses_the_same_tables(tmp_path):
    """read_table (the stage's read, for a table changed since the check) names the file, never a ComputeError."""
    from diffdict.studies.errors import UserError
    from diffdict.studies.prompt_sources import read_table

    for _name, table, setup, message in SOURCE_CASES[:8]:
        setup(tmp_path)
        path = tmp_path / table
        with pytest.raises(UserError, match=message.split(": ", 1)[-1].replace(r"prompts\.dataset", "")):
            read_table(path, "caption", 12)
        path.unlink()


def test_check_counts_a_good_table(tmp_path, capsys):
    _caption_table(tmp_path, "csv")
    config = _sae_only_study(
        tmp_path, **{'source = "toyworld"': _DATASET.format(name="captions.csv").replace('"caption"', '"text"')}
    )
    assert main(["check", str(config)]) == 0
    assert re.search(
        r"prompts: .*captions\.csv \(column 'text', first 12\); 12 rows, 12 non-blank captions", capsys.readouterr().out
    )


_HUB_SOURCE = {'source = "toyworld"': 'source = "dataset"\ndataset = "laion/laion-coco"\ncolumn = "top_caption"'}


@pytest.fixture
def online(monkeypatch):
    """Network mode on (HF_HUB_OFFLINE unset for huggingface_hub and datasets)."""
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)


def test_a_hub_dataset_without_network_warns_at_check_and_stops_the_harvest(tmp_path, capsys, monkeypatch, online):
    import time

    from huggingface_hub import constants

    from diffdict.studies.run import Run

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setattr(Run, "adapter", lambda self, model: pytest.fail("a model was loaded without prompts"))
    config = _sae_only_study(tmp_path, **_HUB_SOURCE)
    began = time.monotonic()
    assert main(["check", str(config)]) == 0
    assert time.monotonic() - began < 30
    assert re.search(
        r"prompts: Hugging Face dataset 'laion/laion-coco' .*not downloaded now; .*warning: not reachable "
        r"now \(ConnectError: .*\); the harvest needs the Hub",
        capsys.readouterr().out,
    )
    _refused(
        ["harvest", str(config), "--device", "cpu", "--no-progress"],
        r"prompts\.dataset: cannot reach the Hugging Face Hub to read dataset 'laion/laion-coco' \(ConnectError: "
        r".*\); check the network .*run the same command again; nothing was generated",
        capsys,
    )
    assert not (tmp_path / "run" / "stores").exists()


def test_a_hub_dataset_the_hub_does_not_have_is_refused_at_check(tmp_path, capsys, monkeypatch, online):
    from huggingface_hub import constants

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # http.server's name for it
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "Repository not found"}')

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        config = _sae_only_study(tmp_path, **_HUB_SOURCE)
        _refused(
            ["check", str(config)],
            r"study\.toml: prompts\.dataset: dataset 'laion/laion-coco' is not on the "
            r"Hugging Face Hub .*check the id at https://huggingface\.co/datasets/",
            capsys,
        )
    finally:
        server.shutdown()


def test_a_hub_dataset_offline_and_not_cached_is_one_message(tmp_path, capsys, monkeypatch):
    import datasets.config
    from huggingface_hub import constants

    for module in (constants, datasets.config):
        monkeypatch.setattr(module, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    config = _sae_only_study(tmp_path, **_HUB_SOURCE)
    assert main(["check", str(config)]) == 0
    assert "not asked (HF_HUB_OFFLINE is set)" in capsys.readouterr().out
    _refused(
        ["harvest", str(config), "--device", "cpu", "--no-progress"],
        r"prompts\.dataset: dataset 'laion/laion-coco' \(split 'train'\) cannot be read \(.*\); HF_HUB_OFFLINE is "
        r"set and the dataset is not in the local cache: unset HF_HUB_OFFLINE",
        capsys,
    )


# ---- 5. a full disk, on a real small file system (issue 31, part 6) ------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (we may mount as root); skipped where mounting is not permitted."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    """Fill the disk to the last byte with one file (deleted to free the space again)."""
    import os

    filler = disk / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY)
    try:
        for size in (65536, 4096, 1):  # unbuffered, down to the last byte
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def _records(count: int, value: float, size: int = 32):
    from diffdict.dictionaries.store import MapRecord

    return [
        MapRecord(
            {
                "hook": "h",
                "prompt_id": i,
                "prompt": f"p{i}",
                "seed": 0,
                "step": 0,
                "timestep": 999.0,
                "t": 1.0,
                "branch": "cond",
            },
            torch.full((size, size, 16), value + i),
        )
        for i in range(count)
    ]


def test_a_shard_that_fills_the_disk_stops_with_the_file_and_resumes(small_disk):
    """safetensors raises SafetensorError ("No space left on device"), not OSError: mapped all the same."""
    from diffdict.dictionaries.errors import DiskFullError
    from diffdict.dictionaries.store import StoreWriter, read_shard_rows
    from diffdict.studies.errors import user_message

    writer = StoreWriter(small_disk / "store", "m", "fp32")
    writer.write_shard("job-000000", _records(2, 1.0))  # 2 x 64 KiB
    kept = (small_disk / "store" / "shards" / "job-000000.safetensors").read_bytes()
    filler = _fill(small_disk)
    with pytest.raises(DiskFullError) as caught:
        writer.write_shard("job-000001", _records(2, 5.0))
    assert type(caught.value.__cause__).__name__ == "SafetensorError"  # the library's own error, from a real disk
    assert re.search(
        r"no space left to write shard .*job-000001\.safetensors \(about 0\.1 MB\); the shards already "
        r"written are kept: .*run the same command again to resume",
        user_message(caught.value) or "",
    )
    shards = small_disk / "store" / "shards"
    assert sorted(p.name for p in shards.iterdir()) == ["job-000000.safetensors"]  # no temporary left behind
    assert (shards / "job-000000.safetensors").read_bytes() == kept
    assert len(read_shard_rows(shards / "job-000000.safetensors")) == 2
    filler.unlink()  # space again: the same command resumes
    resumed = StoreWriter(small_disk / "store", "m", "fp32")
    assert resumed.has_shard("job-000000") and not resumed.has_shard("job-000001")
    resumed.write_shard("job-000001", _records(2, 5.0))
    assert resumed.finalize().height == 4


def test_tables_dictionaries_and_json_on_a_full_disk_keep_the_old_file(small_disk):
    """polars (ComputeError), a dictionary folder (safetensors) and JSON (OSError) all end in DiskFullError, and the
    file a reader sees is still the previous one."""
    from diffdict.dictionaries.atomic import write_json_atomic
    from diffdict.dictionaries.errors import DiskFullError
    from diffdict.studies.errors import user_message
    from diffdict.studies.pipeline import write_table

    table = pl.DataFrame({"x": list(range(20_000))})
    write_table(table.head(10), small_disk / "tables" / "t.parquet")
    write_json_atomic(small_disk / "timings.json", {"a": 1})
    sae = base.create("topk_sae", d=16, n=32, k=4)
    sae.save(small_disk / "fits" / "sae")
    before = _tree_digest(small_disk)
    filler = _fill(small_disk)
    for write, name in (
        (lambda: write_table(table, small_disk / "tables" / "t.parquet"), "t.parquet"),
        (lambda: write_json_atomic(small_disk / "timings.json", {"a": list(range(10_000))}), "timings.json"),
        (lambda: base.create("topk_sae", d=16, n=4096, k=4).save(small_disk / "fits" / "sae"), "the folder sae"),
    ):
        with pytest.raises(DiskFullError) as caught:
            write()
        assert re.search(
            rf"no space left to write {re.escape(name)} \(.*\); what was written before is kept: free "
            r"space on that disk .*run the same command again",
            user_message(caught.value) or "",
        )
    filler.unlink()
    assert _tree_digest(small_disk) == before  # the old files, whole, and no temporaries
    assert torch.equal(base.load(small_disk / "fits" / "sae").atoms, sae.atoms)


# ---- 6. thread counts (issue 31, part 7) -----------------------------------------------------------------------
@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_threads_are_set_and_recorded_with_device_and_dtype(trained_group, tmp_path, capsys, restore_threads):
    import json

    shutil.copytree(trained_group / "run", tmp_path / "run")
    text = (trained_group / "study.toml").read_text().replace(str(trained_group / "run"), str(tmp_path / "run"))
    (tmp_path / "study.toml").write_text(text)
    assert main(["train", str(tmp_path / "study.toml"), "--threads", "1", "--no-progress", "--device", "cpu"]) == 0
    assert torch.get_num_threads() == 1
    compute = json.loads((tmp_path / "run" / "timings.json").read_text())["compute"]
    assert compute["train"]["threads"] == 1 and compute["train"]["device"] == "cpu"
    assert compute["train"]["store_dtype"] == "fp32" and set(compute["train"]["model_dtypes"]) == {"one", "multi"}


@pytest.mark.parametrize(
    "argv",
    [
        ["check-less"],
        ["generate", "tiny/sdxl", "a cat"],
        ["toy", "eval", "toy/sdxl-turbo"],
        ["atlas", "RUN", "--dictionary", "sae", "--features", "0"],
    ],
)
def test_threads_below_one_are_refused_before_loading(argv, trained_group, tmp_path, capsys, monkeypatch):
    if argv == ["check-less"]:
        argv = ["harvest", str(trained_group / "study.toml")]
    argv = [str(trained_group / "run") if a == "RUN" else a for a in argv]
    monkeypatch.setattr("diffdict.adapters.load", lambda *a, **k: pytest.fail("a model was loaded"))
    before = _tree_digest(trained_group)
    _refused(
        [*argv, "--threads", "0", *(["--device", "cpu"] if argv[0] != "toy" else [])],
        r"--threads must be at least 1, got 0",
        capsys,
    )
    assert _tree_digest(trained_group) == before


def test_omp_num_threads_is_honoured_without_the_option(monkeypatch, restore_threads):
    from diffdict.studies.threads import apply_threads

    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert apply_threads(None) == 1 and torch.get_num_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert apply_threads(3) == 3 and torch.get_num_threads() == 3


# ---- 7. the toy export never deletes weights it was not asked to replace (issue 31, part 6) -----------------------
def test_toy_export_refuses_an_out_dir_that_holds_pipelines(tmp_path, capsys):
    out, work = tmp_path / "weights", tmp_path / "work"
    (out / "sdxl-base").mkdir(parents=True)
    (out / "sdxl-base" / "model_index.json").write_text("{}")
    before = _tree_digest(tmp_path)
    _refused(
        ["toy", "train", "--work-dir", str(work), "--out-dir", str(out), "--stages", "export", "--no-progress"],
        r"--out-dir .*weights already holds sdxl-base, which the export stage would replace .*pass --force",
        capsys,
    )
    assert _tree_digest(tmp_path) == before and not work.exists()


def test_a_dictionary_on_a_hook_that_is_not_harvested_says_where_to_add_it(tmp_path, capsys):
    config = write_tiny_study(tmp_path, **{'model = "one"\nhook = "down.2.1"': 'model = "one"\nhook = "mid.0"'})
    assert main(["check", str(config)]) == 2
    error = capsys.readouterr().err
    assert "dictionaries[0].hook: 'mid.0' is not harvested for model 'one': add it to harvest.hooks" in error
    assert "(harvested: down.2.1)" in error


def test_a_store_folder_may_be_a_symbolic_link_to_another_disk(tmp_path):
    from diffdict.studies.config import load_config
    from diffdict.studies.run import Run

    elsewhere = tmp_path / "other-disk" / "one"
    elsewhere.mkdir(parents=True)
    (tmp_path / "run" / "stores").mkdir(parents=True)
    (tmp_path / "run" / "stores" / "one").symlink_to(elsewhere)
    run = Run(load_config(write_tiny_study(tmp_path)), progress=False)
    assert run.store_dir("one") == tmp_path / "run" / "stores" / "one"  # not refused as outside the run
    run.harvest()
    assert (elsewhere / "index.parquet").is_file()  # the maps went to the other disk
