"""`dspark-jax train` and `dspark-jax cache`: drafter training from a Python config."""

from __future__ import annotations

import sys


def add_parsers(sub) -> None:
  for name, text in [
    ("train", "train a DSpark/DFlash/Eagle3 drafter (resumes from out_dir's checkpoints)"),
    ("cache", "write the target-feature cache a training config reads (feature_cache=DIR)"),
  ]:
    p = sub.add_parser(name, help=text)
    p.add_argument("config", help="a Python config file, e.g. configs/smollm2_135m.py")
    p.add_argument("overrides", nargs="*", help="key=value: get_config arguments, then fields")
    p.add_argument("--no-progress", action="store_true")
    if name == "train":
      p.add_argument(
        "--stop-at",
        type=int,
        default=None,
        metavar="STEP",
        help="stop after this step (checkpointed; rerun without it to continue the same "
        "schedule); the drafter is written only when the run is complete",
      )


def _training_inputs(args):
  from dspark_jax.config import TrainConfig, load_config_file
  from dspark_jax.drafters.build import make_drafter
  from dspark_jax.io.load import load_model

  config = load_config_file(args.config, args.overrides)
  if not isinstance(config, TrainConfig):
    raise ValueError(f"{args.config} does not give a TrainConfig")
  model = load_model(config.target)
  return config, model, make_drafter(config.draft, model.config)


def _samples(config):
  """Training samples of every file in `regenerated` (comma-separated, concatenated in order)."""
  from pathlib import Path

  from dspark_jax.data.regenerate import read_regenerated
  from dspark_jax.data.target_cache import samples_from_regenerated

  if not config.regenerated:
    raise ValueError("set regenerated=FILE (the output of dspark-jax regenerate)")
  samples = []
  for path in config.regenerated.split(","):
    if not Path(path).is_file():
      raise FileNotFoundError(f"regenerated answers not found: {path}")
    got = samples_from_regenerated(read_regenerated(path), config.max_seq_len)
    if not got:
      raise ValueError(f"{path} holds no usable samples")
    samples += got
  return samples


def run_cache(args) -> int:
  import jax

  from dspark_jax.data import target_cache as tc

  config, model, drafter = _training_inputs(args)
  if not config.feature_cache:
    raise ValueError("set feature_cache=DIR for the cache to write")
  samples = _samples(config)
  size = tc.estimate_bytes(samples, model.config, drafter.feature_layers)
  print(f"target cache: {len(samples)} samples, {size / 1e9:.2f} GB", file=sys.stderr)
  tc.build_cache(
    config.feature_cache,
    samples,
    jax.device_put(model.params),
    model.config,
    drafter.feature_layers,
    target_name=config.target,
    progress=not args.no_progress,
  )
  return 0


def run_train(args) -> int:
  from pathlib import Path

  import jax

  from dspark_jax.data import target_cache as tc
  from dspark_jax.io.deepspec import save_drafter
  from dspark_jax.training.trainer import train

  config, model, drafter = _training_inputs(args)
  params = jax.device_put(model.params)
  inputs = {}
  if config.feature_cache:
    inputs["cache"] = tc.open_caches(
      config.feature_cache, model.config, params, drafter.feature_layers
    )
  else:
    inputs["samples"] = _samples(config)
  draft_ids = _draft_ids(drafter, model, config.draft_vocab_source, **inputs)
  result = train(
    config,
    drafter,
    model.config,
    params,
    progress=not args.no_progress,
    stop_at=args.stop_at,
    draft_ids=draft_ids,
    **inputs,
  )
  if result["steps"] < result["total_steps"]:
    print(
      f"stopped at step {result['steps']} of {result['total_steps']} (checkpointed in "
      f"{config.out_dir}; run again without --stop-at to finish); last metrics "
      f"{result['metrics']}",
      file=sys.stderr,
    )
    return 0
  folder = save_drafter(
    Path(config.out_dir) / "drafter",
    drafter,
    {"trainable": result["trainable"], "frozen": result["frozen"]},
    dtype=config.save_dtype,
    include_shared=config.save_shared,
  )
  print(
    f"{result['steps']} steps; last metrics {result['metrics']}; drafter in {folder}",
    file=sys.stderr,
  )
  return 0


def _draft_ids(drafter, model, source: str = "", samples=None, cache=None):
  """A reduced draft vocabulary's ids: the most frequent tokens of the training answers (or of
  the answer files in `source`), the target's stop tokens always among them (without them no
  proposal could end an answer). None when the drafter proposes from the whole vocabulary."""
  n = drafter.config.draft_vocab_size
  if not n:
    return None
  from dspark_jax.data.regenerate import read_regenerated
  from dspark_jax.drafters.draft_vocab import coverage, most_frequent_ids

  if cache is not None:
    answers = cache.answer_tokens()
  else:
    answers = [[t for t, m in zip(s.tokens, s.loss_mask, strict=True) if m] for s in samples]
  counted = answers
  if source:
    counted = [
      r["response_ids"]
      for path in source.split(",")
      for r in read_regenerated(path)
      if r.get("finish") != "error"
    ]
  ids = most_frequent_ids(counted, n, model.config.vocab_size, always=model.tokenizer.stop_ids)
  print(
    f"draft vocabulary: {n} of {model.config.vocab_size} tokens"
    + (f" (counted over {len(counted)} answers of {source})" if source else "")
    + f", covering {coverage(ids, answers):.2%} of the training answers' tokens",
    file=sys.stderr,
  )
  return ids
