"""What a serving-engine round costs next to the same round inside one `while_loop`.

    python experiments/engine_overhead.py --out results/engine_overhead.json

One prompt, greedy, 64 new tokens, SmolLM2-135M with the committed DSpark drafter. Per token or
round, in one process and in turn: `generate` (plain decoding), the speculative loop with
drafting off (`Fixed(0)`) in one `while_loop`, and the engine's tick (one jitted round, then the
new tokens read back) with `Fixed(0)` and with Algorithm 1 (which declines to draft with this
drafter), at 1 slot and at 8 slots (8 copies of the request). Medians over the ticks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from dspark_jax.cli.schedule import drafter_desc
from dspark_jax.decoding import profile, scheduler
from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.io.deepspec import load_drafter
from dspark_jax.io.load import load_model
from dspark_jax.serving import engine as serving
from dspark_jax.serving.server import warm_up

DRAFTER = "data/drafters/smollm2_135m_dspark"


def engine_ticks(params, model, drafter, dparams, prompt, slots, policy, tokens):
  eng = serving.Engine(
    params,
    model.config,
    drafter,
    dparams,
    slots=slots,
    max_context=512,
    max_tokens=tokens,
    schedule=policy,
  )
  warm_up(eng, model.tokenizer, (64,))
  for i in range(slots):
    eng.submit(serving.Request(tuple(prompt), tokens, SamplingParams(), seed=i))
  eng.step()  # admission and the first round
  ticks = []
  while eng.pending:
    start = time.perf_counter()
    eng.step()
    ticks.append(time.perf_counter() - start)
  return 1e3 * float(np.median(ticks))


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--tokens", type=int, default=64)
  ap.add_argument("--out", default="results/engine_overhead.json")
  args = ap.parse_args()
  model = load_model("smollm2-135m")
  params = jax.device_put(model.params)
  drafter, dparams = load_drafter(DRAFTER, model.config, params)
  prompt = model.tokenizer.encode_chat(
    [{"role": "user", "content": "Explain why the sky is blue."}]
  )
  key = profile.profile_key(model.source, DRAFTER, drafter_desc(drafter))
  n = args.tokens
  rows = {}
  for repeat in range(2):  # the second pass is the one reported; the first warms everything
    r = generate(params, model.config, [prompt], GenerateConfig(n))
    rows["generate, ms per token"] = 1e3 * r.decode_seconds / max(r.num_tokens - 1, 1)
    r = speculative_generate(
      params, model.config, drafter, dparams, [prompt], SpecConfig(n), schedule=scheduler.Fixed(0)
    )
    rows["speculative loop Fixed(0), ms per round"] = 1e3 * r.decode_seconds / r.rounds.sum()
    for slots in (1, 8):
      cost, _, _ = profile.load_or_measure(params, model.config, drafter, dparams, slots, key)
      for name, policy in (("Fixed(0)", scheduler.Fixed(0)), ("alg1", scheduler.Algorithm1(cost))):
        rows[f"engine tick, {slots} slot(s), {name}, ms"] = engine_ticks(
          params, model, drafter, dparams, prompt, slots, policy, n
        )
      jax.clear_caches()
    print(f"pass {repeat}: " + json.dumps(rows, indent=1), file=sys.stderr, flush=True)
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "ms": rows}, indent=1))
  for k, v in rows.items():
    print(f"| {k} | {v:.1f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
