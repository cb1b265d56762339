"""Checkpoint interop against files DeepSpec itself wrote (tests/io/data/deepspec_fixture).

The fixture holds drafter folders saved by DeepSpec's `save_pretrained` (vanilla, gated and RNN
heads, DFlash) for an untied tiny Qwen3 target, and the outputs DeepSpec's PyTorch forward gave
on fixed inputs (its README says which). Nothing in it was written by dspark-jax, so these tests
check our reading of the format against the reference, both ways: their folders load here with
no edits and give their numbers, and the folders we save are theirs, field for field.
"""

import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.io.deepspec import load_drafter, save_drafter
from dspark_jax.io.hf import load_hf_folder
from dspark_jax.models.transformer import forward

FIXTURE = Path(__file__).parent / "data" / "deepspec_fixture"
KINDS = ("vanilla", "gated", "rnn", "dflash")
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def reference():
  return dict(np.load(FIXTURE / "reference_outputs.npz"))


@pytest.fixture(scope="module")
def untied():
  return load_hf_folder(FIXTURE / "target")


@pytest.fixture(scope="module")
def tied(untied):
  """The same target with its LM head tied to the embedding (DeepSpec still saves lm_head)."""
  config, params = untied
  return dataclasses.replace(config, tie_embeddings=True), {
    k: v for k, v in params.items() if k != "lm_head"
  }


def _outputs(drafter, params, ref):
  """What the fixture records, computed by dspark-jax: the training forward at its anchors, and
  the inference path (a context cache of positions 0..8, then one block at anchor 9)."""
  tokens = jnp.asarray(ref["tokens"], jnp.int32)
  feats = jnp.asarray(ref["features"])
  a = int(ref["anchor"])
  g = drafter.draft_len
  out = {}
  kind_key = next(k for k in KINDS if f"{k}/block_logits" in ref)  # any kind: same anchors
  train = drafter.train_forward(
    params, tokens, feats, jnp.asarray(ref[f"{kind_key}/train_anchors"])[None]
  )
  out["train_block_logits"] = train.base_logits
  out["train_logits"] = train.logits
  out["train_confidence_logits"] = train.confidence_logits
  one = drafter.train_forward(params, tokens, feats, jnp.array([[a]]))
  out["block_logits"] = one.base_logits[0, 0]
  out["confidence_logits"] = None if one.confidence_logits is None else one.confidence_logits[0, 0]

  state = drafter.init_state(params, feats[:, :a], tokens[:, :a], jnp.array([a]), 32)
  anchor, pos = tokens[:, a], jnp.array([a])
  forced = drafter.propose_forced(params, state, anchor, pos, tokens[:, a + 1 : a + 1 + g])
  out["corrected_logits"] = forced.logits[0]
  out["confidence"] = None if forced.confidence is None else forced.confidence[0]
  greedy, _ = drafter.propose(
    params, state, anchor, pos, SamplingParams(), jnp.uint32(0), jnp.array([0], jnp.uint32)
  )
  out["greedy_tokens"] = greedy.tokens[0]
  return out


def _check_against_reference(out, ref, kind):
  for name in ("block_logits", "corrected_logits", "train_block_logits", "train_logits"):
    np.testing.assert_allclose(out[name], ref[f"{kind}/{name}"], **TOL, err_msg=name)
  np.testing.assert_array_equal(out["greedy_tokens"], ref[f"{kind}/greedy_tokens"])
  if kind == "dflash":
    assert out["confidence"] is None and out["train_confidence_logits"] is None
    return
  np.testing.assert_allclose(out["confidence_logits"], ref[f"{kind}/confidence_logits"], **TOL)
  np.testing.assert_allclose(
    out["train_confidence_logits"], ref[f"{kind}/train_confidence_logits"], **TOL
  )
  sigmoid = 1 / (1 + np.exp(-ref[f"{kind}/confidence_logits"].astype(np.float64)))
  np.testing.assert_allclose(out["confidence"], sigmoid, **TOL)  # the inference path's c_k


def test_our_target_gives_deepspec_features(untied, reference):
  config, params = untied
  tokens = jnp.asarray(reference["tokens"], jnp.int32)
  layers = tuple(int(i) for i in reference["layer_ids"])
  feats = forward(
    params, tokens, jnp.arange(tokens.shape[1])[None], config=config, feature_layers=layers
  )
  np.testing.assert_allclose(feats.features, reference["features"], **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_a_deepspec_folder_loads_unedited_and_gives_deepspec_outputs(kind, untied, reference):
  config, params = untied
  drafter, dparams = load_drafter(FIXTURE / f"drafter_{kind}", config, params)
  want_head = {"vanilla": "markov", "dflash": "none"}.get(kind, kind)
  assert drafter.config.kind == ("dflash" if kind == "dflash" else "dspark")
  assert drafter.config.head == want_head
  assert drafter.config.confidence_head == (kind != "dflash")
  _check_against_reference(_outputs(drafter, dparams, reference), reference, kind)


@pytest.mark.parametrize("tie", ["untied", "tied"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_folder_we_save_is_deepspecs_field_for_field(kind, tie, request, tmp_path, reference):
  config, params = request.getfixturevalue(tie)
  theirs = FIXTURE / f"drafter_{kind}"
  drafter, dparams = load_drafter(theirs, config, params)
  save_drafter(tmp_path, drafter, dparams)

  assert json.loads((tmp_path / "config.json").read_text()) == json.loads(
    (theirs / "config.json").read_text()
  )
  ours, ref_tensors = (
    load_file(tmp_path / "model.safetensors"),
    load_file(theirs / "model.safetensors"),
  )
  assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in ref_tensors.items()}
  for name, w in ref_tensors.items():
    if name == "lm_head.weight" and tie == "tied":
      # A tied target's head is its embedding; DeepSpec copies that into lm_head too.
      np.testing.assert_array_equal(ours[name], np.asarray(params["embedding"]))
    else:
      np.testing.assert_array_equal(ours[name], w, err_msg=name)  # bit for bit, float32

  again, aparams = load_drafter(tmp_path, config, params)
  assert again == drafter
  if tie == "untied":  # the fixture's numbers are for the untied target
    _check_against_reference(_outputs(again, aparams, reference), reference, kind)
