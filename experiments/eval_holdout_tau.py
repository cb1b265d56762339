"""Accepted length per round of trained drafters on held-out ShareGPT prompts (issue 5's check).

    python experiments/eval_holdout_tau.py \
      --drafter dspark=runs/smollm2_dspark/drafter --drafter dflash=runs/smollm2_dflash/drafter \
      --drafter eagle3=runs/smollm2_eagle3/drafter --out results/smollm2_holdout_tau

The first N prompts of the ShareGPT holdout split (never trained on) that fit the prompt budget,
the target's chat template, each drafter at each temperature, speculative decoding in batches.
Reported per (drafter, temperature), as `dspark_jax.eval.acceptance` defines them: tau (tokens per
round, the bonus included; the round reaching EOS counts only its accepted drafts), tau_all_bonus
(1 + accepted drafts per round, the bonus counted in every round: session 3's definition, kept to
compare with results/smollm2_holdout_tau_v1), committed tokens per round, verify rate, prefix
survival and conditional acceptance per slot. Writes `tau.json` (rows
of other drafters already there are kept; a drafter's rows are replaced) and prints a Markdown
table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--drafter", action="append", required=True, help="name=folder")
  parser.add_argument("--prompts", type=int, default=50)
  parser.add_argument("--max-prompt-tokens", type=int, default=512)
  parser.add_argument("--max-new-tokens", type=int, default=128)
  parser.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 1.0])
  parser.add_argument("--batch-size", type=int, default=10)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="results/smollm2_holdout_tau")
  args = parser.parse_args(argv)

  from dspark_jax.data.prompts import holdout_token_prompts
  from dspark_jax.eval import harness
  from dspark_jax.io.deepspec import load_drafter
  from dspark_jax.io.load import load_model

  model = load_model(args.model)
  params = jax.device_put(model.params)
  tok = model.tokenizer
  prompts = holdout_token_prompts(tok, args.prompts, args.max_prompt_tokens)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  # Rows of earlier runs stay (a drafter evaluated alone joins the others' table); each row is
  # written as soon as it is measured, so a killed evaluation keeps what it finished.
  results = json.loads((out / "tau.json").read_text()) if (out / "tau.json").is_file() else []
  for spec_name in args.drafter:
    name, folder = spec_name.split("=", 1)
    drafter, draft_params = load_drafter(folder, model.config, params)
    for temperature in args.temperatures:
      # T = 0 is greedy; T > 0 samples from the full distribution (no top-k/top-p).
      settings = harness.EvalSettings(temperature, args.max_new_tokens, args.batch_size, args.seed)
      measured = harness.run_benchmark(
        params,
        model.config,
        drafter,
        draft_params,
        [ids for _, ids in prompts],
        settings,
        stop_ids=tok.stop_ids,
        pad_id=tok.pad_id or 0,
      )
      row = {
        "drafter": name,
        "folder": folder,
        "temperature": temperature,
        "max_new_tokens": args.max_new_tokens,
        **measured,
      }
      row["tau_all_bonus"] = 1.0 + sum(row["prefix_survival"])
      results = [r for r in results if (r["drafter"], r["temperature"]) != (name, temperature)] + [
        row
      ]
      tmp = out / "tau.json.tmp"
      tmp.write_text(json.dumps(results, indent=2) + "\n")
      tmp.replace(out / "tau.json")
      print(f"{name} T={temperature}: tau {row['tau']:.3f} ({row['rounds']} rounds)", flush=True)

  print("\n| drafter | T | tau | prefix survival, slots 1-3 |\n|---|---|---|---|")
  for r in results:
    survival = ", ".join(f"{x:.2f}" for x in r["prefix_survival"][:3])
    print(f"| {r['drafter']} | {r['temperature']:g} | {r['tau']:.2f} | {survival} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
