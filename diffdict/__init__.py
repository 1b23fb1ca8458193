"""diffdict: dictionary learning on the denoisers of text-to-image diffusion models.

The subpackages live in the project's top-level folders and install under this one name
(pyproject.toml maps them), so none of them clashes with another distribution's import name:

    diffdict.adapters      models behind one hook-point interface (SDXL Turbo/Base, Flux, toy, tiny)
    diffdict.dictionaries  activation stores, top-k SAEs and ITDA, training, metrics
    diffdict.studies       study configs, the pipeline and the `diffdict` command line
    diffdict.analysis      plots, CLIP scores and the HTML report
    diffdict.toyworld      the ground-truth toy world, its shipped models and their training lab
    diffdict.configs       the shipped study configs (data only)
"""

__version__ = "0.1.0"
