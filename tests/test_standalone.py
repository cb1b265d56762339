"""The repository stands alone: nothing it ships reaches outside it, and the wheel carries the
benchmark prompts."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dspark_jax.benchmarks import BENCHMARK_DIR, benchmark_names, benchmark_path

ROOT = Path(__file__).resolve().parents[1]
# Spelled in pieces so that this file does not match itself.
OUTSIDE = ["../" + "shared", "shared/" + "docs", "shared/" + "data"]
SHIPPED = ("dspark_jax", "tests", "docs", "configs", "experiments", "tpu_scripts", ".ci")
TOP_FILES = (
  "Makefile",
  "pyproject.toml",
  "README.md",
  "TRAINING.md",
  "RESULTS.md",
  "BENCHMARKS.md",
)


SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist", ".venv", "runs"}
BINARY = (".safetensors", ".npz", ".png", ".gguf", ".pyc")


def _shipped_files():
  """Every file of the shipped folders and top-level files: git's list where this is a git
  checkout, else a walk of the folders (CI runs from a plain copy of the checkout)."""
  out = subprocess.run(
    ["git", "ls-files", "--cached", "--others", "--exclude-standard", *SHIPPED, *TOP_FILES],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=False,
  )
  if out.returncode == 0:
    names = out.stdout.splitlines()
  else:
    names = [name for name in TOP_FILES if (ROOT / name).is_file()]
    for top in SHIPPED:
      for folder, dirs, files in os.walk(ROOT / top):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        names += [str((Path(folder) / f).relative_to(ROOT)) for f in files]
  for name in names:
    path = ROOT / name
    if path.is_file() and path.suffix not in BINARY:
      yield name, path


def test_nothing_in_the_repository_names_the_workspace_folder_beside_it():
  hits = []
  for name, path in _shipped_files():
    try:
      text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
      continue
    hits += [
      f"{name}:{i}"
      for i, line in enumerate(text.splitlines(), 1)
      if any(s in line for s in OUTSIDE)
    ]
  assert not hits, f"these lines reach outside the repository: {hits}"


def test_the_bundled_benchmarks_are_there_with_their_licence():
  assert benchmark_names() == ["aime25", "gsm8k", "humaneval", "math500", "mbpp", "mt-bench"]
  assert (BENCHMARK_DIR / "LICENSE.DeepSpec").read_text().startswith("MIT License")
  assert sum(1 for _ in open(benchmark_path("gsm8k"), encoding="utf-8")) == 1319
  with pytest.raises(FileNotFoundError, match="no bundled benchmark 'nope'; bundled: aime25"):
    benchmark_path("nope")


@pytest.mark.slow
def test_the_wheel_ships_the_benchmark_files(tmp_path):
  # Built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
  src = tmp_path / "src"
  shutil.copytree(
    ROOT / "dspark_jax", src / "dspark_jax", ignore=shutil.ignore_patterns("__pycache__")
  )
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(ROOT / name, src / name)
  out = subprocess.run(
    [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w"]
    + [str(tmp_path), str(src)],
    capture_output=True,
    text=True,
    check=False,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  (wheel,) = tmp_path.glob("dspark_jax-*.whl")
  names = set(zipfile.ZipFile(wheel).namelist())
  for file in [*(f"{n}.jsonl" for n in benchmark_names()), "LICENSE.DeepSpec", "README.md"]:
    assert f"dspark_jax/benchmarks/{file}" in names
