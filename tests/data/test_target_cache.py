"""Target-feature cache: contents equal the online features, resume after a kill, validation."""

import numpy as np
import pytest

from dspark_jax.data import target_cache as tc
from tests.tiny import tiny_model

LAYERS = (-1, 0)


def samples(n=7):
  rng = np.random.default_rng(0)
  out = []
  for i in range(n):
    p, r = 3 + i % 4, 2 + (3 * i) % 7
    tokens = tuple(int(t) for t in rng.integers(0, 64, p + r))
    out.append(tc.Sample(tokens, (0,) * p + (1,) * r))
  return out


def build(folder, data, config, params, **kwargs):
  kwargs = {"target_name": "tiny", "progress": False, **kwargs}
  return tc.build_cache(folder, data, params, config, LAYERS, **kwargs)


def test_regenerated_rows_become_samples_with_the_response_masked_in():
  rows = [
    {"prompt_ids": [1, 2], "response_ids": [5, 6, 2], "finish": "stop"},
    {"prompt_ids": [1], "response_ids": [], "finish": "error"},
    {"prompt_ids": [1, 2, 3], "response_ids": [7, 8, 9, 10], "finish": "length"},
  ]
  got = tc.samples_from_regenerated(rows, max_len=6)
  assert got == [
    tc.Sample((1, 2, 5, 6, 2), (0, 0, 1, 1, 1)),
    tc.Sample((1, 2, 3, 7, 8, 9), (0, 0, 0, 1, 1, 1)),
  ]


def test_cache_holds_the_online_features_and_resumes(tmp_path, monkeypatch):
  config, params = tiny_model("qwen3")
  data = samples()
  ref = build(tmp_path / "ref", data, config, params, batch_size=3, width_multiple=8)
  assert ref["complete"] and ref["estimated_bytes"] == sum(map(len, (s.tokens for s in data))) * (
    3 * 32 * 2 + 9
  )
  cache = tc.open_cache(tmp_path / "ref", config, params, LAYERS)
  for i in (0, 4, 6):
    got = cache.sample(i)
    feats, hidden = tc.online_features(params, np.asarray([data[i].tokens]), config, LAYERS)
    np.testing.assert_array_equal(got["input_ids"], data[i].tokens)
    np.testing.assert_array_equal(got["loss_mask"], data[i].loss_mask)
    np.testing.assert_array_equal(got["features"], np.asarray(feats[0]))
    np.testing.assert_array_equal(got["hidden"], np.asarray(hidden[0]))
    # The log-sum-exp of the logits of the stored (bfloat16) hidden state, in float64.
    head = np.asarray(
      params["embedding"] if config.tie_embeddings else np.asarray(params["lm_head"]).T, np.float64
    )
    logits = np.asarray(got["hidden"], np.float64) @ head.T
    top = logits.max(-1)
    lse = top + np.log(np.exp(logits - top[:, None]).sum(-1))
    np.testing.assert_allclose(got["target_lse"], lse, rtol=1e-5)

  # A writer killed after its second chunk (the manifest says 6 samples done), having written
  # part of its third chunk (garbage after sample 6's offset).
  real = tc._write_manifest

  def dying(folder, manifest):
    real(folder, manifest)
    if manifest["samples_done"] >= 6:
      raise KeyboardInterrupt("killed")

  monkeypatch.setattr(tc, "_write_manifest", dying)
  with pytest.raises(KeyboardInterrupt):
    build(tmp_path / "run", data, config, params, batch_size=3, width_multiple=8)
  monkeypatch.setattr(tc, "_write_manifest", real)
  lo = ref["offsets"][6]
  arrays = tc._arrays(tmp_path / "run", ref["offsets"][-1], config, len(LAYERS), create=False)
  arrays["features"][lo:].write(np.ones_like(arrays["features"][lo:].read().result())).result()
  with pytest.raises(tc.CacheError, match="incomplete"):
    tc.open_cache(tmp_path / "run", config, params, LAYERS)
  resumed = build(tmp_path / "run", data, config, params, batch_size=3, width_multiple=8)
  assert resumed["complete"]
  run = tc.open_cache(tmp_path / "run", config, params, LAYERS)
  for i in range(len(data)):
    a, b = run.sample(i), cache.sample(i)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_cache_validation_errors(tmp_path):
  config, params = tiny_model("qwen3")
  data = samples(3)
  build(tmp_path, data, config, params)
  with pytest.raises(tc.CacheError, match="layers"):
    tc.open_cache(tmp_path, config, params, (0,))
  other_config, other_params = tiny_model("qwen3", seed=5)
  with pytest.raises(tc.CacheError, match="another target"):
    tc.open_cache(tmp_path, other_config, other_params, LAYERS)
  wide_config, wide_params = tiny_model("qwen3", hidden_size=48)
  with pytest.raises(tc.CacheError, match="hidden size"):
    tc.open_cache(tmp_path, wide_config, wide_params, LAYERS)
  with pytest.raises(tc.CacheError, match="another cache"):
    build(tmp_path, samples(4), config, params)
  with pytest.raises(tc.CacheError, match="no target cache"):
    tc.open_cache(tmp_path / "none", config, params, LAYERS)
  with pytest.raises(tc.CacheError, match="more than max_bytes"):
    build(tmp_path / "big", data, config, params, max_bytes=10)


def test_several_caches_read_as_one(tmp_path):
  config, params = tiny_model("qwen3")
  data = samples()
  build(tmp_path / "a", data[:3], config, params, batch_size=2, width_multiple=8)
  build(tmp_path / "b", data[3:], config, params, batch_size=2, width_multiple=8)
  both = tc.open_caches(f"{tmp_path / 'a'},{tmp_path / 'b'}", config, params, LAYERS)
  assert both.num_samples == len(data)
  for i in (2, 3, 6):
    np.testing.assert_array_equal(both.sample(i)["input_ids"], data[i].tokens)
  want = [[t for t, m in zip(s.tokens, s.loss_mask, strict=True) if m] for s in data]
  assert [list(a) for a in both.answer_tokens()] == want
  with pytest.raises(IndexError):
    both.sample(len(data))
