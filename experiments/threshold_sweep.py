"""Figure 5: static confidence thresholds, per domain, replayed on full-proposal rollouts.

    python experiments/threshold_sweep.py --drafter data/drafters/smollm2_135m_dspark \
      --benchmarks gsm8k math500 humaneval mbpp mt-bench --limit 20 --max-new-tokens 128 \
      --out results/threshold_sweep

Rolls each benchmark's prompts out once with every slot verified (T = 1 by default), then
replays thresholds 0, 0.1, ..., 0.9 on the recorded per-slot confidences and accepted counts
(`dspark_jax.eval.threshold`): drafts verified, accepted and rejected per round, and the
acceptance rate, per domain, for the per-slot confidence and for the cumulative product.
Writes `sweep.json` and `sweep.png` (stacked accepted/rejected drafts per round, and the
acceptance rate, against the threshold).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from dspark_jax.benchmarks import BENCHMARK_DIR


def plot(record: dict, path: Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  domains = list(record["domains"])
  fig, axes = plt.subplots(2, len(domains), figsize=(3.6 * len(domains), 6.0), squeeze=False)
  for col, domain in enumerate(domains):
    sweep = record["domains"][domain]["per_slot"]
    t = np.asarray(sweep["thresholds"])
    top, bottom = axes[0, col], axes[1, col]
    top.bar(t, sweep["accepted_per_round"], width=0.08, label="accepted")
    top.bar(
      t,
      sweep["rejected_per_round"],
      width=0.08,
      bottom=sweep["accepted_per_round"],
      label="rejected",
    )
    top.set_title(f"{domain}: drafts verified per round")
    top.set_xlabel("confidence threshold")
    top.legend(fontsize=7)
    for name in ("per_slot", "cumulative"):
      s = record["domains"][domain][name]
      bottom.plot(t, s["acceptance_rate"], marker="o", ms=3, label=name.replace("_", "-"))
    bottom.set_ylim(0, 1)
    bottom.set_xlabel("confidence threshold")
    bottom.set_ylabel("acceptance rate")
    bottom.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--drafter", required=True, help="a DSpark drafter folder")
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--benchmarks", nargs="+", default=["gsm8k", "humaneval", "mt-bench"])
  parser.add_argument("--data-dir", default=str(BENCHMARK_DIR))
  parser.add_argument("--limit", type=int, default=20)
  parser.add_argument("--max-new-tokens", type=int, default=128)
  parser.add_argument("--max-prompt-tokens", type=int, default=1024)
  parser.add_argument("--temperature", type=float, default=1.0)
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="results/threshold_sweep")
  args = parser.parse_args(argv)

  from dspark_jax.data.prompts import domain_of, load_benchmark
  from dspark_jax.eval import harness
  from dspark_jax.eval.threshold import threshold_sweep
  from dspark_jax.io.deepspec import load_drafter
  from dspark_jax.io.load import load_model

  model = load_model(args.model)
  params = jax.device_put(model.params)
  tok = model.tokenizer
  drafter, draft_params = load_drafter(args.drafter, model.config, params)
  if not drafter.config.confidence_head:
    raise SystemExit(f"{args.drafter} has no confidence head")
  settings = harness.EvalSettings(args.temperature, args.max_new_tokens, args.batch_size, args.seed)
  by_domain: dict[str, list] = {}
  benchmarks = {}
  for name in args.benchmarks:
    prompts = harness.select(
      load_benchmark(Path(args.data_dir) / f"{name}.jsonl"), args.limit, args.seed, name
    )
    ids = [tok.encode_chat(p.chat()) for p in prompts]
    ids = [x for x in ids if len(x) <= args.max_prompt_tokens]
    result = harness.run_benchmark(
      params,
      model.config,
      drafter,
      draft_params,
      ids,
      settings,
      stop_ids=tok.stop_ids,
      pad_id=tok.pad_id or 0,
      rounds=True,
    )
    by_domain.setdefault(domain_of(name), []).append(result.pop("rounds_trace"))
    benchmarks[name] = result
    print(f"{name}: {result['rounds']} rounds, tau {result['tau']:.3f}", flush=True)

  record = {"args": vars(args), "benchmarks": benchmarks, "domains": {}}
  for domain, parts in sorted(by_domain.items()):
    conf = np.concatenate([c for c, _ in parts])
    accepted = np.concatenate([a for _, a in parts])
    record["domains"][domain] = {
      "rounds": len(accepted),
      "per_slot": threshold_sweep(conf, accepted),
      "cumulative": threshold_sweep(conf, accepted, cumulative=True),
    }
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "sweep.json").write_text(json.dumps(record, indent=2).replace("NaN", "null") + "\n")
  plot(record, out / "sweep.png")
  print("\n| domain | threshold | verified | accepted | tokens/round | acceptance rate |")
  print("|---|---|---|---|---|---|")
  for domain, d in record["domains"].items():
    s = d["per_slot"]
    for i, t in enumerate(s["thresholds"]):
      rate = s["acceptance_rate"][i]
      print(
        f"| {domain} | {t:.1f} | {s['verified_per_round'][i]:.2f} | "
        f"{s['accepted_per_round'][i]:.2f} | {s['tokens_per_round'][i]:.2f} | "
        f"{'n/a' if rate != rate else f'{rate:.3f}'} |"
      )
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
