"""DSpark/DFlash/Eagle3: training mode equals inference mode, masks, shapes, bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from dspark_jax.config import DraftConfig, ModelConfig
from dspark_jax.drafters.base import Proposal
from dspark_jax.drafters.build import make_drafter
from dspark_jax.drafters.dflash import DFlashDrafter, dflash_config
from dspark_jax.drafters.dspark import DSparkDrafter, anchor_candidates, supervised_slots
from dspark_jax.drafters.eagle3 import Eagle3Drafter
from dspark_jax.io.deepspec import state_dict_shapes
from dspark_jax.models.transformer import forward
from tests.tiny import tiny_model
from tests.tiny_drafters import KINDS, random_drafter

T = 16


def sequence(config, params, drafter, seed=2):
  tokens = jax.random.randint(jax.random.key(seed), (1, T), 0, config.vocab_size)
  positions = jnp.arange(T)[None]
  features = forward(
    params, tokens, positions, config=config, feature_layers=drafter.feature_layers
  ).features
  return tokens, features


def train_logits(drafter, params, tokens, features, anchor):
  """Teacher-forced logits [G, V] (and confidence logits [G] or None) of the block at anchor."""
  g = drafter.draft_len
  if isinstance(drafter, Eagle3Drafter):
    steps = jax.jit(drafter.train_forward, static_argnums=3)(params, tokens, features, g)
    return jnp.stack([steps[j, 0, anchor + j] for j in range(g)]), None
  out = jax.jit(drafter.train_forward)(params, tokens, features, jnp.array([[anchor, 2]]))
  conf = None if out.confidence_logits is None else out.confidence_logits[0, 0]
  return out.logits[0, 0], conf


def inference_logits(drafter, params, tokens, features, prompt_len, anchor):
  """Inference-mode logits with the draft forced to the true tokens, reaching `anchor` through
  one committed round (anchor prompt_len, anchor - prompt_len - 1 drafts accepted)."""
  g, p = drafter.draft_len, prompt_len
  state = drafter.init_state(params, features[:, :p], tokens[:, :p], jnp.array([p]), 40)
  drafts = tokens[:, p + 1 : p + 1 + g]
  if isinstance(drafter, Eagle3Drafter):  # its proposal leaves provisional cache entries
    _, cache = drafter._draft(
      params, state, tokens[:, p], jnp.array([p]), lambda k, _: drafts[:, k]
    )
    state = state.replace(cache=cache)
  accepted = jnp.array([anchor - p - 1])
  state = drafter.commit(
    params, state, Proposal(drafts, None), tokens[:, p], features[:, p : p + g + 1], accepted
  )
  forced = tokens[:, anchor + 1 : anchor + 1 + g]
  return drafter.propose_forced(params, state, tokens[:, anchor], jnp.array([anchor]), forced)


@pytest.mark.parametrize("kind", KINDS)
def test_training_mode_equals_inference_mode(kind):
  config, target_params = tiny_model("qwen3", num_layers=3)
  drafter, params = random_drafter(kind, config, target_params)
  tokens, features = sequence(config, target_params, drafter)
  anchor = 9
  want, want_conf = train_logits(drafter, params, tokens, features, anchor)
  got = inference_logits(drafter, params, tokens, features, 5, anchor)
  assert float(jnp.abs(want).max()) > 0.1  # not a vacuous comparison
  np.testing.assert_allclose(got.logits[0], want, atol=2e-5, rtol=1e-5)
  if want_conf is not None:
    np.testing.assert_allclose(got.confidence[0], jax.nn.sigmoid(want_conf), atol=2e-6)


def test_dflash_equals_dspark_with_zero_head_bias():
  config, target_params = tiny_model("llama", num_layers=3)
  dspark, params = random_drafter("dspark-markov", config, target_params)
  params["trainable"]["markov_head"]["markov_w2"] = jnp.zeros_like(
    params["trainable"]["markov_head"]["markov_w2"]
  )
  dflash = DFlashDrafter(
    dataclasses.replace(dspark.config, kind="dflash", head="none", confidence_head=False), config
  )
  backbone = {k: v for k, v in params["trainable"].items() if not k.endswith("_head")}
  assert set(backbone) == set(dflash.trainable_shapes())
  tokens, features = sequence(config, target_params, dspark)
  anchors = jnp.array([[1, 6, 11]])
  a = dspark.train_forward(params, tokens, features, anchors)
  b = dflash.train_forward({**params, "trainable": backbone}, tokens, features, anchors)
  np.testing.assert_array_equal(a.logits, b.logits)
  assert b.confidence_logits is None


def test_block_sees_only_context_before_its_anchor_and_its_whole_block():
  config, target_params = tiny_model("qwen3", num_layers=3)
  drafter, params = random_drafter("dspark-rnn", config, target_params)
  tokens, features = sequence(config, target_params, drafter)
  g = drafter.draft_len
  anchors = jnp.array([[3, 9]])

  def block_output(features, which):
    return drafter.train_forward(params, tokens, features, anchors).logits[0, which].sum()

  for which, anchor in enumerate([3, 9]):
    grad = jax.jit(jax.grad(block_output), static_argnums=1)(features, which)[0]  # [T, F]
    influence = np.abs(np.asarray(grad)).sum(-1)
    assert np.all(influence[:anchor] > 0), (anchor, influence)  # every earlier context token
    assert np.all(influence[anchor:] == 0), (anchor, influence)  # nothing at/after the anchor

  # Every slot depends on every slot of its own block, and on no other block: perturb the
  # block input embeddings through the hidden-state function directly.
  model = drafter.model
  ctx = model.apply(
    {"params": params["trainable"]}, features, jnp.arange(T)[None], method=model.context_kv
  )
  x = jax.random.normal(jax.random.key(4), (1, 2, g, config.hidden_size))
  positions = anchors[..., None] + jnp.arange(g)
  visible = jnp.arange(T)[None, None] < anchors[..., None]
  hidden = lambda x: model.apply(
    {"params": params["trainable"]}, x, positions, ctx, visible, method=model.block_hidden
  )
  jac = jax.jit(jax.jacrev(hidden))(x)[0, :, :, :, 0]  # [A, G, D, A, G, D] (batch dims dropped)
  dependence = np.abs(np.asarray(jac)).sum(axis=(2, 5))  # [A, G, A, G]
  for a in range(2):
    assert np.all(dependence[a, :, a, :] > 0)  # bidirectional within the block
    assert np.all(dependence[a, :, 1 - a, :] == 0)  # blocks are independent


def test_anchor_and_supervision_masks():
  loss_mask = jnp.array([[0, 0, 1, 1, 1, 0, 1, 1]])
  np.testing.assert_array_equal(anchor_candidates(loss_mask)[0], [0, 0, 1, 1, 0, 0, 1, 0])
  sup = supervised_slots(jnp.array([[2, 6]]), loss_mask, 3)[0]
  # anchor 2: labels at 3, 4 in the mask, 5 not -> slots 0, 1; anchor 6: label 7, then the end.
  np.testing.assert_array_equal(sup, [[1, 1, 0], [1, 0, 0]])


QWEN3_4B = ModelConfig("qwen3", 151_936, 2560, 9728, 36, 32, 8, 128, tie_embeddings=True)


@pytest.mark.parametrize("head", ["markov", "gated", "rnn"])
def test_qwen3_4b_sized_shapes_match_the_deepspec_key_list(head):
  d, h, n, k, f, v, r, m = 2560, 32, 8, 128, 9728, 151_936, 256, 5
  drafter = DSparkDrafter(DraftConfig(head=head), QWEN3_4B)
  want = {
    "embed_tokens.weight": (v, d),
    "lm_head.weight": (v, d),
    "fc.weight": (d, m * d),
    "hidden_norm.weight": (d,),
    "norm.weight": (d,),
    "markov_head.markov_w1.weight": (v, r),
    "markov_head.markov_w2.weight": (v, r),
    "confidence_head.proj.weight": (1, d + r),
    "confidence_head.proj.bias": (1,),
  }
  for i in range(5):
    p = f"layers.{i}."
    want |= {
      p + "self_attn.q_proj.weight": (h * k, d),
      p + "self_attn.k_proj.weight": (n * k, d),
      p + "self_attn.v_proj.weight": (n * k, d),
      p + "self_attn.o_proj.weight": (d, h * k),
      p + "self_attn.q_norm.weight": (k,),
      p + "self_attn.k_norm.weight": (k,),
      p + "mlp.gate_proj.weight": (f, d),
      p + "mlp.up_proj.weight": (f, d),
      p + "mlp.down_proj.weight": (d, f),
      p + "input_layernorm.weight": (d,),
      p + "post_attention_layernorm.weight": (d,),
    }
  if head == "gated":
    want |= {"markov_head.gate_proj.weight": (r, d + r), "markov_head.gate_proj.bias": (r,)}
  if head == "rnn":
    want |= {
      "markov_head.joint_proj.weight": (3 * r, 2 * r + d),
      "markov_head.joint_proj.bias": (3 * r,),
    }
  assert state_dict_shapes(drafter) == want
  # The trainable set is everything but the (frozen, shared) embedding and LM head.
  trainable = traverse_util.flatten_dict(drafter.trainable_shapes())
  frozen = v * d  # tied: the LM head is the embedding
  assert sum(np.prod(s) for s in want.values()) - 2 * frozen == sum(
    np.prod(x.shape) for x in trainable.values()
  )
  assert not any("embed" in "/".join(p) and "norm" not in "/".join(p) for p in trainable)


def test_eagle3_shapes_take_two_width_inputs():
  drafter = Eagle3Drafter(
    DraftConfig(kind="eagle3", num_layers=1, head="none", confidence_head=False), QWEN3_4B
  )
  shapes = state_dict_shapes(drafter)
  assert shapes["layers.0.self_attn.q_proj.weight"] == (32 * 128, 2 * 2560)
  assert shapes["layers.0.self_attn.k_proj.weight"] == (8 * 128, 2 * 2560)
  assert shapes["layers.0.hidden_norm.weight"] == (2560,)
  assert shapes["fc.weight"] == (2560, 5 * 2560)


def test_bad_drafter_configs_raise_clear_errors():
  config, _ = tiny_model("llama", num_layers=4)
  with pytest.raises(ValueError, match="out of range"):
    make_drafter(DraftConfig(target_layer_ids=(0, 7)), config)
  with pytest.raises(ValueError, match="last layer"):
    make_drafter(DraftConfig(target_layer_ids=(0, 3)), config)
  with pytest.raises(ValueError, match="strictly increasing"):
    make_drafter(DraftConfig(target_layer_ids=(2, 1)), config)
  with pytest.raises(ValueError, match="block_size"):
    DraftConfig(block_size=0)
  with pytest.raises(ValueError, match="mask_token_id"):
    make_drafter(DraftConfig(target_layer_ids=(0, 1), mask_token_id=10_000), config)
  with pytest.raises(ValueError, match="no sequential or confidence head"):
    DraftConfig(kind="dflash")
  with pytest.raises(ValueError, match="exactly one layer"):
    make_drafter(dataclasses.replace(dflash_config(target_layer_ids=(0,)), kind="eagle3"), config)
