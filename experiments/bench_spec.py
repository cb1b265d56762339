"""N-gram speculative decoding vs plain decoding, ours and HF transformers', same prompts, same run.

    python experiments/bench_spec.py --per-benchmark 30 --max-new-tokens 256 --draft-len 4

SmolLM2-135M-Instruct (bundled GGUF, float32), greedy, batch 1, chat template; prompts = the first
N of gsm8k, humaneval and mt-bench bundled with the package (dspark_jax/benchmarks). For every prompt, four systems run
back to back in a rotating order: our plain decoding, our n-gram speculative decoding, HF
`generate`, HF prompt-lookup decoding (`prompt_lookup_num_tokens`). Tokens/s = generated tokens
/ wall seconds of the call (prefill included; our compilation excluded). Also measured: tokens
per round of our n-gram drafter (bonus included) and the loop overhead: the compiled loop's decode time
divided by the same rounds' work (drafter `propose`, target forward, `verify`) jitted and timed
alone on the same shapes (`--overhead-only` measures just that, into bench_spec_overhead.json).

Writes results/bench_spec.jsonl (one line per prompt, written as it goes) and
results/bench_spec.json (the summary).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

from dspark_jax.benchmarks import BENCHMARK_DIR
from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.loop import SpecConfig, spec_prefill, speculative_generate
from dspark_jax.decoding.verify import verify
from dspark_jax.drafters.ngram import NgramDrafter
from dspark_jax.io.load import load_model
from dspark_jax.models.kv_cache import KVCache
from dspark_jax.models.transformer import forward

ROOT = Path(__file__).resolve().parents[1]
EVAL = BENCHMARK_DIR
BENCHMARKS = ("gsm8k", "humaneval", "mt-bench")


def load_prompts(per: int, benchmarks=BENCHMARKS) -> list[tuple[str, str]]:
  out = []
  for name in benchmarks:
    with open(EVAL / f"{name}.jsonl") as f:
      rows = [json.loads(line) for line in f if line.strip()]
    out += [(name, row["turns"][0]) for row in rows[:per]]
  return out


def hf_run(hf, ids, max_new, eos, lookup: int | None):
  x = torch.tensor([ids])
  kwargs = {"prompt_lookup_num_tokens": lookup} if lookup else {}
  start = time.perf_counter()
  with torch.no_grad():
    out = hf.generate(x, max_new_tokens=max_new, do_sample=False, pad_token_id=eos, **kwargs)
  seconds = time.perf_counter() - start
  row = out[0, len(ids) :].tolist()
  return (row[: row.index(eos) + 1] if eos in row else row), seconds


def time_alone(fn, *args, reps=30) -> float:
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(reps):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / reps


def loop_overhead(params, config, drafter, prompt, spec):
  """Loop time / the same rounds' work timed alone.

  A round either verifies a (G + 1)-token block or, when no row has a proposal, runs a one-token
  step; the loop's statistics say how many rounds were of each kind (slot 0 admitted or not).
  Expected time = sum over rounds of propose + (block or one-token) target forward + verify,
  each jitted and timed alone on the same shapes (cache filled to the prompt's length).
  """
  speculative_generate(params, config, drafter, None, [prompt], spec)  # warm: first runs pay more
  result = speculative_generate(params, config, drafter, None, [prompt], spec)
  rounds = int(result.rounds.sum())
  block_rounds = int(result.admitted[:, 0].sum())
  capacity = -(-(len(prompt) + spec.max_new_tokens + drafter.draft_len + 1) // 64) * 64
  width = -(-len(prompt) // 16) * 16
  padded = np.zeros((1, width), np.int32)
  padded[0, : len(prompt)] = prompt
  state = jax.jit(spec_prefill, static_argnames=("target_config", "drafter", "spec"))(
    params,
    None,
    padded,
    np.asarray([len(prompt)], np.int32),
    KVCache.create(config, 1, capacity),
    np.zeros(1, np.int32),
    np.uint32(0),
    np.full(1, drafter.draft_len, np.int32),
    target_config=config,
    drafter=drafter,
    spec=spec,
  )
  pos = state.cache.lengths

  @jax.jit
  def propose(s):
    return drafter.propose(
      None, s.draft_state, s.anchor, pos, spec.sampling, s.seed, s.request_ids
    )[0]

  proposal = propose(state)

  def verify_step(params, s, p, width):
    block = jnp.concatenate([s.anchor[:, None], p.tokens], axis=1)[:, :width]
    positions = pos[:, None] + jnp.arange(width)[None]
    logits = forward(params, block, positions, s.cache, config=config).logits
    logits = jnp.repeat(logits, drafter.draft_len + 1, axis=1) if width == 1 else logits
    return verify(
      logits,
      p.tokens,
      p.logits,
      jnp.full(1, drafter.draft_len),
      spec.sampling,
      s.seed,
      s.request_ids,
      pos + 1,
    )

  t_propose = time_alone(propose, state)
  # params are passed, not closed over: as constants XLA would fold them and time something else.
  block = jax.jit(functools.partial(verify_step, width=drafter.draft_len + 1))
  step = jax.jit(functools.partial(verify_step, width=1))
  t_block = time_alone(block, params, state, proposal)
  t_step = time_alone(step, params, state, proposal)
  expected = block_rounds * (t_propose + t_block) + (rounds - block_rounds) * (t_propose + t_step)
  return {
    "rounds": rounds,
    "block_rounds": block_rounds,
    "propose_ms": t_propose * 1e3,
    "block_verify_ms": t_block * 1e3,
    "one_token_step_ms": t_step * 1e3,
    "loop_decode_s": result.decode_seconds,
    "expected_s": expected,
    "overhead_ratio": result.decode_seconds / expected,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--per-benchmark", type=int, default=30)
  parser.add_argument("--max-new-tokens", type=int, default=256)
  parser.add_argument("--draft-len", type=int, default=4)
  parser.add_argument("--hf-lookup", type=int, default=10)
  parser.add_argument(
    "--benchmarks",
    default=",".join(BENCHMARKS),
    help="comma-separated subset of " + ",".join(BENCHMARKS),
  )
  parser.add_argument("--out", default=str(ROOT / "results" / "bench_spec"))
  parser.add_argument(
    "--overhead-only",
    action="store_true",
    help="only measure the loop overhead (on the first prompt of each benchmark)",
  )
  args = parser.parse_args()

  import transformers as tf

  model = load_model("smollm2-135m")
  params = jax.device_put(model.params)
  tok = model.tokenizer
  eos = 2
  hf = tf.AutoModelForCausalLM.from_pretrained(
    str(model.source.parent), gguf_file=model.source.name, dtype=torch.float32
  ).eval()
  drafter = NgramDrafter(args.draft_len, model.config.vocab_size)
  gen = GenerateConfig(args.max_new_tokens, stop_ids=(eos,), pad_id=eos)
  spec = SpecConfig(args.max_new_tokens, stop_ids=(eos,), pad_id=eos)
  prompts = [
    (b, tok.encode_chat([{"role": "user", "content": t}]))
    for b, t in load_prompts(args.per_benchmark, args.benchmarks.split(","))
  ]

  systems = {
    "ours_plain": lambda ids: _ours(generate(params, model.config, [ids], gen)),
    "ours_ngram": lambda ids: _ours(
      speculative_generate(params, model.config, drafter, None, [ids], spec)
    ),
    "hf_plain": lambda ids: hf_run(hf, ids, args.max_new_tokens, eos, None),
    "hf_lookup": lambda ids: hf_run(hf, ids, args.max_new_tokens, eos, args.hf_lookup),
  }
  if args.overhead_only:
    firsts = [ids for i, (_, ids) in enumerate(prompts) if i % args.per_benchmark == 0]
    report = [loop_overhead(params, model.config, drafter, ids, spec) for ids in firsts]
    Path(args.out + "_overhead.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return

  for run in systems.values():  # warm-up (and compile for the first prompt's shapes)
    run(prompts[0][1])

  out_lines = Path(args.out + ".jsonl")
  out_lines.parent.mkdir(parents=True, exist_ok=True)
  rows = []
  with open(out_lines, "w") as f:
    for i, (bench, ids) in enumerate(prompts):
      names = list(systems)
      names = names[i % 4 :] + names[: i % 4]  # rotate who goes first
      row = {"benchmark": bench, "prompt_tokens": len(ids)}
      outputs = {}
      for name in names:
        result = systems[name](ids)
        tokens, seconds, extra = result if len(result) == 3 else (*result, {})
        outputs[name] = tokens
        row[name] = {"tokens": len(tokens), "seconds": seconds, **extra}
      row["ngram_identical_to_plain"] = outputs["ours_ngram"] == outputs["ours_plain"]
      row["hf_identical_to_ours"] = outputs["hf_plain"] == outputs["ours_plain"]
      rows.append(row)
      f.write(json.dumps(row) + "\n")
      f.flush()
      rates = {n: row[n]["tokens"] / row[n]["seconds"] for n in systems}
      print(
        f"[{i + 1}/{len(prompts)}] {bench}: "
        + ", ".join(f"{n} {r:.1f}" for n, r in rates.items())
        + f"; tau {row['ours_ngram']['tau']:.2f}",
        flush=True,
      )

  summary = {
    "command": "python experiments/bench_spec.py "
    + " ".join(
      f"--{k.replace('_', '-')}" + ("" if isinstance(v, bool) else f" {v}")
      for k, v in vars(args).items()
      if k != "out" and v is not False
    ),
    "machine": {
      "platform": platform.platform(),
      "cpu_count": os.cpu_count(),
      "jax": jax.__version__,
      "torch": torch.__version__,
      "transformers": tf.__version__,
      "torch_threads": torch.get_num_threads(),
    },
    "per_benchmark": {},
  }
  for bench in (*args.benchmarks.split(","), "all"):
    sel = [r for r in rows if bench in ("all", r["benchmark"])]
    entry = {}
    for name in systems:
      tokens = sum(r[name]["tokens"] for r in sel)
      seconds = sum(r[name]["seconds"] for r in sel)
      entry[name] = {
        "tokens_per_s": tokens / seconds,
        "median_tokens_per_s": statistics.median(
          r[name]["tokens"] / r[name]["seconds"] for r in sel
        ),
      }
    entry["ngram_speedup_vs_ours_plain"] = (
      entry["ours_ngram"]["tokens_per_s"] / entry["ours_plain"]["tokens_per_s"]
    )
    entry["hf_lookup_speedup_vs_hf_plain"] = (
      entry["hf_lookup"]["tokens_per_s"] / entry["hf_plain"]["tokens_per_s"]
    )
    entry["ours_ngram_vs_hf_lookup"] = (
      entry["ours_ngram"]["tokens_per_s"] / entry["hf_lookup"]["tokens_per_s"]
    )
    rounds = sum(r["ours_ngram"]["rounds"] for r in sel)
    entry["ngram_tokens_per_round"] = sum(r["ours_ngram"]["committed"] for r in sel) / rounds
    entry["ngram_identical"] = f"{sum(r['ngram_identical_to_plain'] for r in sel)}/{len(sel)}"
    entry["hf_identical"] = f"{sum(r['hf_identical_to_ours'] for r in sel)}/{len(sel)}"
    summary["per_benchmark"][bench] = entry

  Path(args.out + ".json").write_text(json.dumps(summary, indent=1))
  print(json.dumps(summary, indent=1))


def _ours(result):
  extra = {}
  if hasattr(result, "rounds"):
    extra = {
      "rounds": int(result.rounds.sum()),
      "committed": int(result.committed.sum()),
      "tau": result.mean_accepted_length,
      "decode_seconds": result.decode_seconds,
    }
  return result.tokens[0], result.prefill_seconds + result.decode_seconds, extra


if __name__ == "__main__":
  main()
