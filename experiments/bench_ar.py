"""Autoregressive decode speed: dspark-jax vs HF transformers `generate`, same prompts, same run.

    python experiments/bench_ar.py --num-prompts 12 --max-new-tokens 128

SmolLM2-135M-Instruct (the bundled GGUF, dequantised to float32 by both), greedy, chat template,
prompts = the first N/3 of gsm8k, humaneval and mt-bench bundled with the package (dspark_jax/benchmarks). Batch 1 runs
prompt by prompt, alternating the two systems; batch 8 runs groups of 8 (HF left-pads). Both
stop rows at EOS; tokens/s = generated tokens / wall seconds of the generation call including
prefill. Our compilation is excluded (reported separately); each system gets one warm-up call.
Writes results/bench_ar.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import torch

from dspark_jax.benchmarks import BENCHMARK_DIR
from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.io.load import load_model

ROOT = Path(__file__).resolve().parents[1]
EVAL = BENCHMARK_DIR


def load_prompts(n: int) -> list[str]:
  per = max(1, n // 3)
  prompts = []
  for name in ("gsm8k", "humaneval", "mt-bench"):
    with open(EVAL / f"{name}.jsonl") as f:
      rows = [json.loads(line) for line in f if line.strip()]
    prompts += [row["turns"][0] for row in rows[:per]]
  return prompts[:n]


def hf_generate(hf, ids_batch, max_new, eos, pad):
  """Greedy HF generate on a left-padded batch; returns per-row tokens up to EOS and seconds."""
  width = max(len(ids) for ids in ids_batch)
  input_ids = torch.full((len(ids_batch), width), pad)
  mask = torch.zeros((len(ids_batch), width), dtype=torch.long)
  for row, ids in enumerate(ids_batch):
    input_ids[row, width - len(ids) :] = torch.tensor(ids)
    mask[row, width - len(ids) :] = 1
  start = time.perf_counter()
  with torch.no_grad():
    out = hf.generate(
      input_ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False, pad_token_id=pad
    )
  seconds = time.perf_counter() - start
  rows = []
  for row in out[:, width:].tolist():
    rows.append(row[: row.index(eos) + 1] if eos in row else row)
  return rows, seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num-prompts", type=int, default=12)
  parser.add_argument("--max-new-tokens", type=int, default=128)
  parser.add_argument("--batch-sizes", default="1,8")
  parser.add_argument("--out", default=str(ROOT / "results" / "bench_ar.json"))
  args = parser.parse_args()

  import transformers as tf

  model = load_model("smollm2-135m")
  params = jax.device_put(model.params)
  tok = model.tokenizer
  eos = 2  # <|im_end|>, the model's EOS; HF stops at the same id
  path = model.source
  hf = tf.AutoModelForCausalLM.from_pretrained(
    str(path.parent), gguf_file=path.name, dtype=torch.float32
  ).eval()
  prompts = [
    tok.encode_chat([{"role": "user", "content": p}]) for p in load_prompts(args.num_prompts)
  ]
  gen = GenerateConfig(args.max_new_tokens, stop_ids=(eos,), pad_id=eos)

  results = {
    "command": "python experiments/bench_ar.py "
    + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
    "machine": {
      "platform": platform.platform(),
      "cpu_count": os.cpu_count(),
      "jax": jax.__version__,
      "jax_backend": jax.default_backend(),
      "torch": torch.__version__,
      "torch_threads": torch.get_num_threads(),
      "transformers": tf.__version__,
    },
    "batches": {},
  }
  for batch in [int(b) for b in args.batch_sizes.split(",")]:
    groups = [prompts[i : i + batch] for i in range(0, len(prompts), batch)]
    # Warm-up on the first group (compiles our programs for its shapes; warms torch).
    generate(params, model.config, groups[0], gen)
    hf_generate(hf, groups[0], 8, eos, eos)
    ours_rates, hf_rates, ours_tokens, hf_tokens, ours_s, hf_s = [], [], 0, 0, 0.0, 0.0
    compile_s, identical = 0.0, 0
    for i, group in enumerate(groups):
      # Alternate which system goes first so drifts in machine load hit both alike.
      order = ("ours", "hf") if i % 2 == 0 else ("hf", "ours")
      for system in order:
        if system == "ours":
          r = generate(params, model.config, group, gen)
          ours_out, seconds = r.tokens, r.prefill_seconds + r.decode_seconds
          compile_s += r.compile_seconds
          n = r.num_tokens
          ours_tokens += n
          ours_s += seconds
          ours_rates.append(n / seconds)
        else:
          hf_out, seconds = hf_generate(hf, group, args.max_new_tokens, eos, eos)
          n = sum(len(t) for t in hf_out)
          hf_tokens += n
          hf_s += seconds
          hf_rates.append(n / seconds)
      identical += sum(a == b for a, b in zip(ours_out, hf_out, strict=True))
      print(f"batch {batch} group {i}: ours {ours_rates[-1]:.1f} tok/s, hf {hf_rates[-1]:.1f}")
    entry = {
      "groups": len(groups),
      "ours_tokens_per_s_median": statistics.median(ours_rates),
      "hf_tokens_per_s_median": statistics.median(hf_rates),
      "ours_tokens_per_s_total": ours_tokens / ours_s,
      "hf_tokens_per_s_total": hf_tokens / hf_s,
      "speedup_total": (ours_tokens / ours_s) / (hf_tokens / hf_s),
      "ours_tokens": ours_tokens,
      "hf_tokens": hf_tokens,
      "ours_compile_s_excluded": compile_s,
      "rows_token_identical": f"{identical}/{len(prompts)}",
    }
    results["batches"][str(batch)] = entry
    print(json.dumps({batch: entry}, indent=1))
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=1))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
