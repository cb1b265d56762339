"""Choose a training recipe cheaply: the first steps of one run under several sets of overrides.

    python experiments/probe_recipe.py configs/smollm2_135m.py --steps 30 \
      --base drafter=dflash regenerated=data/smollm2_sharegpt_train.jsonl \
             feature_cache=runs/smollm2_cache \
      --variant pre=precondition_features=true \
      --variant pre_lr3e-3=precondition_features=true,learning_rate=3e-3

Each variant trains `dspark-jax train CONFIG BASE... VARIANT... --stop-at STEPS` into
runs/probe_<name> (a slice of the full run: same data order, seed and learning-rate schedule, so
the slices compare like for like and a chosen variant can be finished later by rerunning without
--stop-at). Reports CE, slot-1 soft acceptance and the expected accepted length at the last step,
and writes results/recipe_probe/<config stem>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("config")
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--base", nargs="*", default=[], help="key=value for every variant")
  parser.add_argument(
    "--variant", action="append", default=[], help="name=key=value,key=value (or name= alone)"
  )
  parser.add_argument("--out", default="results/recipe_probe")
  args = parser.parse_args(argv)

  rows = []
  for spec in args.variant:
    name, _, assignments = spec.partition("=")
    overrides = [a for a in assignments.split(",") if a]
    run = f"runs/probe_{name}"
    cmd = ["dspark-jax", "train", args.config, *args.base, *overrides, f"out_dir={run}"]
    subprocess.run([*cmd, "--stop-at", str(args.steps), "--no-progress"], check=True)
    lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
    last = [m for m in map(json.loads, lines) if m["step"] <= args.steps][-1]
    ce = last.get("ce", None)
    if ce is None:  # Eagle3 reports CE per training-time-test step
      ce = sum(last["step_ce"]) / len(last["step_ce"])
    rows.append(
      {
        "variant": name,
        "overrides": overrides,
        "step": last["step"],
        "ce": ce,
        "soft_accept_slot1": last["soft_accept"][0],
        "expected_accepted": last["expected_accepted"],
        "seconds": last["seconds"],
      }
    )
    print(json.dumps(rows[-1]), flush=True)

  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  record = {"config": args.config, "base": args.base, "steps": args.steps, "rows": rows}
  (out / f"{Path(args.config).stem}.json").write_text(json.dumps(record, indent=2) + "\n")
  print("\n| variant | step | CE | slot-1 soft accept | E[accepted] |\n|---|---|---|---|---|")
  for r in rows:
    print(
      f"| {r['variant']} | {r['step']} | {r['ce']:.3f} | {r['soft_accept_slot1']:.3f} | "
      f"{r['expected_accepted']:.3f} |"
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
