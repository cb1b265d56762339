"""Throughput against per-user speed through the serving engine (the paper's Figures 7 and 8).

    python experiments/bench_serving.py --out results/serving_sweep

Closed loop: N users, each sending its next request as soon as the last one finished, over
ShareGPT holdout prompts (never trained on), through the engine in-process (the HTTP layer is
not what is measured). The engine has N slots (sized to the load: its forward covers every
slot, so idle slots would cost), and the cost-aware schedules plan with costs profiled at N
rows. For every concurrency and schedule: aggregate tokens/s, mean per-user decode tokens/s
(a request's tokens after its first over the time after its first), mean time to first token,
tokens per round and drafts verified per round (Figure 8's verification budget). One process,
one schedule after another at each concurrency, so every ratio is measured side by side.
Compilation and profiling happen before each timed run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np

from dspark_jax.cli.schedule import drafter_desc
from dspark_jax.data.prompts import holdout_token_prompts
from dspark_jax.decoding import profile, scheduler
from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.io.deepspec import load_drafter
from dspark_jax.io.load import load_model
from dspark_jax.serving.engine import Engine, Request
from dspark_jax.serving.server import warm_up

SCHEDULES = ("plain", "fixed-1", "fixed-G", "threshold", "alg1", "async")


def make_policy(name, cost, g, threshold):
  return {
    "plain": lambda: scheduler.Fixed(0),
    "fixed-1": lambda: scheduler.Fixed(1),
    "fixed-G": lambda: scheduler.Fixed(g),
    "threshold": lambda: scheduler.Threshold(threshold),
    "alg1": lambda: scheduler.Algorithm1(cost),
    "async": lambda: scheduler.Async(cost),
  }[name]()


def closed_loop(engine: Engine, prompts, users: int, requests: int, max_tokens: int, sampling):
  """`users` threads, each submitting one request after another until `requests` are done."""
  todo = iter(range(requests))
  lock = threading.Lock()
  done = []

  def user():
    while True:
      with lock:
        i = next(todo, None)
      if i is None:
        return
      prompt = prompts[i % len(prompts)]
      handle = engine.submit(Request(tuple(prompt), max_tokens, sampling, seed=i))
      tokens, reason, metrics = handle.result(timeout=3600)
      with lock:
        done.append(metrics)

  start = time.perf_counter()
  threads = [threading.Thread(target=user) for _ in range(users)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  wall = time.perf_counter() - start
  tokens = sum(m.tokens for m in done)
  per_user = [m.tokens_per_second for m in done if m.tokens_per_second]
  rounds = sum(m.rounds for m in done)
  return {
    "requests": len(done),
    "tokens": tokens,
    "seconds": wall,
    "throughput": tokens / wall,
    "per_user_tokens_per_second": float(np.mean(per_user)),
    "time_to_first_token": float(np.mean([m.time_to_first_token for m in done])),
    "tokens_per_round": sum(m.committed for m in done) / max(rounds, 1),
    "verified_per_round": sum(m.verified for m in done) / max(rounds, 1),
    "drafted_share": sum(m.drafted for m in done) / max(rounds, 1),
  }


def plot(results, out: Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
  for name in SCHEDULES:
    rows = [r for r in results if r["schedule"] == name]
    if not rows:
      continue
    a.plot(
      [r["throughput"] for r in rows],
      [r["per_user_tokens_per_second"] for r in rows],
      "o-",
      label=name,
    )
    for r in rows:
      a.annotate(str(r["users"]), (r["throughput"], r["per_user_tokens_per_second"]), fontsize=7)
    if name != "plain":
      b.plot([r["users"] for r in rows], [r["verified_per_round"] for r in rows], "o-", label=name)
  a.set_xlabel("aggregate tokens/s")
  a.set_ylabel("per-user tokens/s")
  a.set_title("throughput vs per-user speed (labels: concurrent users)")
  a.legend(fontsize=8)
  b.set_xscale("log", base=2)
  users = sorted({r["users"] for r in results})
  b.set_xticks(users, [str(u) for u in users])
  b.set_xlabel("concurrent users")
  b.set_ylabel("drafts verified per round per request")
  b.set_title("verification budget vs load")
  b.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out, dpi=120)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", default="smollm2-135m")
  ap.add_argument("--drafter", default="data/drafters/smollm2_135m_dspark")
  ap.add_argument("--users", type=int, nargs="+", default=[1, 2, 4, 8, 16])
  ap.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
  ap.add_argument("--requests-per-user", type=int, default=3)
  ap.add_argument("--min-requests", type=int, default=6)
  ap.add_argument("--max-tokens", type=int, default=64)
  ap.add_argument("--temperature", type=float, default=0.0)
  ap.add_argument("--threshold", type=float, default=0.3)
  ap.add_argument("--max-prompt-tokens", type=int, default=192)
  ap.add_argument("--out", default="results/serving_sweep")
  ap.add_argument("--plot-only", action="store_true", help="redraw from the saved sweep.json")
  args = ap.parse_args()

  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  if args.plot_only:
    results = json.loads((out / "sweep.json").read_text())["results"]
    return report(results, out)
  model = load_model(args.model)
  params = jax.device_put(model.params)
  drafter, dparams = load_drafter(args.drafter, model.config, params)
  tok = model.tokenizer
  g = drafter.draft_len
  prompts = [ids for _, ids in holdout_token_prompts(tok, 64, args.max_prompt_tokens)]
  context = args.max_prompt_tokens + args.max_tokens + g + 1
  context = -(-context // 64) * 64
  sampling = SamplingParams(args.temperature)
  key = profile.profile_key(model.source, args.drafter, drafter_desc(drafter))
  results_path = out / "sweep.json"
  results = json.loads(results_path.read_text())["results"] if results_path.exists() else []
  have = {(r["users"], r["schedule"]) for r in results}
  for users in args.users:
    cost = None
    if {"alg1", "async"} & set(args.schedules):
      cost, _, _ = profile.load_or_measure(params, model.config, drafter, dparams, users, key)
    requests = max(args.min_requests, args.requests_per_user * users)
    for name in args.schedules:
      if (users, name) in have:  # resumable: a finished cell is kept
        continue
      engine = Engine(
        params,
        model.config,
        drafter,
        dparams,
        slots=users,
        max_context=context,
        max_tokens=args.max_tokens,
        schedule=make_policy(name, cost, g, args.threshold),
        stop_ids=tok.stop_ids,
        pad_id=tok.pad_id or 0,
      )
      warm_up(engine, tok, prompt_lengths=(16, 32, 64, 128, 256))
      engine.start()
      row = closed_loop(engine, prompts, users, requests, args.max_tokens, sampling)
      engine.shutdown()
      del engine
      # Dozens of compiled loops in one process exhaust XLA:CPU's code memory ("Unable to
      # allocate section memory"): drop them between cells.
      jax.clear_caches()
      row.update(users=users, schedule=name)
      results.append(row)
      print(
        f"users {users:3d} {name:9s}: {row['throughput']:7.1f} tok/s aggregate, "
        f"{row['per_user_tokens_per_second']:6.1f} per user, tau {row['tokens_per_round']:.2f}, "
        f"verified {row['verified_per_round']:.2f}/round",
        file=sys.stderr,
        flush=True,
      )
      meta = dict(
        command=" ".join(sys.argv),
        machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
        cpus=jax.device_count(),
        jax=jax.__version__,
        settings=vars(args),
      )
      results_path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
  return report(results, out)


def report(results, out: Path) -> int:
  results = sorted(results, key=lambda r: (r["users"], SCHEDULES.index(r["schedule"])))
  plot(results, out / "serving_pareto.png")
  lines = [
    "| users | schedule | tokens/s | per-user tokens/s | TTFT s | tau | verified/round |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in results:
    lines.append(
      f"| {r['users']} | {r['schedule']} | {r['throughput']:.1f} | "
      f"{r['per_user_tokens_per_second']:.1f} | {r['time_to_first_token']:.2f} | "
      f"{r['tokens_per_round']:.2f} | {r['verified_per_round']:.2f} |"
    )
  (out / "table.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
