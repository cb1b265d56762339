"""Reduced draft vocabularies: lossless decoding, exact proposals, DeepSpec round trip."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.drafters import draft_vocab
from dspark_jax.io.deepspec import load_drafter, save_drafter
from dspark_jax.io.hf import CheckpointError
from tests.distribution import chi2_quantile_1e3, chi_square, exact_sequence_probs, sampled_requests
from tests.tiny import tiny_model
from tests.tiny_drafters import propose_args, random_drafter

PROMPTS = [[5, 9, 2, 33, 7, 1, 60, 5, 9, 2], [11, 4], [8, 8, 8, 20, 3, 8, 8], [1, 2, 3, 1, 2]]
SMALL = {"num_layers": 1, "target_layer_ids": (-1, 0)}


def test_most_frequent_ids_counts_keeps_always_and_fills():
  seqs = [[3, 3, 3, 5, 5, 9], [5, 1]]  # 3 and 5 three times each; 1 and 9 once each
  # 17 is forced in; the tie between 1 and 9 goes to the lower id.
  np.testing.assert_array_equal(draft_vocab.most_frequent_ids(seqs, 4, 20, (17,)), [1, 3, 5, 17])
  np.testing.assert_array_equal(draft_vocab.most_frequent_ids(seqs, 2, 20), [3, 5])
  filled = draft_vocab.most_frequent_ids([[7, 7]], 3, 10)
  np.testing.assert_array_equal(filled, [0, 1, 7])
  assert draft_vocab.coverage([1, 3], [[1, 2, 3, 4]]) == 0.5
  with pytest.raises(ValueError, match="ascending"):
    draft_vocab.check_draft_ids([3, 2], 10)
  with pytest.raises(ValueError, match="ascending"):
    draft_vocab.check_draft_ids([3, 10], 10)


def _restricted(kind, config, params, ids, seed=0, **overrides):
  full, fparams = random_drafter(kind, config, params, seed=seed, **SMALL, **overrides)
  return (full, fparams), draft_vocab.restrict(full, fparams, ids)


def _proposals(drafter, dparams, config, params, sampling):
  return drafter.propose(*propose_args(drafter, dparams, config, params, sampling))[0]


@pytest.mark.parametrize("kind", ["dspark-rnn", "eagle3"])
def test_restricted_proposal_is_the_full_one_renormalised(kind):
  """Greedy: the argmax over the kept tokens; its logits equal the full drafter's there and
  are -inf elsewhere, with the same forced tokens."""
  config, params = tiny_model("llama", scale=5.0)
  ids = np.arange(0, config.vocab_size, 3, dtype=np.int32)
  (full, fparams), (cut, cparams) = _restricted(kind, config, params, ids)
  assert cut.config.draft_vocab_size == ids.size
  got = _proposals(cut, cparams, config, params, SamplingParams(0.0))
  assert np.isin(np.asarray(got.tokens), ids).all()
  outside = np.setdiff1d(np.arange(config.vocab_size), ids)
  assert np.isneginf(np.asarray(got.logits)[..., outside]).all()
  if kind != "eagle3":  # a block drafter's slots do not depend on earlier draws' logits
    want = _proposals(full, fparams, config, params, SamplingParams(0.0))
    # Slot 0 sees the same inputs in both: its logits agree on the kept tokens.
    np.testing.assert_allclose(
      np.asarray(got.logits)[:, 0, ids], np.asarray(want.logits)[:, 0, ids], rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("kind", ["dspark-markov", "eagle3"])
def test_greedy_output_equals_plain_decoding(kind):
  config, params = tiny_model("llama", scale=5.0)
  ids = np.arange(0, config.vocab_size, 2, dtype=np.int32)
  _, (drafter, dparams) = _restricted(kind, config, params, ids)
  plain = generate(params, config, PROMPTS, GenerateConfig(20, stop_ids=(7,))).tokens
  got = speculative_generate(
    params, config, drafter, dparams, PROMPTS, SpecConfig(20, stop_ids=(7,))
  )
  assert got.tokens == plain


def test_the_map_survives_deepspec_save_and_load(tmp_path):
  config, params = tiny_model("llama", scale=5.0)
  ids = np.array([0, 2, 3, 7, 11, 40, 63], np.int32)
  _, (drafter, dparams) = _restricted("dspark-markov", config, params, ids)
  folder = save_drafter(tmp_path / "d", drafter, dparams, dtype="bfloat16")
  loaded, lparams = load_drafter(folder, config, params)
  assert loaded == drafter
  np.testing.assert_array_equal(lparams["frozen"]["draft_ids"], ids)
  w2 = np.asarray(dparams["trainable"]["markov_head"]["markov_w2"])
  got = np.asarray(lparams["trainable"]["markov_head"]["markov_w2"])
  np.testing.assert_allclose(got, w2, rtol=1e-2, atol=1e-2)  # bfloat16 on disk
  from safetensors.numpy import load_file

  tensors = load_file(str(folder / "model.safetensors"))
  assert tensors["d2t"].dtype == np.int64 and tensors["t2d"].dtype == bool
  np.testing.assert_array_equal(np.arange(ids.size) + tensors["d2t"], ids)
  assert tensors["t2d"].sum() == ids.size
  # W2 is stored at the full vocabulary (DeepSpec's shape), zero outside the kept tokens.
  full_w2 = tensors["markov_head.markov_w2.weight"]
  assert full_w2.shape == (config.vocab_size, drafter.config.markov_rank)
  assert not np.asarray(full_w2, np.float32)[np.setdiff1d(np.arange(config.vocab_size), ids)].any()
  # A d2t that disagrees with t2d is refused.
  tensors["t2d"][1] = True
  from safetensors.numpy import save_file

  save_file(tensors, str(folder / "model.safetensors"))
  with pytest.raises(CheckpointError, match="same draft vocabulary"):
    load_drafter(folder, config, params)


def test_init_params_needs_the_ids():
  config, params = tiny_model("llama", scale=5.0)
  from tests.tiny_drafters import make_drafter

  drafter = make_drafter("dspark-markov", config, draft_vocab_size=8, **SMALL)
  with pytest.raises(ValueError, match="needs 8 draft ids"):
    drafter.init_params(jax.random.key(0), params)
  p = drafter.init_params(jax.random.key(0), params, np.arange(8) * 2)
  assert p["trainable"]["markov_head"]["markov_w2"].shape == (8, 8)
  with pytest.raises(ValueError, match="exceeds the target vocabulary"):
    make_drafter("dspark-markov", config, draft_vocab_size=config.vocab_size + 1, **SMALL)
  assert dataclasses.replace(drafter.config, draft_vocab_size=0).draft_vocab(config) == 64


def _wrong_q(drafter):
  """A deliberately wrong variant: proposals drawn from the restricted drafter but reported
  with the full vocabulary's logits put back where the draft vocabulary left them -inf."""

  @dataclasses.dataclass(frozen=True)
  class Wrong(type(drafter)):
    def propose(self, params, state, *args):
      proposal, state = super().propose(params, state, *args)
      logits = jnp.where(jnp.isneginf(proposal.logits), 0.0, proposal.logits)
      return proposal.replace(logits=logits), state

  return Wrong(drafter.config, drafter.target)


@pytest.mark.slow
@pytest.mark.parametrize("wrong", [False, True])
def test_output_distribution_is_the_target_distribution(wrong):
  """First 3 tokens of 20,000 sampled requests vs exact enumeration, with a drafter that can
  propose only 3 of the 6 tokens; the wrong variant (q reported over the full vocabulary)
  must fail the same test."""
  vocab = 6
  config, params = tiny_model("llama", scale=3.0, vocab_size=vocab)
  _, (drafter, dparams) = _restricted(
    "dspark-markov", config, params, np.array([0, 2, 3], np.int32), seed=3, mask_token_id=5
  )
  if wrong:
    drafter = _wrong_q(drafter)
  sampling = SamplingParams(0.8, top_k=5)
  prompt = [1, 2, 3, 1]
  exact = exact_sequence_probs(config, params, prompt, 3, sampling)
  out = sampled_requests(params, config, drafter, dparams, prompt, sampling)
  stat, dof = chi_square([tuple(t) for t in out.tokens], exact)
  assert (stat < chi2_quantile_1e3(dof)) != wrong, (stat, dof)
