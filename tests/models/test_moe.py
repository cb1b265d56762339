"""Mixture-of-experts: the grouped-matmul expert path against a per-expert loop and a dense
computation, the routers against HF transformers' own router modules, a Qwen3-MoE target
against transformers, and speculative decoding on an MoE target (greedy identity and the output
distribution)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dspark_jax.config import MoEConfig
from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.io.hf import load_hf_folder
from dspark_jax.models import moe
from dspark_jax.models.transformer import forward_jit as forward
from tests.decoding.test_loop import PROMPTS, drafters
from tests.distribution import chi2_quantile_1e3, chi_square, exact_sequence_probs, sampled_requests
from tests.hf_tiny import VOCAB, make_tiny_hf_model
from tests.tiny import tiny_model
from tests.tiny_drafters import random_drafter

TINY_MOE = MoEConfig(num_experts=5, experts_per_token=2, expert_size=24, dense_layers=(0,))


def expert_inputs(n=37, d=16, e=6, k=2, i=12, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  logits = rng.normal(size=(n, e)).astype(np.float32)
  weights, experts = moe.route_softmax(jnp.asarray(logits), k, True)
  w = [rng.normal(0, 0.3, size=s).astype(np.float32) for s in ((e, d, i), (e, d, i), (e, i, d))]
  return jnp.asarray(x), weights, experts, *map(jnp.asarray, w)


def test_ragged_expert_path_equals_the_loop_and_the_dense_references():
  args = expert_inputs()
  got = moe.routed_experts(*args, "silu")
  for ref in (moe.routed_experts_loop, moe.routed_experts_dense):
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref(*args, "silu")), atol=1e-5)


def test_ragged_expert_path_gradients_equal_the_dense_ones():
  x, weights, experts, gate, up, down = expert_inputs(seed=1)

  def loss(path, gate, up, down, x):
    return jnp.sum(jnp.sin(path(x, weights, experts, gate, up, down, "silu")))

  got = jax.grad(lambda *a: loss(moe.routed_experts, *a), argnums=(0, 1, 2, 3))(gate, up, down, x)
  want = jax.grad(lambda *a: loss(moe.routed_experts_dense, *a), argnums=(0, 1, 2, 3))(
    gate, up, down, x
  )
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-4)


def test_an_expert_no_token_chose_costs_nothing_and_breaks_nothing():
  x, weights, experts, gate, up, down = expert_inputs(seed=2)
  experts = jnp.where(experts == 3, 4, experts)  # expert 3 unused
  got = moe.routed_experts(x, weights, experts, gate, up, down, "silu")
  want = moe.routed_experts_loop(x, weights, experts, gate, up, down, "silu")
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


@pytest.mark.parametrize("normalize", [True, False])
def test_softmax_router_equals_qwen3_moe(normalize):
  import transformers as tf
  from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeTopKRouter

  cfg = tf.Qwen3MoeConfig(
    hidden_size=16, num_experts=8, num_experts_per_tok=3, norm_topk_prob=normalize
  )
  router = Qwen3MoeTopKRouter(cfg)
  torch.manual_seed(0)
  with torch.no_grad():
    router.weight.copy_(torch.randn_like(router.weight))
  x = torch.randn(20, 16)
  with torch.no_grad():
    _, want_w, want_i = router(x)
  logits = x.numpy() @ router.weight.detach().numpy().T
  w, i = moe.route_softmax(jnp.asarray(logits), 3, normalize)
  np.testing.assert_array_equal(np.asarray(i), want_i.numpy())
  np.testing.assert_allclose(np.asarray(w), want_w.numpy(), atol=1e-6)


def test_grouped_sigmoid_router_equals_deepseek_v3():
  import transformers as tf
  from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

  cfg = tf.DeepseekV3Config(
    hidden_size=16,
    n_routed_experts=16,
    num_experts_per_tok=4,
    n_group=4,
    topk_group=2,
    routed_scaling_factor=2.5,
    norm_topk_prob=True,
  )
  router = DeepseekV3TopkRouter(cfg)
  torch.manual_seed(1)
  with torch.no_grad():
    router.weight.copy_(torch.randn_like(router.weight))
    router.e_score_correction_bias.copy_(0.5 * torch.randn(16))
  x = torch.randn(30, 16)
  with torch.no_grad():
    _, want_w, want_i = router(x)
  config = MoEConfig(
    num_experts=16,
    experts_per_token=4,
    expert_size=8,
    router="sigmoid",
    num_groups=4,
    groups_per_token=2,
    routed_scale=2.5,
  )
  logits = x.numpy() @ router.weight.detach().numpy().T
  bias = router.e_score_correction_bias.numpy()
  w, i = moe.route_grouped_sigmoid(jnp.asarray(logits), jnp.asarray(bias), config)
  # HF's top-k is unsorted: compare each token's (expert -> weight) map.
  for row in range(30):
    got = dict(zip(np.asarray(i[row]).tolist(), np.asarray(w[row]).tolist(), strict=True))
    want = dict(zip(want_i[row].tolist(), want_w[row].tolist(), strict=True))
    assert got.keys() == want.keys(), row
    np.testing.assert_allclose([got[e] for e in want], list(want.values()), atol=1e-6)


def test_qwen3_moe_logits_and_greedy_tokens_match_transformers(tmp_path):
  hf_model = make_tiny_hf_model("qwen3_moe", tmp_path)
  config, params = load_hf_folder(tmp_path)
  assert config.moe is not None and config.moe.dense_layers == (0,)
  assert params["layers_1"]["mlp"]["gate_proj"].shape == (6, 64, 32)
  tokens = np.random.default_rng(0).integers(0, VOCAB, size=(2, 13))
  with torch.no_grad():
    want = hf_model(torch.tensor(tokens)).logits.numpy()
  positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
  out = forward(params, jnp.asarray(tokens), jnp.asarray(positions), config=config)
  np.testing.assert_allclose(np.asarray(out.logits), want, atol=1e-4, rtol=0)
  prompt = [5, 17, 3, 40, 2]
  with torch.no_grad():
    hf = hf_model.generate(
      torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0
    )[0, len(prompt) :].tolist()
  assert generate(params, config, [prompt], GenerateConfig(12)).tokens[0] == hf


def test_speculative_decoding_on_an_moe_target_is_greedy_identical():
  config, params = tiny_model("qwen3", scale=4.0, num_layers=3, moe=TINY_MOE)
  plain = generate(params, config, PROMPTS, GenerateConfig(20, stop_ids=(7,))).tokens
  dspark, dparams = random_drafter("dspark-markov", config, params)
  for name, drafter, dp in [*drafters(config, params)[:2], ("dspark", dspark, dparams)]:
    got = speculative_generate(params, config, drafter, dp, PROMPTS, SpecConfig(20, stop_ids=(7,)))
    assert got.tokens == plain, name


@pytest.mark.slow
def test_speculative_output_on_an_moe_target_follows_its_distribution():
  config, params = tiny_model("qwen3", scale=3.0, vocab_size=6, moe=TINY_MOE)
  prompt, sampling = [1, 2, 3, 1], SamplingParams(1.0)
  exact = exact_sequence_probs(config, params, prompt, 3, sampling)
  _, drafter, dparams = drafters(config, params, 6)[1]
  out = sampled_requests(params, config, drafter, dparams, prompt, sampling)
  stat, dof = chi_square([tuple(t) for t in out.tokens], exact)
  assert stat < chi2_quantile_1e3(dof), (stat, dof)
