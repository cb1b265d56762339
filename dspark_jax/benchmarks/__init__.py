"""Benchmark prompt files shipped with the package (package data, so `pip install` has them).

Each `<name>.jsonl` holds one JSON object per line with a `turns` list of user turns; the
evaluation uses the first. The files are DeepSpec's conversions of public benchmarks (MIT
licence in `LICENSE.DeepSpec` beside them); README.md lists sources and record counts. Any file
of the same format can be evaluated by path, so new benchmarks need no code change.
"""

from __future__ import annotations

from pathlib import Path

BENCHMARK_DIR = Path(__file__).resolve().parent


def benchmark_names() -> list[str]:
  """Names of the bundled benchmarks (file stems), sorted."""
  return sorted(p.stem for p in BENCHMARK_DIR.glob("*.jsonl"))


def benchmark_path(name: str) -> Path:
  """The bundled file of benchmark `name` (e.g. "gsm8k").

  Raises:
    FileNotFoundError: no bundled benchmark has that name (the bundled ones are listed).
  """
  path = BENCHMARK_DIR / f"{name}.jsonl"
  if not path.is_file():
    raise FileNotFoundError(
      f"no bundled benchmark {name!r}; bundled: {', '.join(benchmark_names())} "
      "(or pass a .jsonl path)"
    )
  return path
