"""Model configs -> `ModelSpec`: `load_model` picks the loader from the file name.

A latprof YAML file (`latprof.config_yaml`) or a Hugging Face `config.json` (`latprof.config_hf`,
read as data only).  The spec itself is `latprof.model_spec.ModelSpec`, re-exported here.
Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path

from latprof.config_hf import load_hf_config
from latprof.config_yaml import load_yaml_model
from latprof.errors import InputError
from latprof.model_spec import ModelSpec

__all__ = ["ModelSpec", "load_model"]


def load_model(path: str | Path) -> ModelSpec:
    """Load a model config: latprof YAML (`.yaml`, `.yml`) or Hugging Face `config.json`
    (`.json`, or a directory holding `config.json`)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.exists():
        raise InputError(f"model config {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return load_yaml_model(path)
    if suffix == ".json":
        return load_hf_config(path)
    raise InputError(
        f"{path}: unknown model config format {suffix or '(no suffix)'!r}; give a latprof YAML "
        "file (.yaml, .yml) or a Hugging Face config.json (.json, or its directory)"
    )
