"""Arithmetic for serving a DeepSeek-V3-size target with a DSpark drafter on a TPU v5p slice.

Nothing runs on a TPU: parameter counts come from our own modules' parameter shapes for the
published DeepSeek-V3 configuration (`jax.eval_shape`, nothing allocated), cache sizes from
`ModelConfig.cache_dims`, and the rest is arithmetic over the chip's published figures. The
numbers feed `docs/scale.md`.

    python experiments/scale_arithmetic.py --out results/scale_deepseek_v3_v5p.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import jax

# TPU v5p, per chip (Google Cloud's published figures).
V5P = {
  "hbm_bytes": 95e9,
  "hbm_bytes_per_s": 2.765e12,
  "bf16_flops": 459e12,
  "ici_bytes_per_s": 600e9,
}

# DeepSeek-V3's config.json (671B), in HF field names. Its RoPE is YaRN-scaled (factor 40),
# which changes no size here; the default RoPE keeps our loader's config builder usable.
DEEPSEEK_V3 = dict(
  model_type="deepseek_v3",
  vocab_size=129280,
  hidden_size=7168,
  intermediate_size=18432,
  moe_intermediate_size=2048,
  num_hidden_layers=61,
  num_attention_heads=128,
  num_key_value_heads=128,
  n_shared_experts=1,
  n_routed_experts=256,
  routed_scaling_factor=2.5,
  kv_lora_rank=512,
  q_lora_rank=1536,
  qk_rope_head_dim=64,
  v_head_dim=128,
  qk_nope_head_dim=128,
  n_group=8,
  topk_group=4,
  num_experts_per_tok=8,
  first_k_dense_replace=3,
  norm_topk_prob=True,
  hidden_act="silu",
  max_position_embeddings=163840,
  rms_norm_eps=1e-6,
  tie_word_embeddings=False,
  rope_theta=10000.0,
)


def count_params(tree) -> dict[str, int]:
  """Parameter counts by kind: routed and shared experts, routers, attention, dense MLP, rest
  (embedding, LM head, norms)."""
  counts = {
    "routed_experts": 0,
    "shared_experts": 0,
    "routers": 0,
    "attention": 0,
    "dense_mlp": 0,
    "other": 0,
  }
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    name = jax.tree_util.keystr(path)
    size = math.prod(leaf.shape)
    if "['router" in name:
      counts["routers"] += size
    elif "['mlp']" in name and "['shared']" in name:
      counts["shared_experts"] += size
    elif "['mlp']" in name and leaf.ndim == 3:
      counts["routed_experts"] += size
    elif "['attn']" in name:
      counts["attention"] += size
    elif "['mlp']" in name:
      counts["dense_mlp"] += size
    else:
      counts["other"] += size
  return counts


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="results/scale_deepseek_v3_v5p.json")
  parser.add_argument("--chips", type=int, default=64, help="v5p chips serving one replica")
  parser.add_argument("--expert", type=int, default=16, help="mesh expert axis")
  parser.add_argument("--tensor", type=int, default=4, help="mesh tensor axis")
  parser.add_argument("--batch", type=int, default=64, help="requests per replica")
  parser.add_argument("--context", type=int, default=8192, help="tokens per request")
  parser.add_argument("--block", type=int, default=7, help="DSpark draft tokens per round")
  args = parser.parse_args()
  assert args.expert * args.tensor == args.chips, "expert x tensor must equal the chips"

  from dspark_jax.config import DraftConfig
  from dspark_jax.drafters.build import make_drafter
  from dspark_jax.io.hf import config_from_hf
  from dspark_jax.models.kv_cache import KVCache
  from dspark_jax.models.transformer import param_shapes

  config = config_from_hf(DEEPSEEK_V3, "bfloat16")
  moe = config.moe
  target = count_params(param_shapes(config))
  total = sum(target.values())
  routed_active = target["routed_experts"] * moe.experts_per_token // moe.num_experts
  active = total - target["routed_experts"] + routed_active
  non_routed = total - target["routed_experts"]

  # A DSpark drafter as DeepSpec configures it (5 layers; 5 target feature layers spread over
  # the depth, as its (1, 9, 17, 25, 33) over Qwen3-8B's 36; G = 7).
  layers = config.num_layers
  draft_config = DraftConfig(
    block_size=args.block,
    target_layer_ids=tuple(1 + i * ((layers - 3) // 4) for i in range(5)),  # 1, 15, ..., 57
  )
  drafter = make_drafter(draft_config, config)
  draft_params = sum(math.prod(x.shape) for x in jax.tree.leaves(drafter.trainable_shapes()))

  bf16 = 2
  mla_bytes = KVCache.bytes_per_token(config)
  # The same attention without the latent: per head a (nope + rope)-wide key and a value.
  m = config.mla
  mha_bytes = (
    layers * config.num_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim) * bf16
  )

  chips, e_axis, t_axis = args.chips, args.expert, args.tensor
  # Routed experts over `expert` (their width over `tensor`); attention heads, dense and
  # shared MLP widths and the vocabulary over `tensor`; everything else (norms, the MLA
  # down-projections' latent side, routers) is small.
  per_chip_params = (target["routed_experts"] / (e_axis * t_axis) + non_routed / t_axis) * bf16
  cache_rows = args.batch * args.context
  # The latent cache has no head axis, so tensor parallelism cannot split it: with the batch
  # split over data x fsdp only (today's rules; data = 1 here) every chip holds all of it. With
  # the batch also split over the expert axis ("data-parallel attention", DeepSeek's layout)
  # each chip holds 1/expert of it.
  cache_replicated = cache_rows * mla_bytes
  per_chip_cache = cache_rows * mla_bytes / e_axis
  tokens_per_step = args.batch * (args.block + 1)  # verification of the anchor + G drafts
  moe_layers = layers - len(moe.dense_layers)
  # Dispatch and combine: every (token, expert) assignment crosses the mesh twice, D bf16 wide.
  a2a_bytes_per_token = 2 * moe.experts_per_token * config.hidden_size * bf16 * moe_layers
  a2a_per_chip_step = tokens_per_step * a2a_bytes_per_token / chips
  # A step reads at most every weight once; with B x (G + 1) x k assignments over 256 experts
  # nearly every expert is touched at this batch, so the bound is the whole per-chip share.
  step_read_s = per_chip_params / V5P["hbm_bytes_per_s"]
  step_flops_s = 2 * active * tokens_per_step / chips / V5P["bf16_flops"]
  draft_read_s = draft_params * bf16 / t_axis / V5P["hbm_bytes_per_s"]
  result = {
    "machine": "arithmetic only (no run); TPU v5p published per-chip figures",
    "v5p_per_chip": V5P,
    "args": vars(args),
    "target_params": {**target, "total": total, "active_per_token": active},
    "target_bytes_bf16": total * bf16,
    "drafter_params": draft_params,
    "drafter_feature_layers": list(draft_config.target_layer_ids),
    "kv_bytes_per_token": {"mla_bf16": mla_bytes, "mha_same_heads_bf16": mha_bytes},
    "per_chip": {
      "param_bytes": per_chip_params,
      "cache_bytes_batch_over_expert": per_chip_cache,
      "cache_bytes_replicated": cache_replicated,
      "hbm_fraction": (per_chip_params + per_chip_cache) / V5P["hbm_bytes"],
      "hbm_fraction_cache_replicated": (per_chip_params + cache_replicated) / V5P["hbm_bytes"],
    },
    "per_step": {
      "tokens": tokens_per_step,
      "all_to_all_bytes_per_token": a2a_bytes_per_token,
      "all_to_all_bytes_per_chip": a2a_per_chip_step,
      "all_to_all_s": a2a_per_chip_step / V5P["ici_bytes_per_s"],
      "weight_read_s": step_read_s,
      "matmul_s": step_flops_s,
      "drafter_weight_read_s": draft_read_s,
    },
  }
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
  g = lambda x: f"{x / 1e9:.2f} G"
  print(f"target params {g(total)} (active {g(active)}): {json.dumps(target)}")
  print(f"drafter params {g(draft_params)}; KV/token MLA {mla_bytes} B, MHA {mha_bytes} B")
  print(json.dumps({k: result[k] for k in ("per_chip", "per_step")}, indent=1))


if __name__ == "__main__":
  main()
