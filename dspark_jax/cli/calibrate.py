"""`dspark-jax calibrate`: Sequential Temperature Scaling of a drafter's confidence head."""

from __future__ import annotations

import sys

from dspark_jax.cli.common import finite_float
from dspark_jax.cli.schedule import add_schedule_flags, check_schedule_flags, resolve_schedule


def add_parser(sub) -> None:
  p = sub.add_parser(
    "calibrate",
    help="fit Sequential Temperature Scaling of a DSpark drafter's confidence on held-out "
    "ShareGPT rollouts; report ECE/AUC/Brier per slot and reliability diagrams",
  )
  p.add_argument("--drafter", required=True, help="a DSpark drafter folder (DeepSpec format)")
  p.add_argument("--model", default="smollm2-135m")
  p.add_argument("--prompts", type=int, default=100, help="holdout prompts to roll out")
  p.add_argument(
    "--skip", type=int, default=50, help="holdout prompts passed over first (the tau check's 50)"
  )
  p.add_argument("--max-prompt-tokens", type=int, default=512)
  p.add_argument("--max-new-tokens", type=int, default=128)
  p.add_argument("--temperature", type=finite_float, default=1.0)
  p.add_argument("--batch-size", type=int, default=10)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--out",
    default="results/calibration",
    help="report JSON, diagram PNG and rounds.npz (raw confidence logits, prefix outcomes)",
  )
  p.add_argument(
    "--write", action="store_true", help="store the temperatures with the drafter (applied on load)"
  )
  add_schedule_flags(
    p,
    default_help="fixed; the fit uses only rounds that verified every slot, so a schedule "
    "that verifies fewer leaves it fewer rounds",
  )
  p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
  import json
  from pathlib import Path

  from dspark_jax.eval import calibration, harness

  if min(args.prompts, args.batch_size, args.max_new_tokens) < 1 or args.skip < 0:
    raise ValueError("--prompts, --batch-size and --max-new-tokens must be >= 1, --skip >= 0")
  settings = harness.EvalSettings(args.temperature, args.max_new_tokens, args.batch_size, args.seed)
  check_schedule_flags(args)
  import jax
  import numpy as np
  from tqdm import tqdm

  from dspark_jax.data.prompts import holdout_token_prompts
  from dspark_jax.io.deepspec import load_drafter, write_calibration
  from dspark_jax.io.load import load_model

  model = load_model(args.model)
  params = jax.device_put(model.params)
  tok = model.tokenizer
  drafter, draft_params = load_drafter(args.drafter, model.config, params)
  if not drafter.config.confidence_head:
    raise ValueError(f"{args.drafter} has no confidence head to calibrate")
  policy, _ = resolve_schedule(
    args,
    model,
    params,
    drafter,
    draft_params,
    args.batch_size,
    default="fixed",
    quiet=args.no_progress,
  )
  prompts = [
    ids for _, ids in holdout_token_prompts(tok, args.prompts, args.max_prompt_tokens, args.skip)
  ]
  bar = tqdm(total=len(prompts), desc="rollouts", disable=args.no_progress, file=sys.stderr)
  rollouts = harness.run_benchmark(
    params,
    model.config,
    drafter,
    draft_params,
    prompts,
    settings,
    stop_ids=tok.stop_ids,
    pad_id=tok.pad_id or 0,
    progress=bar,
    rounds=True,
    schedule=policy,
  )
  bar.close()
  g = drafter.draft_len
  z, y = calibration.logits_and_labels(*rollouts["rounds_trace"])
  if policy is not None and len(z) < 10 * g:
    raise ValueError(
      f"only {len(z)} rollout rounds verified all {g} slots: too few to fit temperatures "
      "(run with --schedule fixed, the default, or more --prompts)"
    )
  old = drafter.config.confidence_temperatures
  if old:  # the rollouts ran calibrated: fit on the raw logits
    z = z * np.asarray(old)
  temperatures = calibration.fit_sts(z, y)
  report = {
    "drafter": args.drafter,
    "rounds": len(z),
    "prompts": len(prompts),
    "skip": args.skip,
    "temperature": args.temperature,
    "max_new_tokens": args.max_new_tokens,
    "sts_temperatures": temperatures.tolist(),
    "before": calibration.per_slot_report(z, y),
    "after": calibration.per_slot_report(z, y, temperatures),
  }
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  # AUC is undefined (NaN) for a slot whose rounds all share one outcome: null in JSON.
  report = json.loads(json.dumps(report).replace("NaN", "null"))
  (out / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
  # The raw confidence logits and prefix outcomes, so fits can be redone without rollouts.
  np.savez_compressed(out / "rounds.npz", logits=z, prefix_accepted=y)
  try:
    from dspark_jax.eval.plots import reliability_diagram

    reliability_diagram(z, y, temperatures, out / "reliability.png")
  except ImportError:
    print("matplotlib not installed (pip install '.[plots]'): no diagram", file=sys.stderr)
  if args.write:
    summary = {
      k: report[k] for k in ("rounds", "prompts", "skip", "temperature", "before", "after")
    }
    write_calibration(args.drafter, temperatures, summary)
  print("| slot | T | ECE before | ECE after | AUC | Brier before | Brier after |")
  print("|---|---|---|---|---|---|---|")
  for k in range(g):
    b, a = report["before"], report["after"]
    auc = "n/a" if a["auc"][k] is None else f"{a['auc'][k]:.3f}"
    print(
      f"| {k + 1} | {temperatures[k]:.3g} | {b['ece'][k]:.4f} | {a['ece'][k]:.4f} | "
      f"{auc} | {b['brier'][k]:.4f} | {a['brier'][k]:.4f} |"
    )
  print(f"{len(z)} rounds; report in {out}/calibration.json", file=sys.stderr)
  return 0
