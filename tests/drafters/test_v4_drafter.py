"""The V4-style DSpark drafter (routed-expert backbone layers, a sliding context window): training
mode equals inference mode, the window is the only context a block sees, the speculative loop
stays lossless, it trains from the command-line override and round-trips through a folder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspark_jax.config import DraftConfig, MoEConfig, TrainConfig, override
from dspark_jax.data import target_cache as tc
from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.drafters.build import make_drafter
from dspark_jax.io.deepspec import load_drafter, save_drafter, state_dict_shapes
from dspark_jax.training import trainer
from tests.distribution import chi2_quantile_1e3, chi_square, exact_sequence_probs, sampled_requests
from tests.drafters.test_drafter_modes import T, inference_logits, sequence, train_logits
from tests.tiny import deepseek_style_moe, tiny_model
from tests.tiny_drafters import random_drafter

# Two backbone layers: the first keeps its dense MLP, the second routes over 4 experts (+ a
# shared one) with DeepSeek-V3's grouped sigmoid router, so both layer kinds and the bias run.
MOE = deepseek_style_moe(routed_scale=1.5)
WINDOW = 4  # short enough to cut into the tiny sequences


def v4_drafter(config, params, seed=0, **overrides):
  return random_drafter(
    "dspark-markov", config, params, seed, moe=MOE, context_window=WINDOW, **overrides
  )


def test_training_mode_equals_inference_mode():
  config, target_params = tiny_model("qwen3", num_layers=3)
  drafter, params = v4_drafter(config, target_params)
  assert "router_bias" in params["trainable"]["layers_1"]["mlp"]
  tokens, features = sequence(config, target_params, drafter)
  anchor = 10  # the window (6, 10) leaves out 9 of the 10 context tokens before it
  want, want_conf = train_logits(drafter, params, tokens, features, anchor)
  got = inference_logits(drafter, params, tokens, features, 5, anchor)
  assert float(jnp.abs(want).max()) > 0.1
  np.testing.assert_allclose(got.logits[0], want, atol=2e-5, rtol=1e-5)
  np.testing.assert_allclose(got.confidence[0], jax.nn.sigmoid(want_conf), atol=2e-6)


def test_a_block_sees_exactly_the_window_before_its_anchor():
  config, target_params = tiny_model("qwen3", num_layers=3)
  drafter, params = v4_drafter(config, target_params)
  tokens, features = sequence(config, target_params, drafter)
  anchors = jnp.array([[2, 9, 13]])

  def block_output(features, which):
    return drafter.train_forward(params, tokens, features, anchors).logits[0, which].sum()

  for which, anchor in enumerate([2, 9, 13]):
    grad = jax.jit(jax.grad(block_output), static_argnums=1)(features, which)[0]
    influence = np.abs(np.asarray(grad)).sum(-1)  # [T]
    seen = (np.arange(T) < anchor) & (np.arange(T) > anchor - WINDOW)
    assert np.all(influence[seen] > 0), (anchor, influence)
    assert np.all(influence[~seen] == 0), (anchor, influence)


PROMPTS = [[5, 9, 2, 33, 7, 1, 60, 5, 9, 2], [11, 4], [8, 8, 8, 20, 3, 8, 8], [1, 2, 3, 1, 2]]
SMALL = {"target_layer_ids": (-1, 0)}


def test_greedy_speculative_equals_plain_greedy():
  config, params = tiny_model("llama", scale=5.0)
  drafter, dparams = v4_drafter(config, params, **SMALL)
  for batch in (1, 4):
    prompts = PROMPTS[:batch]
    plain = generate(params, config, prompts, GenerateConfig(20, stop_ids=(7,))).tokens
    got = speculative_generate(
      params, config, drafter, dparams, prompts, SpecConfig(20, stop_ids=(7,))
    )
    assert got.tokens == plain, batch


@pytest.mark.slow
def test_output_distribution_is_the_target_distribution():
  """First 3 tokens of 20,000 requests (random verification lengths) vs exact enumeration."""
  config, params = tiny_model("llama", scale=3.0, vocab_size=6)
  drafter, dparams = v4_drafter(config, params, seed=3, mask_token_id=5, **SMALL)
  sampling = SamplingParams(0.8, top_k=5)
  prompt = [1, 2, 3, 1, 4, 2]  # longer than the window
  exact = exact_sequence_probs(config, params, prompt, 3, sampling)
  n = 20_000
  verify_len = np.random.default_rng(1).integers(0, drafter.draft_len + 1, n)
  out = sampled_requests(
    params, config, drafter, dparams, prompt, sampling, n, verify_len=verify_len
  )
  stat, dof = chi_square([tuple(t) for t in out.tokens], exact)
  assert stat < chi2_quantile_1e3(dof), (stat, dof)
  assert 0.1 * out.admitted.sum() < out.accepted.sum() < out.admitted.sum()


def test_folder_round_trip_names_experts_like_qwen3_moe(tmp_path):
  config, params = tiny_model("qwen3", num_layers=3)
  drafter, dparams = v4_drafter(config, params)
  names = state_dict_shapes(drafter)
  assert names["layers.1.mlp.experts.3.gate_proj.weight"] == (16, 32)  # [I, D] per expert
  assert names["layers.1.mlp.experts.0.down_proj.weight"] == (32, 16)
  assert names["layers.1.mlp.gate.weight"] == (4, 32)
  assert names["layers.1.mlp.gate.e_score_correction_bias"] == (4,)
  assert names["layers.1.mlp.shared_experts.up_proj.weight"] == (16, 32)
  assert "layers.0.mlp.gate_proj.weight" in names  # the dense-first layer
  save_drafter(tmp_path, drafter, dparams)
  loaded, lparams = load_drafter(tmp_path, config, params)
  assert loaded == drafter
  jax.tree.map(np.testing.assert_array_equal, lparams["trainable"], dparams["trainable"])


def test_trains_from_the_command_line_override(tmp_path):
  config, params = tiny_model("qwen3")
  base = DraftConfig(
    block_size=4, num_layers=1, target_layer_ids=(-1, 0), markov_rank=8, num_anchors=6
  )
  tcfg = override(
    TrainConfig(
      draft=base,
      out_dir=str(tmp_path / "run"),
      max_seq_len=16,
      batch_size=4,
      epochs=3.0,
      anchor_chunk=4,
      log_every=1,
      checkpoint_every=100,
      learning_rate=3e-3,
    ),
    ["draft.moe=num_experts:4,experts_per_token:2,expert_size:16", "draft.context_window=8"],
  )
  assert tcfg.draft.moe == MoEConfig(4, 2, 16) and tcfg.draft.context_window == 8
  drafter = make_drafter(tcfg.draft, config)
  rng = np.random.default_rng(0)
  samples = [
    tc.Sample(tuple(int(t) for t in rng.integers(0, 64, 12)), (0,) * 4 + (1,) * 8) for _ in range(8)
  ]
  result = trainer.train(tcfg, drafter, config, params, samples=samples, progress=False)
  losses = [m["loss"] for m in trainer.read_metrics(tcfg.out_dir)]
  assert len(losses) == 6 and losses[-1] < losses[0]
  save_drafter(
    tmp_path / "drafter", drafter, {"trainable": result["trainable"], "frozen": result["frozen"]}
  )
  loaded, _ = load_drafter(tmp_path / "drafter", config, params)
  assert loaded.config == tcfg.draft
