"""The evaluation harness behind `dspark-jax eval`: a target and a drafter over benchmark files.

Each benchmark's prompts (first turns, seeded shuffle, capped) are decoded speculatively in
batches with full proposals; their round counts are pooled per benchmark into the metrics of
`eval.acceptance` (tau, verify rate, prefix survival, conditional acceptance per slot). Domains
(math, code, chat) are macro averages over their benchmarks, and "all" is the macro average over
domains, as in the paper's tables.

Sampling draws from the full distribution at the given temperature (no top-k/top-p), keyed by
(seed, prompt index, position): a prompt's output does not depend on its batch.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dspark_jax.eval.acceptance import acceptance_metrics
from dspark_jax.eval.calibration import full_rounds

# The paper's per-benchmark prompt caps (docs/method.md section 4); other files are not capped.
PAPER_CAPS = {
  "gsm8k": 500,
  "math500": 500,
  "aime25": 30,
  "mbpp": 256,
  "humaneval": 164,
  "mt-bench": 80,
}
COUNTS = ("rounds", "counted", "committed", "admitted", "accepted", "reached")


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  temperature: float = 1.0
  max_new_tokens: int = 256
  batch_size: int = 8
  seed: int = 0

  def __post_init__(self):
    if not 0 <= self.temperature < float("inf"):  # also NaN
      raise ValueError(f"temperature must be >= 0 and finite, got {self.temperature}")
    if self.max_new_tokens < 1 or self.batch_size < 1:
      raise ValueError("max_new_tokens and batch_size must be >= 1")


def select(items: Sequence[Any], cap: int | None, seed: int, name: str) -> list[Any]:
  """A seeded shuffle of `items` (per benchmark name), then the first `cap` (all if None)."""
  rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
  order = rng.permutation(len(items))
  chosen = [items[i] for i in order]
  return chosen if cap is None else chosen[:cap]


def run_benchmark(
  target_params,
  target_config,
  drafter,
  draft_params,
  prompts: Sequence[Sequence[int]],
  settings: EvalSettings,
  *,
  stop_ids: tuple[int, ...] = (),
  pad_id: int = 0,
  progress=None,
  rounds: bool = False,
  schedule=None,
) -> dict:
  """Metrics of one benchmark's token-id prompts: `acceptance_metrics` plus prompts, generated
  tokens and seconds (wall time, compilation included). With `rounds`, also "rounds_trace":
  NumPy (confidence [N, G], accepted [N]) of every round that verified all G slots, and
  "rounds_batch" [N]: the index of each round's first prompt's batch (held-out splits keep
  whole prompts on one side). `schedule`
  is a `decoding.scheduler` policy (None: every slot verified, what acceptance is defined on).
  """
  from dspark_jax.decoding.loop import SpecConfig, speculative_generate
  from dspark_jax.decoding.sampling import SamplingParams

  if not prompts:
    raise ValueError("no prompts to evaluate")
  spec = SpecConfig(
    settings.max_new_tokens,
    SamplingParams(settings.temperature, 0, 1.0),
    stop_ids=tuple(stop_ids),
    pad_id=pad_id,
  )
  counts = {k: [] for k in COUNTS}
  conf, acc, batch_of = [], [], []
  tokens = verified = drafted = num_rounds = 0
  start = time.perf_counter()
  for first in range(0, len(prompts), settings.batch_size):
    chunk = list(prompts[first : first + settings.batch_size])
    result = speculative_generate(
      target_params,
      target_config,
      drafter,
      draft_params,
      chunk,
      spec,
      seed=settings.seed,
      request_ids=list(range(first, first + len(chunk))),
      trace=rounds,
      schedule=schedule,
    )
    verified += int(result.admitted.sum())
    drafted += int(result.drafted.sum())
    num_rounds += int(result.rounds.sum())
    if rounds:
      c, a = full_rounds(result.trace, drafter.draft_len)
      conf.append(c)
      acc.append(a)
      batch_of.append(np.full(len(a), first // settings.batch_size))
    for k in COUNTS:
      counts[k].append(np.asarray(getattr(result, k)))
    tokens += result.num_tokens
    if progress is not None:
      progress.update(len(chunk))
  metrics = acceptance_metrics(*(np.concatenate(counts[k]) for k in COUNTS))
  out = {
    **metrics,
    "prompts": len(prompts),
    "new_tokens": tokens,
    "seconds": time.perf_counter() - start,
    "verified_per_round": verified / max(num_rounds, 1),
    "drafted_share": drafted / max(num_rounds, 1),
  }
  if rounds:
    out["rounds_trace"] = (np.concatenate(conf), np.concatenate(acc))
    out["rounds_batch"] = np.concatenate(batch_of)
  return out


def _mean_defined(rows: list[list]) -> list:
  """Per-slot mean over the rows whose value is defined (not None); None where none is."""
  out = []
  for column in zip(*rows, strict=True):
    values = [x for x in column if x is not None]
    out.append(float(np.mean(values)) if values else None)
  return out


def _cell(x, digits: int) -> str:
  return "n/a" if x is None else f"{x:.{digits}f}"


def macro_averages(per_benchmark: dict[str, dict], domain_of) -> dict[str, dict]:
  """{domain: averages over its benchmarks} and "all": the average over domains. Averaged:
  tau, verify rate, and the per-slot prefix survival and conditional acceptance (the latter over
  the benchmarks where the slot was reached)."""

  def average(rows: list[dict]) -> dict:
    return {
      "benchmarks": len(rows),
      "tau": float(np.mean([r["tau"] for r in rows])),
      "verify_rate": float(np.mean([r["verify_rate"] for r in rows])),
      "prefix_survival": np.mean([r["prefix_survival"] for r in rows], 0).tolist(),
      "conditional_acceptance": _mean_defined([r["conditional_acceptance"] for r in rows]),
    }

  domains: dict[str, list[dict]] = {}
  for name, row in per_benchmark.items():
    domains.setdefault(domain_of(name), []).append(row)
  out = {d: average(rows) for d, rows in sorted(domains.items())}
  if out:
    out["all"] = average(list(out.values()))
  return out


def write_results(out_dir: str | Path, record: dict) -> Path:
  """`eval.json` (everything) and `eval.csv` (one line per benchmark and per domain)."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  tmp = out / "eval.json.tmp"
  tmp.write_text(json.dumps(record, indent=2) + "\n")
  tmp.replace(out / "eval.json")
  slots = len(next(iter(record["benchmarks"].values()))["prefix_survival"])
  with open(out / "eval.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(
      ["kind", "name", "tau", "verify_rate"]
      + [f"survival_{k + 1}" for k in range(slots)]
      + [f"conditional_{k + 1}" for k in range(slots)]
    )
    for kind, rows in (("benchmark", record["benchmarks"]), ("domain", record["domains"])):
      for name, r in rows.items():
        w.writerow(
          [kind, name, f"{r['tau']:.4f}", f"{r['verify_rate']:.4f}"]
          + [f"{x:.4f}" for x in r["prefix_survival"]]
          + ["" if x is None else f"{x:.4f}" for x in r["conditional_acceptance"]]
        )
  return out / "eval.json"


def table(record: dict) -> str:
  """A Markdown table: tau and the first three conditional acceptances per benchmark/domain."""
  lines = [
    "| benchmark / domain | prompts | tau | committed per verified slot | conditional acceptance, slots 1-3 |",
    "|---|---|---|---|---|",
  ]
  for name, r in record["benchmarks"].items():
    cond = " / ".join(_cell(x, 2) for x in r["conditional_acceptance"][:3])
    lines.append(f"| {name} | {r['prompts']} | {r['tau']:.3f} | {r['verify_rate']:.3f} | {cond} |")
  for name, r in record["domains"].items():
    cond = " / ".join(_cell(x, 2) for x in r["conditional_acceptance"][:3])
    lines.append(f"| **{name}** (macro) | | {r['tau']:.3f} | {r['verify_rate']:.3f} | {cond} |")
  return "\n".join(lines)
