"""Regeneration with a tiny random target, run as a subprocess that the test kills mid-way.

usage: regen_worker.py OUT [SLEEP_SECONDS_PER_BATCH]
"""

import sys
import time

import jax

jax.config.update("jax_default_matmul_precision", "highest")

from dspark_jax.data.prompts import Prompt  # noqa: E402
from dspark_jax.data.regenerate import RegenConfig, regenerate, target_generate_batch  # noqa: E402
from dspark_jax.decoding.generate import GenerateConfig  # noqa: E402
from dspark_jax.decoding.sampling import SamplingParams  # noqa: E402
from tests.tiny import tiny_model  # noqa: E402

CONFIG = RegenConfig(max_new_tokens=12, max_prompt_tokens=20, batch_size=2, sort_window=4, seed=7)
STOP = (3,)


def prompts():
  """22 prompts; number 5 is too long and must be recorded as an error."""
  out = []
  for i in range(22):
    text = " ".join(f"w{i}x{j}" for j in range(2 + (i % 5) + (30 if i == 5 else 0)))
    out.append(Prompt(f"t:{i}", (("user", text),), "t"))
  return out


def encode(p):
  return [4 + (sum(map(ord, w)) % 60) for w in p.text.split()]


def decode(ids):
  return " ".join(map(str, ids))


def run(out, pause=0.0, limit=None, config=CONFIG):
  model_config, params = tiny_model("llama", scale=3.0)
  sampling = SamplingParams(CONFIG.temperature, CONFIG.top_k, CONFIG.top_p)
  gen = GenerateConfig(CONFIG.max_new_tokens, sampling, stop_ids=STOP)
  inner = target_generate_batch(params, model_config, gen, CONFIG.max_prompt_tokens, CONFIG.seed)

  def generate_batch(batch, request_ids):
    time.sleep(pause)
    return inner(batch, request_ids)

  return regenerate(
    prompts()[:limit],
    out,
    encode=encode,
    decode=decode,
    generate_batch=generate_batch,
    config=config,
    stop_ids=STOP,
    run_info={"model": "tiny"},
    progress=False,
  )


if __name__ == "__main__":
  run(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
