"""The built-in studies' declarations, one small module each: the study's config dataclass (its
[studies.NAME] table), its study-specific checks and `STUDY = StudyKind(...)` (see studies/registry.py).

Torch-free on purpose: config parsing imports these; the computation lives in studies/NAME.py and is
referenced by "module:function" strings, imported only when a study runs.
"""
