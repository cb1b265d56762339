"""The speed table: tokens/s of speculative decoding against plain decoding, same prompts, same run.

    python experiments/speed_table.py \
      --drafter dspark=data/drafters/smollm2_135m_dspark \
      --drafter dflash=runs/smollm2_dflash/drafter --drafter eagle3=runs/smollm2_eagle3/drafter \
      --drafter ngram=ngram --drafter dspark_g1=data/drafters/smollm2_135m_dspark@1 \
      --batch 1 8 --temperature 0 1 --max-new-tokens 64 --out results/speed

SmolLM2-135M-Instruct (bundled GGUF, float32 on CPU), chat template, first turns. Domains and
their benchmarks: math (gsm8k, math500), code (humaneval, mbpp), chat (mt-bench); prompts are
the first of each benchmark's seeded shuffle (`eval.harness.select`, seed 0), split evenly over
a domain's benchmarks. For every batch of prompts, plain decoding and each drafter run back to
back, in an order that rotates from batch to batch, so slow phases of a shared machine hit every
system alike. Tokens/s = generated tokens / wall seconds of the call, prefill included,
compilation excluded (the loops are compiled ahead of the timed call). Speedup = a drafter's
tokens/s over plain decoding's on the same prompts. At T = 0 the speculative output must equal
plain decoding's token for token; the run checks it and records the count.

Writes `speed.json` (per setting, domain and benchmark: tokens, seconds, tokens/s, speedup, tau)
and `speed.md` (the table), both rewritten after every batch so a killed run keeps its rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import jax
import numpy as np

from dspark_jax.benchmarks import BENCHMARK_DIR

DOMAIN_BENCHMARKS = {
  "math": ("gsm8k", "math500"),
  "code": ("humaneval", "mbpp"),
  "chat": ("mt-bench",),
}


def domain_prompts(
  tok, data_dir: Path, domain: str, count: int, seed: int
) -> list[tuple[str, list]]:
  """(benchmark, token ids) of `count` prompts of a domain, split evenly over its benchmarks."""
  from dspark_jax.data.prompts import load_benchmark
  from dspark_jax.eval.harness import select

  names = DOMAIN_BENCHMARKS[domain]
  out = []
  for i, name in enumerate(names):
    share = count // len(names) + (i < count % len(names))
    prompts = select(load_benchmark(data_dir / f"{name}.jsonl"), share, seed, name)
    out += [(name, tok.encode_chat(p.chat())) for p in prompts]
  return out


def add(totals: dict, key: str, system: str, tokens: int, seconds: float, rounds=0, committed=0):
  row = totals.setdefault(key, {}).setdefault(
    system, dict.fromkeys(("tokens", "seconds", "rounds", "committed"), 0)
  )
  row["tokens"] += tokens
  row["seconds"] += seconds
  row["rounds"] += int(rounds)
  row["committed"] += int(committed)


def summarise(totals: dict) -> dict:
  """tokens/s per system, speedup over "plain" and tau, per key (domain or benchmark)."""
  out = {}
  for key, systems in totals.items():
    plain = systems["plain"]["tokens"] / systems["plain"]["seconds"]
    out[key] = {}
    for system, r in systems.items():
      speed = r["tokens"] / r["seconds"]
      out[key][system] = {
        **r,
        "tokens_per_second": speed,
        "speedup": speed / plain,
        "tau": r["committed"] / r["rounds"] if r["rounds"] else None,
      }
  return out


def table(record: dict, drafters: list[str]) -> str:
  lines = [
    "| batch | T | domain | plain tok/s | "
    + " | ".join(f"{d} tok/s (speedup, tau)" for d in drafters)
    + " |",
    "|---" * (4 + len(drafters)) + "|",
  ]
  for setting in record["settings"]:
    for key, systems in setting["summary"].items():
      cells = [
        f"{s['tokens_per_second']:.1f} ({s['speedup']:.2f}x, {s['tau']:.2f})"
        for s in (systems[d] for d in drafters if d in systems)
      ]
      lines.append(
        f"| {setting['batch']} | {setting['temperature']:g} | {key} | "
        f"{systems['plain']['tokens_per_second']:.1f} | " + " | ".join(cells) + " |"
      )
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--drafter",
    action="append",
    required=True,
    metavar="NAME=FOLDER|ngram[@G]",
    help="@G: verify only the first G slots",
  )
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--temperature", type=float, nargs="+", default=[0.0, 1.0])
  parser.add_argument("--domains", nargs="+", default=list(DOMAIN_BENCHMARKS))
  parser.add_argument("--batches-per-domain", type=int, default=1, help="batches per domain")
  parser.add_argument("--single-prompts", type=int, default=4, help="prompts per domain at batch 1")
  parser.add_argument("--max-new-tokens", type=int, default=64)
  parser.add_argument("--data-dir", type=Path, default=BENCHMARK_DIR)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", type=Path, default=Path("results/speed"))
  args = parser.parse_args(argv)

  from dspark_jax.decoding.generate import GenerateConfig, generate
  from dspark_jax.decoding.loop import SpecConfig, speculative_generate
  from dspark_jax.decoding.sampling import SamplingParams
  from dspark_jax.io.deepspec import open_drafter
  from dspark_jax.io.load import load_model

  model = load_model(args.model)
  params = jax.device_put(model.params)
  tok = model.tokenizer
  drafters = {}
  for item in args.drafter:
    name, _, spec = item.partition("=")
    source, _, slots = spec.partition("@")
    drafters[name] = open_drafter(
      source, model.config, params, verify_slots=int(slots) if slots else None
    )
  systems = ["plain", *drafters]
  record = {
    "command": "python experiments/speed_table.py " + " ".join(argv or sys.argv[1:]),
    "machine": f"{platform.machine()} {os.cpu_count()} cores, jax {jax.__version__}, "
    f"{jax.devices()[0].platform}",
    "settings": [],
  }
  args.out.mkdir(parents=True, exist_ok=True)
  # One KV capacity for every call, so each system's decode loop compiles once per batch size
  # and temperature (only the prefill recompiles per prompt width).
  counts = {b: args.single_prompts if b == 1 else b * args.batches_per_domain for b in args.batch}
  longest = max(
    len(ids)
    for count in set(counts.values())
    for d in args.domains
    for _, ids in domain_prompts(tok, args.data_dir, d, count, args.seed)
  )
  capacity = -(-(longest + args.max_new_tokens + 8 + 1) // 64) * 64
  record["cache_capacity"] = capacity
  turn = 0
  for batch in args.batch:
    for temperature in args.temperature:
      sampling = SamplingParams(temperature)
      stops = dict(stop_ids=tok.stop_ids, pad_id=tok.pad_id or 0)
      gen = GenerateConfig(args.max_new_tokens, sampling, **stops)
      spec = SpecConfig(args.max_new_tokens, sampling, **stops)
      totals: dict = {}
      identical = [0, 0]
      setting = {"batch": batch, "temperature": temperature, "summary": {}, "identical": identical}
      record["settings"].append(setting)
      for domain in args.domains:
        prompts = domain_prompts(tok, args.data_dir, domain, counts[batch], args.seed)
        for start in range(0, len(prompts), batch):
          group = prompts[start : start + batch]
          ids = [p for _, p in group]
          order = systems[turn % len(systems) :] + systems[: turn % len(systems)]
          turn += 1
          outputs = {}
          for system in order:
            if system == "plain":
              res = generate(
                params, model.config, ids, gen, seed=args.seed, cache_capacity=capacity
              )
              extra = [(0, 0)] * len(ids)
            else:
              drafter, draft_params = drafters[system]
              res = speculative_generate(
                params,
                model.config,
                drafter,
                draft_params,
                ids,
                spec,
                seed=args.seed,
                cache_capacity=capacity,
              )
              extra = list(zip(res.rounds, res.committed, strict=True))
            outputs[system] = res.tokens
            seconds = res.prefill_seconds + res.decode_seconds
            for key in (domain, *(name for name, _ in group[:1] if batch == 1)):
              add(totals, key, system, res.num_tokens, seconds, *np.sum(extra, axis=0))
          if temperature == 0:
            for system in drafters:
              identical[0] += sum(
                a == b for a, b in zip(outputs[system], outputs["plain"], strict=True)
              )
              identical[1] += len(ids)
          setting["summary"] = summarise(totals)
          (args.out / "speed.json").write_text(json.dumps(record, indent=2) + "\n")
          (args.out / "speed.md").write_text(table(record, list(drafters)) + "\n")
          print(
            f"batch {batch} T {temperature:g} {domain} prompts {start + len(group)}", flush=True
          )
  print(table(record, list(drafters)))
  if any(s["identical"][0] != s["identical"][1] for s in record["settings"]):
    print("WARNING: greedy speculative output differed from plain decoding", flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
