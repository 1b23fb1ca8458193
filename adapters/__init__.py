"""Models behind one hook-point interface: `load(model_id)` -> Adapter.

adapter = adapters.load("tiny/sdxl")
gen = adapter.generate(["a red circle"], seeds=0, hooks=["down.2.1"])
gen.maps(hook="down.2.1", branch="cond")[0].value   # (batch, h, w, d)
"""

import logging

# Importing diffusers imports bitsandbytes (for its quantizer), whose CPU backend tries to fetch
# an optional kernel from the Hub at import time and logs a warning when it cannot, in every
# process, NF4 or not. NF4 works without that kernel (bitsandbytes' own CPU code), so the
# warning is silenced here; quantize.py says it once when NF4 actually runs without it.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from .base import Adapter, ProtocolDefaults  # noqa: E402
from .capture import BRANCHES, CapturedMap, Generation  # noqa: E402
from .hookpoints import HookPoint  # noqa: E402
from .interventions import AddDirection, EditFeatures, FeatureOp, Intervention, RowFeatureEdits, SkipBlock, Splice  # noqa: E402
from .prefix_cache import PrefixCache  # noqa: E402
from .registry import default_device, known_models, load  # noqa: E402

__all__ = [
    "Adapter",
    "ProtocolDefaults",
    "BRANCHES",
    "CapturedMap",
    "Generation",
    "HookPoint",
    "AddDirection",
    "EditFeatures",
    "FeatureOp",
    "Intervention",
    "PrefixCache",
    "RowFeatureEdits",
    "SkipBlock",
    "Splice",
    "default_device",
    "known_models",
    "load",
]
