"""Verification schedules against plain decoding: tokens/s, verified length, drafting rounds.

    python experiments/bench_schedule.py --batch 1 8 --temperature 0 1 --prompts 8 \
      --max-new-tokens 96 --out results/bench_schedule.json

SmolLM2-135M-Instruct (bundled GGUF, float32) with the committed DSpark drafter; prompts are the
first `--prompts` of the math / code / chat benchmark files shipped with the package (gsm8k,
humaneval, mt-bench), chat template applied. For each batch size, temperature and domain, every
system decodes the same prompts back to back, in a rotating order per batch (at batch 1, one
prompt per call; at batch B, B prompts per call):
  plain        `decoding.generate` (no drafter)
  fixed-0      the speculative loop with no drafting at all: what plain rounds cost inside it
  fixed-7      every drafted slot verified (the loop's default)
  fixed-1      one slot per round (MTP-1-like)
  threshold    leading slots with c_k >= --threshold
  alg1         Algorithm 1 on the machine's cost profile (it may skip drafting)
  async        its production variant
Tokens/s = generated tokens / wall seconds of the calls (prefill included, compilation
excluded). The cost profile is loaded from --profile or measured first (and saved there).
Greedy outputs are compared with plain decoding's (they must be identical). Writes one JSON file
and prints a Markdown table.
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

DOMAINS = {"math": "gsm8k", "code": "humaneval", "chat": "mt-bench"}
SYSTEMS = ("plain", "fixed-0", "fixed-7", "fixed-1", "threshold", "alg1", "async")
CAPACITY = 1024  # one cache size for every call, so each system compiles once per batch size


def domain_prompts(tok, name: str, n: int) -> list[list[int]]:
  from dspark_jax.benchmarks import benchmark_path

  rows = [json.loads(line) for line in benchmark_path(name).read_text().splitlines() if line]
  return [tok.encode_chat([{"role": "user", "content": r["turns"][0]}])[:400] for r in rows[:n]]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--drafter", default="data/drafters/smollm2_135m_dspark")
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--temperature", type=float, nargs="+", default=[0.0, 1.0])
  parser.add_argument("--prompts", type=int, default=8, help="prompts per domain")
  parser.add_argument(
    "--prompts-b1", type=int, default=4, help="of which batch 1 decodes the first N, one by one"
  )
  parser.add_argument("--max-new-tokens", type=int, default=96)
  parser.add_argument("--threshold", type=float, default=0.5)
  parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
  parser.add_argument("--profile", default="results/profile_smollm2_dspark.json")
  parser.add_argument("--out", default="results/bench_schedule.json")
  args = parser.parse_args(argv)

  from dspark_jax.decoding import profile, scheduler
  from dspark_jax.decoding.generate import GenerateConfig, clear_compiled, generate
  from dspark_jax.decoding.loop import SpecConfig, speculative_generate
  from dspark_jax.decoding.sampling import SamplingParams
  from dspark_jax.io.deepspec import load_drafter
  from dspark_jax.io.load import load_model

  model = load_model("smollm2-135m")
  params = jax.device_put(model.params)
  config, tok = model.config, model.tokenizer
  drafter, dparams = load_drafter(args.drafter, config, params)
  key = profile.profile_key(model.source, args.drafter, f"dspark, {drafter.draft_len} slots")
  record = {
    "command": "python experiments/bench_schedule.py "
    + " ".join(sys.argv[1:] if argv is None else argv),
    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
    "jax": jax.__version__,
    "rows": [],
  }
  prompts = {d: domain_prompts(tok, name, args.prompts) for d, name in DOMAINS.items()}
  for b in args.batch:
    costs, path, measured = profile.load_or_measure(
      params, config, drafter, dparams, b, key, path=args.profile
    )
    print(f"batch {b}: costs {'measured, saved to' if measured else 'from'} {path}", flush=True)
    policies = {
      "fixed-0": scheduler.Fixed(0),
      "fixed-7": None,
      "fixed-1": scheduler.Fixed(1),
      "threshold": scheduler.Threshold(args.threshold),
      "alg1": scheduler.Algorithm1(costs),
      "async": scheduler.Async(costs),
    }
    for temp in args.temperature:
      # Every (batch, temperature) compiles its own loops; dropping the previous ones keeps the
      # process's JIT memory bounded (one run holding about 30 compiled loops died in LLVM's
      # "Unable to allocate section memory").
      clear_compiled()
      sampling = SamplingParams(temp)
      spec = SpecConfig(
        args.max_new_tokens, sampling, stop_ids=tok.stop_ids, pad_id=tok.pad_id or 0
      )
      for domain, items in prompts.items():
        items = items[: args.prompts_b1] if b == 1 else items
        groups = [items[i : i + b] for i in range(0, len(items) - b + 1, b)]
        totals = {
          s: {"tokens": 0, "seconds": 0.0, "rounds": 0, "verified": 0, "drafted": 0, "committed": 0}
          for s in args.systems
        }
        outputs = {s: [] for s in args.systems}
        for gi, group in enumerate(groups):
          order = args.systems[gi % len(args.systems) :] + args.systems[: gi % len(args.systems)]
          for system in order:
            t = totals[system]
            if system == "plain":
              gen = GenerateConfig(
                args.max_new_tokens, sampling, stop_ids=tok.stop_ids, pad_id=tok.pad_id or 0
              )
              res = generate(params, config, group, gen, seed=gi, cache_capacity=CAPACITY)
            else:
              res = speculative_generate(
                params,
                config,
                drafter,
                dparams,
                group,
                spec,
                seed=gi,
                cache_capacity=CAPACITY,
                schedule=policies[system],
              )
              t["rounds"] += int(res.rounds.sum())
              t["verified"] += int(res.admitted.sum())
              t["drafted"] += int(res.drafted.sum())
              t["committed"] += int(res.committed.sum())
            t["tokens"] += res.num_tokens
            t["seconds"] += res.prefill_seconds + res.decode_seconds
            outputs[system] += res.tokens
        base = totals["plain"]["tokens"] / totals["plain"]["seconds"] if "plain" in totals else None
        for system, t in totals.items():
          tps = t["tokens"] / max(t["seconds"], 1e-9)
          row = dict(
            batch=b,
            temperature=temp,
            domain=domain,
            system=system,
            tokens=t["tokens"],
            tokens_per_second=tps,
            vs_plain=None if base is None else tps / base,
            verified_per_round=t["verified"] / max(t["rounds"], 1) if t["rounds"] else None,
            drafted_share=t["drafted"] / max(t["rounds"], 1) if t["rounds"] else None,
            tau=t["committed"] / max(t["rounds"], 1) if t["rounds"] else None,
            identical_to_plain=(outputs[system] == outputs["plain"])
            if temp == 0 and "plain" in outputs
            else None,
          )
          record["rows"].append(row)
          print(json.dumps(row), flush=True)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")  # after every cell: nothing is lost
  print(markdown(record))
  return 0


def markdown(record) -> str:
  lines = [
    "| B | T | domain | system | tokens/s | vs plain | verified / round | drafted | tau | greedy = plain |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  fmt = lambda x, spec: "" if x is None else format(x, spec)
  for r in record["rows"]:
    same = "" if r["identical_to_plain"] is None else ("yes" if r["identical_to_plain"] else "NO")
    lines.append(
      f"| {r['batch']} | {r['temperature']:g} | {r['domain']} | {r['system']} | "
      f"{r['tokens_per_second']:.1f} | {fmt(r['vs_plain'], '.2f')} | "
      f"{fmt(r['verified_per_round'], '.2f')} | {fmt(r['drafted_share'], '.0%')} | "
      f"{fmt(r['tau'], '.2f')} | {same} |"
    )
  return "\n".join(lines)


if __name__ == "__main__":
  np.set_printoptions(precision=3)
  raise SystemExit(main())
