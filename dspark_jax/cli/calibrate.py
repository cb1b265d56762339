"""`dspark-jax calibrate`: Sequential Temperature (or Platt) Scaling of a drafter's confidence.

The fit is reported twice: on every rollout round (in-sample, what the paper reports), and held
out (fitted on the first `--fit-fraction` of the rollout batches, scored on the rest, beside
the ECE a perfectly calibrated head would show on those rounds: the sampling-noise floor). The
temperatures written with `--write` come from the fit on all rounds.
"""

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
  p.add_argument(
    "--method",
    choices=("sts", "platt"),
    default="sts",
    help="sts: one temperature per slot, the ECE-minimising grid search of the paper; platt: a "
    "temperature and an offset per slot, by log loss (removes a constant over-confidence)",
  )
  p.add_argument(
    "--fit-fraction",
    type=finite_float,
    default=0.5,
    help="share of the rollout batches the held-out check fits on (the rest score it)",
  )
  p.add_argument(
    "--rounds",
    default=None,
    help="refit from a rounds.npz an earlier run saved, without rollouts (--drafter is then "
    "only where --write stores the result)",
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

  import numpy as np

  from dspark_jax.eval import calibration

  if not 0 < args.fit_fraction < 1:
    raise ValueError(f"--fit-fraction must be in (0, 1), got {args.fit_fraction}")
  if args.rounds is not None:
    z, y, groups, source = _saved_rounds(args.rounds)
  else:
    z, y, groups, source = _rollout_rounds(args)
  fit = calibration.fit_sts if args.method == "sts" else calibration.fit_platt

  def fitted(z_fit, y_fit):  # (temperatures, offsets or None)
    out = fit(z_fit, y_fit)
    return (out, None) if args.method == "sts" else out

  temperatures, offsets = fitted(z, y)
  in_fit, held = calibration.split_rounds(groups, args.fit_fraction)
  t_fit, b_fit = fitted(z[in_fit], y[in_fit])
  held_scores = calibration.cumulative_confidence(z[held], t_fit, b_fit)
  report = {
    "drafter": args.drafter,
    **source,
    "rounds": len(z),
    "method": args.method,
    "sts_temperatures": temperatures.tolist(),  # the name older reports used
    "offsets": None if offsets is None else offsets.tolist(),
    "before": calibration.per_slot_report(z, y),
    "after": calibration.per_slot_report(z, y, temperatures, offsets),
    "held_out": {
      "fit_rounds": int(in_fit.sum()),
      "scored_rounds": int(held.sum()),
      "before": calibration.per_slot_report(z[held], y[held]),
      "after": calibration.per_slot_report(z[held], y[held], t_fit, b_fit),
      "noise_floor": [calibration.noise_floor(held_scores[:, k]) for k in range(z.shape[1])],
    },
  }
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  # AUC is undefined (NaN) for a slot whose rounds all share one outcome: null in JSON.
  report = json.loads(json.dumps(report).replace("NaN", "null"))
  (out / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
  # The raw confidence logits, prefix outcomes and rollout batches, so fits can be redone
  # without rollouts (--rounds).
  if Path(args.rounds or "").resolve() != (out / "rounds.npz").resolve():
    np.savez_compressed(out / "rounds.npz", logits=z, prefix_accepted=y, batch=groups)
  try:
    from dspark_jax.eval.plots import reliability_diagram

    name = "STS" if args.method == "sts" else "Platt"
    reliability_diagram(z, y, temperatures, out / "reliability.png", offsets, name)
  except ImportError:
    print("matplotlib not installed (pip install '.[plots]'): no diagram", file=sys.stderr)
  if args.write:
    keys = ("rounds", "prompts", "skip", "temperature", "method", "before", "after", "held_out")
    summary = {k: report[k] for k in keys if k in report}
    from dspark_jax.io.deepspec import write_calibration

    write_calibration(args.drafter, temperatures, summary, offsets)
  _print_table(report, temperatures, offsets)
  print(f"{len(z)} rounds; report in {out}/calibration.json", file=sys.stderr)
  return 0


def _print_table(report, temperatures, offsets) -> None:
  print(
    "| slot | T | b | ECE before | ECE after | held-out before | held-out after | noise floor "
    "| AUC | Brier before | Brier after |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  b, a, h = report["before"], report["after"], report["held_out"]
  for k in range(len(temperatures)):
    auc = "n/a" if a["auc"][k] is None else f"{a['auc'][k]:.3f}"
    off = 0.0 if offsets is None else offsets[k]
    print(
      f"| {k + 1} | {temperatures[k]:.3g} | {off:.3g} | {b['ece'][k]:.4f} | {a['ece'][k]:.4f} | "
      f"{h['before']['ece'][k]:.4f} | {h['after']['ece'][k]:.4f} | {h['noise_floor'][k]:.4f} | "
      f"{auc} | {b['brier'][k]:.4f} | {a['brier'][k]:.4f} |"
    )


def _saved_rounds(path):
  """(raw logits [N, G], prefix outcomes [N, G], rollout batch [N], report fields) of a saved
  rounds.npz. Files from before the batch index was saved get ten equal blocks in round order
  (rounds are stored batch by batch, so a block holds whole batches but for its edges)."""
  import numpy as np

  data = np.load(path)
  z, y = data["logits"], data["prefix_accepted"]
  if "batch" in data:
    groups = data["batch"]
  else:
    groups = np.arange(len(z)) * 10 // max(len(z), 1)
  return z, y, groups, {"rounds_file": str(path)}


def _rollout_rounds(args):
  """Rolls out holdout prompts with the drafter and returns `_saved_rounds`'s tuple."""
  from dspark_jax.eval import calibration, harness

  if min(args.prompts, args.batch_size, args.max_new_tokens) < 1 or args.skip < 0:
    raise ValueError("--prompts, --batch-size and --max-new-tokens must be >= 1, --skip >= 0")
  settings = harness.EvalSettings(args.temperature, args.max_new_tokens, args.batch_size, args.seed)
  check_schedule_flags(args)
  import jax
  import numpy as np
  from tqdm import tqdm

  from dspark_jax.data.prompts import holdout_token_prompts
  from dspark_jax.io.deepspec import load_drafter
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
  # The rollouts ran calibrated (z / T + b): fit on the raw logits.
  offsets = drafter.config.confidence_offsets
  if offsets:
    z = z - np.asarray(offsets)
  temps = drafter.config.confidence_temperatures
  if temps:
    z = z * np.asarray(temps)
  source = {
    "prompts": len(prompts),
    "skip": args.skip,
    "temperature": args.temperature,
    "max_new_tokens": args.max_new_tokens,
  }
  return z, y, rollouts["rounds_batch"], source
