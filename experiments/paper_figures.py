"""Table 1 and Figures 2-4 of RESULTS.md from the `dspark-jax eval` files of paper_repro.sh.

    python experiments/paper_figures.py --results results/table1 --out results/paper

Reads `<results>/<drafter>/eval.json` for every drafter folder present and writes, under --out:
- `summary.md`: Table 1 (tau per benchmark and domain macro averages, DSpark's gains), Figure 2's
  numbers (conditional acceptance per slot and domain), Figure 3's (tau against drafter depth),
  Figure 4's (tau against block size, from prefix survival; see `block_taus`);
- `fig2_conditional_acceptance.png`, `fig3_depth.png`, `fig4_block_size.png`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

BENCHMARKS = ("gsm8k", "math500", "aime25", "mbpp", "humaneval", "mt-bench")
DOMAINS = ("math", "code", "chat", "all")
# Display names, in table order; the depth study's extra drafters come last.
LABELS = {
  "eagle3": "Eagle3 (1 layer)",
  "dflash": "DFlash (2 layers)",
  "dspark": "DSpark (2 layers)",
  "ngram": "n-gram (no training)",
  "dspark_l1": "DSpark (1 layer)",
  "dflash_l5": "DFlash (5 layers)",
}


MIN_REACHED = 20  # conditional acceptances from fewer rounds are not plotted


def pooled_reached(evaluation: dict, domain: str) -> np.ndarray:
  """[G] rounds that reached each slot, summed over the domain's benchmarks ("all": every one)."""
  from dspark_jax.data.prompts import domain_of

  rows = [
    r["reached"]
    for name, r in evaluation["benchmarks"].items()
    if domain == "all" or domain_of(name) == domain
  ]
  return np.sum(rows, axis=0)


def load(results: Path) -> dict[str, dict]:
  out = {}
  for name in LABELS:
    path = results / name / "eval.json"
    if path.is_file():
      out[name] = json.loads(path.read_text())
  return out


def block_taus(prefix_survival: list[float]) -> list[float]:
  """Tokens per round if the same drafter's proposals were cut to G = 1..len slots.

  A round with A accepted drafts out of a longer proposal would have committed min(A, G) + 1
  tokens, so tau_G = 1 + sum_{k<=G} P(A >= k) = 1 + the first G prefix survivals. This ignores
  EOS rounds (a few per prompt) and that a drafter trained for G slots is not the same network.
  """
  return (1.0 + np.cumsum(prefix_survival)).tolist()


def tau_standard_error(row: dict) -> float:
  """Round-level standard error of a benchmark's tau from its prefix survival s_k = P(A >= k):
  E[A] = sum s_k, E[A^2] = sum (2k - 1) s_k. Rounds of one prompt are correlated, so this is a
  lower bound on the sampling error over prompts."""
  s = np.asarray(row["prefix_survival"], float)
  k = np.arange(1, len(s) + 1)
  var = float((2 * k - 1) @ s - s.sum() ** 2)
  return float(np.sqrt(max(var, 0.0) / row["rounds"]))


def macro_standard_error(evals_one: dict, benchmarks, domain_of) -> dict:
  """Standard errors of the domain and "all" macro averages (independent benchmarks)."""
  by_domain: dict[str, list[float]] = {}
  for name, row in evals_one["benchmarks"].items():
    by_domain.setdefault(domain_of(name), []).append(tau_standard_error(row))
  out = {d: float(np.sqrt(np.sum(np.square(v))) / len(v)) for d, v in by_domain.items()}
  out["all"] = float(np.sqrt(np.sum(np.square(list(out.values())))) / len(out))
  return out


def fmt(x) -> str:
  return "n/a" if x is None or x != x else f"{x:.3f}"


def table1(evals: dict) -> list[str]:
  names = [n for n in ("eagle3", "dflash", "dspark", "ngram") if n in evals]
  bench = [b for b in BENCHMARKS if any(b in evals[n]["benchmarks"] for n in names)]
  lines = [
    "| drafter | " + " | ".join(bench) + " | math | code | chat | **all** |",
    "|---" * (len(bench) + 5) + "|",
  ]
  for n in names:
    e = evals[n]
    cells = [fmt(e["benchmarks"].get(b, {}).get("tau")) for b in bench]
    cells += [fmt(e["domains"].get(d, {}).get("tau")) for d in DOMAINS]
    lines.append(f"| {LABELS[n]} | " + " | ".join(cells) + " |")
  rounds = {n: sum(r["rounds"] for r in evals[n]["benchmarks"].values()) for n in names}
  prompts = {n: sum(r["prompts"] for r in evals[n]["benchmarks"].values()) for n in names}
  from dspark_jax.data.prompts import domain_of

  se = {n: macro_standard_error(evals[n], bench, domain_of)["all"] for n in names}
  lines.append("")
  lines.append(
    "Round-level standard error of the 'all' column (a lower bound; see tau_standard_error): "
    + ", ".join(f"{LABELS[n]} {se[n]:.3f}" for n in names)
    + "."
  )
  lines.append("")
  lines.append(
    "Rounds per drafter: "
    + ", ".join(f"{LABELS[n]} {rounds[n]:,} ({prompts[n]} prompts)" for n in names)
    + "."
  )
  if "dspark" in evals:
    gains = []
    for other in ("dflash", "eagle3"):
      if other in evals:
        parts = []
        for d in DOMAINS:
          if d not in evals["dspark"]["domains"] or d not in evals[other]["domains"]:
            continue
          ours, theirs = evals["dspark"]["domains"][d]["tau"], evals[other]["domains"][d]["tau"]
          parts.append(f"{d} {100 * (ours / theirs - 1):+.1f}%")
        gains.append(f"over {LABELS[other]}: " + ", ".join(parts))
    lines.append("")
    lines.append("DSpark's tau gain " + "; ".join(gains) + ".")
  return lines


def fig2_lines(evals: dict) -> list[str]:
  names = [n for n in ("eagle3", "dflash", "dspark", "ngram") if n in evals]
  lines = [
    "| drafter | domain | slot 1 | slot 2 | slot 3 | slot 4 | rounds reaching slots 1-4 "
    "| prefix survival, slots 1 / 2 / 3 |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for n in names:
    for d in DOMAINS:
      r = evals[n]["domains"].get(d)
      if r is None:
        continue
      cond = [fmt(x) for x in r["conditional_acceptance"][:4]]
      surv = " / ".join(fmt(x) for x in r["prefix_survival"][:3])
      reached = " / ".join(str(int(x)) for x in pooled_reached(evals[n], d)[:4])
      lines.append(f"| {LABELS[n]} | {d} | " + " | ".join(cond) + f" | {reached} | {surv} |")
  return lines


def fig3_lines(evals: dict) -> list[str]:
  names = [n for n in ("dspark_l1", "dspark", "dflash", "dflash_l5") if n in evals]
  lines = ["| drafter | math | code | chat | **all** |", "|---|---|---|---|---|"]
  for n in names:
    cells = [fmt(evals[n]["domains"].get(d, {}).get("tau")) for d in DOMAINS]
    lines.append(f"| {LABELS[n]} | " + " | ".join(cells) + " |")
  return lines


def fig4_lines(evals: dict) -> list[str]:
  names = [n for n in ("eagle3", "dflash", "dspark") if n in evals]
  g = len(evals[names[0]]["domains"]["all"]["prefix_survival"])
  lines = [
    "| drafter | " + " | ".join(f"G = {k}" for k in range(1, g + 1)) + " |",
    "|---" * (g + 1) + "|",
  ]
  taus = {n: block_taus(evals[n]["domains"]["all"]["prefix_survival"]) for n in names}
  for n in names:
    lines.append(f"| {LABELS[n]} | " + " | ".join(f"{t:.3f}" for t in taus[n]) + " |")
  if "dspark" in taus and "dflash" in taus:
    gain = [100 * (a / b - 1) for a, b in zip(taus["dspark"], taus["dflash"], strict=True)]
    lines.append("| DSpark over DFlash | " + " | ".join(f"{x:+.1f}%" for x in gain) + " |")
  return lines


def plot(evals: dict, out: Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  main = [n for n in ("eagle3", "dflash", "dspark", "ngram") if n in evals]
  fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), sharey=True)
  for ax, d in zip(axes, DOMAINS, strict=True):
    for n in main:
      if d not in evals[n]["domains"]:
        continue
      cond = np.asarray(evals[n]["domains"][d]["conditional_acceptance"], float)
      cond[pooled_reached(evals[n], d) < MIN_REACHED] = np.nan
      ax.plot(np.arange(1, len(cond) + 1), cond, marker="o", ms=3, label=LABELS[n])
    ax.set_title(f"{d}: P(slot k accepted | slots < k accepted)", fontsize=9)
    ax.text(
      0.98,
      0.98,
      f"slots reached by < {MIN_REACHED} rounds: not shown",
      ha="right",
      va="top",
      fontsize=6,
      transform=ax.transAxes,
    )
    ax.set_xlabel("slot k")
  axes[0].set_ylabel("conditional acceptance")
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out / "fig2_conditional_acceptance.png", dpi=110)
  plt.close(fig)

  depth = [n for n in ("dspark_l1", "dspark", "dflash", "dflash_l5") if n in evals]
  if depth:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(depth)
    for i, n in enumerate(depth):
      taus = [evals[n]["domains"].get(d, {}).get("tau", np.nan) for d in DOMAINS]
      ax.bar(np.arange(len(DOMAINS)) + i * width, taus, width, label=LABELS[n])
    ax.set_xticks(np.arange(len(DOMAINS)) + 0.4 - width / 2, DOMAINS)
    ax.set_ylim(1.0, None)
    ax.set_ylabel("tau (tokens per round)")
    ax.set_title("Drafter depth, T = 1")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fig3_depth.png", dpi=110)
    plt.close(fig)

  fig, ax = plt.subplots(figsize=(6, 3.6))
  for n in ("eagle3", "dflash", "dspark"):
    if n in evals:
      taus = block_taus(evals[n]["domains"]["all"]["prefix_survival"])
      ax.plot(np.arange(1, len(taus) + 1), taus, marker="o", ms=3, label=LABELS[n])
  ax.set_xlabel("proposal length G (block size G + 1)")
  ax.set_ylabel("tau, all domains")
  ax.set_title("Same drafters, proposals cut to G slots")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out / "fig4_block_size.png", dpi=110)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--results", type=Path, default=Path("results/table1"))
  parser.add_argument("--out", type=Path, default=Path("results/paper"))
  args = parser.parse_args(argv)
  evals = load(args.results)
  if not evals:
    raise SystemExit(f"no <drafter>/eval.json under {args.results}")
  settings = next(iter(evals.values()))["settings"]
  if any(e["settings"] != settings for e in evals.values()):
    raise SystemExit("the eval.json files were made with different settings")
  args.out.mkdir(parents=True, exist_ok=True)
  text = [f"Settings: {json.dumps(settings)}", "", "## Table 1: tau", "", *table1(evals)]
  text += ["", "## Figure 2: conditional acceptance", "", *fig2_lines(evals)]
  text += ["", "## Figure 3: depth", "", *fig3_lines(evals)]
  text += ["", "## Figure 4: proposal length (same drafters, cut)", "", *fig4_lines(evals)]
  (args.out / "summary.md").write_text("\n".join(text) + "\n")
  plot(evals, args.out)
  print("\n".join(text))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
