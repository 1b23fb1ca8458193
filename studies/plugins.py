"""Plug-ins: a user's study, dictionary architecture or model family, imported before a config is resolved.

A plug-in is a Python module that registers what it defines when imported (studies.registry.register,
dictionaries.registry.register, adapters.families.register). A config names its own:

    plugins = ["my_pkg.my_study", "./my_arch.py"]   # a module path, or a .py file relative to the config

and installed packages can declare theirs once, as entry points in the group "diffdict.plugins"
(pyproject.toml: [project.entry-points."diffdict.plugins"] my_study = "my_pkg.my_study"); those are
imported whenever a config is read. Each is imported once per process, so `check` then `run` in one
process register nothing twice.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from .errors import ConfigError

ENTRY_POINT_GROUP = "diffdict.plugins"
_entry_points_loaded = False


def load_entry_points() -> None:
    """Import every installed package's plug-ins (entry point group "diffdict.plugins"), once."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as error:  # a broken installed plug-in is named, not a traceback
            raise ConfigError(
                f"the installed plug-in {point.name!r} ({point.value}, entry point group "
                f"{ENTRY_POINT_GROUP!r}) failed to import: {type(error).__name__}: {error}"
            ) from None


def load_plugins(names: object, config_path: Path | None, source: str) -> list[str]:
    """Import the config's `plugins` (module paths or .py files relative to the config); returns them."""
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise ConfigError(
            f"{source}: plugins: expected a list of module paths or .py files, e.g. "
            f'["my_pkg.my_study", "./my_arch.py"], got {names!r}'
        )
    for i, name in enumerate(names):
        try:
            if name.endswith(".py") or "/" in name or "\\" in name:
                _import_file(_resolve(name, config_path), source, i)
            else:
                importlib.import_module(name)
        except ConfigError:
            raise
        except ModuleNotFoundError as error:
            raise ConfigError(
                f"{source}: plugins[{i}]: {name!r} cannot be imported ({error}); give an importable "
                f"module path (installed, or on PYTHONPATH) or a .py file relative to the config"
            ) from None
        except Exception as error:
            raise ConfigError(
                f"{source}: plugins[{i}]: importing {name!r} failed: {type(error).__name__}: {error}"
            ) from None
    return list(names)


def _resolve(name: str, config_path: Path | None) -> Path:
    path = Path(name)
    return path if path.is_absolute() or config_path is None else config_path.parent / path


def _import_file(path: Path, source: str, index: int) -> None:
    """Import a plug-in file under a name derived from its absolute path (once per process)."""
    if not path.is_file():
        raise ConfigError(
            f"{source}: plugins[{index}]: {path} does not exist; plug-in files are relative to the config's folder"
        )
    resolved = path.resolve()
    module_name = f"diffdict_plugin_{resolved.stem}_{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{source}: plugins[{index}]: {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]  # a failed import can be fixed and retried in the same process
        raise
