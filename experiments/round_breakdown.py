"""Where a speculative round's time goes: drafter backbone, sequential head, verify, overhead.

    python experiments/round_breakdown.py --drafter data/drafters/smollm2_135m_dspark \
      --batch 1 8 --out results/round_breakdown.json [--verify-slots G]

For one GSM8K prompt (chat template) per row, after a real prefill, each part of a round is
jitted and timed alone on the loop's shapes (median of --repeats calls, after a warm-up):
  propose        the drafter's proposal: parallel block backbone, LM head, sequential head
  propose_nohead the same drafter with its sequential head and confidence head removed (the
                 DFlash-shaped remainder; propose - propose_nohead is the head's share)
  verify         the target's forward over the G + 1 block with the drafter's feature layers
  commit         the drafter's context update with the accepted features
  plain_step     one plain decoding step (one token per row), for scale
and the round as the compiled loop runs it (decode seconds / rounds of a 64-token greedy run).
Overhead = loop round - (propose + verify + commit). Writes one JSON with the milliseconds.
With --verify-slots G every part runs on proposals cut to G slots (`drafters.prefix`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from timing import timed  # experiments/timing.py (this folder is on sys.path)

from dspark_jax.benchmarks import benchmark_path


def breakdown(model, params, drafter, draft_params, prompt, batch: int, repeats: int) -> dict:
  from dspark_jax.decoding.generate import round_up
  from dspark_jax.decoding.loop import SpecConfig, spec_prefill, speculative_generate
  from dspark_jax.drafters.build import make_drafter
  from dspark_jax.drafters.prefix import PrefixDrafter
  from dspark_jax.models.kv_cache import KVCache
  from dspark_jax.models.transformer import forward

  config, g = model.config, drafter.draft_len
  tok = model.tokenizer
  spec = SpecConfig(64, stop_ids=(), pad_id=tok.pad_id or 0)
  prompts = [prompt] * batch
  capacity = round_up(len(prompt) + spec.max_new_tokens + g + 1, 64)
  padded = np.zeros((batch, round_up(len(prompt), 16)), np.int32)
  padded[:, : len(prompt)] = prompt
  state = jax.jit(spec_prefill, static_argnames=("target_config", "drafter", "spec"))(
    params,
    draft_params,
    padded,
    np.full(batch, len(prompt), np.int32),
    KVCache.create(config, batch, capacity),
    np.arange(batch, dtype=np.int32),
    np.uint32(0),
    np.full(batch, g, np.int32),
    target_config=config,
    drafter=drafter,
    spec=spec,
  )
  pos = state.cache.lengths

  def propose_with(d):
    return jax.jit(
      lambda p, s: d.propose(p, s.draft_state, s.anchor, pos, spec.sampling, s.seed, s.request_ids)
    )

  propose = propose_with(drafter)
  proposal = propose(draft_params, state)[0]
  headless = make_drafter(
    dataclasses.replace(
      drafter.config,
      head="none",
      confidence_head=False,
      confidence_temperatures=(),
      confidence_offsets=(),
    ),
    config,
  )
  kept = {k: v for k, v in draft_params["trainable"].items() if k in headless.trainable_shapes()}
  if isinstance(drafter, PrefixDrafter):
    headless = PrefixDrafter(headless, g)
  headless_params = {"trainable": kept, "frozen": draft_params["frozen"]}

  @jax.jit
  def verify_forward(params, s, tokens):
    block = jnp.concatenate([s.anchor[:, None], tokens], axis=1)
    positions = pos[:, None] + jnp.arange(g + 1)[None]
    out = forward(
      params, block, positions, s.cache, config=config, feature_layers=drafter.feature_layers
    )
    return out.logits, out.features

  _, features = verify_forward(params, state, proposal.tokens)
  commit = jax.jit(
    lambda p, s, prop, feats: drafter.commit(
      p, s.draft_state, prop, s.anchor, feats, jnp.full((batch,), g // 2, jnp.int32)
    )
  )
  plain = jax.jit(
    lambda params, s: forward(params, s.anchor[:, None], pos[:, None], s.cache, config=config)
  )
  parts = {
    "propose": timed(propose, draft_params, state, repeats=repeats),
    "propose_nohead": timed(propose_with(headless), headless_params, state, repeats=repeats),
    "verify": timed(verify_forward, params, state, proposal.tokens, repeats=repeats),
    "commit": timed(commit, draft_params, state, proposal, features, repeats=repeats),
    "plain_step": timed(plain, params, state, repeats=repeats),
  }
  speculative_generate(params, config, drafter, draft_params, prompts, spec)  # compile, warm
  run = speculative_generate(params, config, drafter, draft_params, prompts, spec)
  parts["loop_round"] = run.decode_seconds * 1e3 / max(int(run.rounds.max()), 1)
  parts["sequential_head"] = parts["propose"] - parts["propose_nohead"]
  parts["overhead"] = parts["loop_round"] - parts["propose"] - parts["verify"] - parts["commit"]
  parts["tokens_per_round"] = run.mean_accepted_length
  return parts


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--drafter", required=True)
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument(
    "--verify-slots", type=int, default=None, help="time proposals cut to G slots (PrefixDrafter)"
  )
  parser.add_argument("--out", default="results/round_breakdown.json")
  args = parser.parse_args(argv)

  from dspark_jax.data.prompts import load_benchmark
  from dspark_jax.io.deepspec import load_drafter
  from dspark_jax.io.load import load_model

  model = load_model(args.model)
  params = jax.device_put(model.params)
  drafter, draft_params = load_drafter(args.drafter, model.config, params)
  if args.verify_slots is not None:
    from dspark_jax.drafters.prefix import PrefixDrafter

    drafter = PrefixDrafter(drafter, args.verify_slots)
  first = load_benchmark(benchmark_path("gsm8k"))[0]
  prompt = model.tokenizer.encode_chat(first.chat())
  record = {
    "drafter": args.drafter,
    "verify_slots": drafter.draft_len,
    "machine": f"{platform.node()} {jax.devices()[0].platform} x{jax.device_count()}",
    "prompt_tokens": len(prompt),
    "milliseconds": {},
  }
  for b in args.batch:
    record["milliseconds"][str(b)] = breakdown(
      model, params, drafter, draft_params, prompt, b, args.repeats
    )
    print(
      f"batch {b}: " + ", ".join(f"{k} {v:.1f}" for k, v in record["milliseconds"][str(b)].items()),
      flush=True,
    )
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
