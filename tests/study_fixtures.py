"""A small study config on tiny/sdxl that exercises every stage and study in well under a minute."""

from __future__ import annotations

from pathlib import Path

TINY_STUDY = """
name = "tiny"
out = "{out}"
clip_model = "random"

[prompts]
source = "toyworld"
count = 12
eval_fraction = 0.34

[[models]]
name = "one"
id = "tiny/sdxl"
steps = 1
guidance = 0.0

[[models]]
name = "multi"
id = "tiny/sdxl"
steps = 2
guidance = 5.0

[harvest]
hooks = ["down.2.1"]
dtype = "fp32"
batch_size = 6

[[dictionaries]]
name = "sae"
architecture = "topk_sae"
model = "one"
hook = "down.2.1"
n = 64
k = 4
tokens = 4096
batch = 256

[[dictionaries]]
name = "itda"
architecture = "itda"
model = "one"
hook = "down.2.1"
n = 64
k = 4
tokens = 4096
batch = 256

[studies.transfer]
dictionaries = ["sae"]
models = ["one", "multi"]
splice_prompts = 2
edit_prompts = 2
edit_selection_prompts = 8
edit_attributes = ["colour"]
edit_strengths = [4]

[studies.compare]
pairs = [["sae", "itda"]]
prompts = 4

[studies.windows]
dictionaries = ["sae"]
prompts = 2
edits = ["colour", "background"]
style_prompts = 1
edit_styles = ["sdlens", "tinaz_spatial", "tinaz_global", "flux_add"]
{windows}

[studies.editability]
models = ["one"]
hooks = ["down.2.1", "up.1.1"]
groups = {{ pair = ["down.2.1", "mid.0"] }}
dictionaries = ["sae"]
attributes = ["colour", "position"]
strengths = [1, 4]
prompts = 2
selection_prompts = 8

[studies.layout]
models = ["one", "multi"]
dictionaries = ["sae"]
prompts = 4
selection_prompts = 8

[studies.training]

[studies.atlas]
dictionaries = ["sae", "itda"]
top_features = 3
images_per_feature = 2
"""


# The windows study's windows: the 1-step model's only step is t = 1, and a window that holds no step of
# any edited model is refused at check. Cases that set other windows replace this line.
TINY_WINDOWS = "windows = { early = [0.6, 1.0], all = [0.0, 1.0] }"


def write_tiny_study(folder: Path, **replace: str) -> Path:
    """The tiny study config in `folder`, output under folder/run; `replace` swaps text (old=new)."""
    text = TINY_STUDY.format(out=folder / "run", windows=TINY_WINDOWS)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = folder / "study.toml"
    path.write_text(text)
    return path
