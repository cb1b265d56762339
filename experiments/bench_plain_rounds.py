"""What the speculative loop's plain rounds cost next to `generate`'s plain step.

    python experiments/bench_plain_rounds.py [--temperature 0] [--repeats 2]

SmolLM2-135M with the committed DSpark drafter, batch 1, 96 new tokens of the first 4 GSM8K
prompts, systems in rotating order per prompt, decode milliseconds per generated token
(prefill and compilation excluded):
  plain         `decoding.generate`
  fixed-0       the speculative loop with drafting off (`scheduler.Fixed(0)`)
  alg1-costly   Algorithm 1 with a proposal priced at 10 s: plain rounds and probes only
  alg1          Algorithm 1 on this CPU's typical costs (the drafter still rarely pays)
Prints one line per system.
"""

from __future__ import annotations

import argparse

import jax
from bench_schedule import domain_prompts  # experiments/bench_schedule.py, on sys.path

WIDTHS, VERIFY = (1, 2, 3, 4, 8), (0.04, 0.058, 0.063, 0.081, 0.098)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--drafter", default="data/drafters/smollm2_135m_dspark")
  parser.add_argument("--temperature", type=float, default=0.0)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--max-new-tokens", type=int, default=96)
  args = parser.parse_args(argv)

  from dspark_jax.decoding import scheduler
  from dspark_jax.decoding.generate import GenerateConfig, generate
  from dspark_jax.decoding.loop import SpecConfig, speculative_generate
  from dspark_jax.decoding.sampling import SamplingParams
  from dspark_jax.io.deepspec import load_drafter
  from dspark_jax.io.load import load_model

  model = load_model("smollm2-135m")
  params = jax.device_put(model.params)
  config, tok = model.config, model.tokenizer
  drafter, dparams = load_drafter(args.drafter, config, params)
  prompts = domain_prompts(tok, "gsm8k", 4)
  n, sampling = args.max_new_tokens, SamplingParams(args.temperature)

  def spec(policy):
    return lambda p: speculative_generate(
      params,
      config,
      drafter,
      dparams,
      [p],
      SpecConfig(n, sampling),
      cache_capacity=1024,
      schedule=policy,
    )

  systems = {
    "plain": lambda p: generate(
      params, config, [p], GenerateConfig(n, sampling), cache_capacity=1024
    ),
    "fixed-0": spec(scheduler.Fixed(0)),
    "alg1-costly": spec(scheduler.Algorithm1(scheduler.CostTable(WIDTHS, VERIFY, 10.0))),
    "alg1": spec(scheduler.Algorithm1(scheduler.CostTable(WIDTHS, VERIFY, 0.035))),
  }
  for run in systems.values():
    run(prompts[0])  # compile
  totals = {k: [0, 0.0] for k in systems}
  names = list(systems)
  for _ in range(args.repeats):
    for i, p in enumerate(prompts):
      for name in names[i % len(names) :] + names[: i % len(names)]:
        res = systems[name](p)
        totals[name][0] += res.num_tokens
        totals[name][1] += res.decode_seconds
  for name, (tokens, seconds) in totals.items():
    print(f"{name}: {1000 * seconds / tokens:.2f} ms/token ({tokens} tokens)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
