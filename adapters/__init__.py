"""Models behind one hook-point interface: `load(model_id)` -> Adapter.

    adapter = adapters.load("tiny/sdxl")
    gen = adapter.generate(["a red circle"], seeds=0, hooks=["down.2.1"])
    gen.maps(hook="down.2.1", branch="cond")[0].value   # (batch, h, w, d)
"""
from .base import Adapter, ProtocolDefaults
from .capture import BRANCHES, CapturedMap, Generation
from .hookpoints import HookPoint
from .interventions import AddDirection, EditFeatures, Intervention, SkipBlock, Splice
from .registry import default_device, known_models, load

__all__ = [
    "Adapter", "ProtocolDefaults", "BRANCHES", "CapturedMap", "Generation", "HookPoint",
    "AddDirection", "EditFeatures", "Intervention", "SkipBlock", "Splice", "default_device", "known_models", "load",
]
