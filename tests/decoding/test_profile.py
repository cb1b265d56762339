"""Cost profiles: measured on a tiny model, saved, found again, refused for another setting."""

import json

import pytest

from dspark_jax.decoding import profile, scheduler
from tests.tiny import tiny_model
from tests.tiny_drafters import random_drafter

SMALL = {"num_layers": 1, "target_layer_ids": (-1, 0)}


def _setup(tmp_path):
  config, params = tiny_model("llama", scale=5.0)
  drafter, dparams = random_drafter("dspark-markov", config, params, **SMALL)
  model_file = tmp_path / "model.bin"
  model_file.write_bytes(b"weights")
  key = profile.profile_key(model_file, None, "dspark, 4 slots")
  return config, params, drafter, dparams, key, model_file


def test_measure_save_load_and_refuse(tmp_path):
  config, params, drafter, dparams, key, model_file = _setup(tmp_path)
  path = tmp_path / "p.json"
  table, got_path, measured = profile.load_or_measure(
    params, config, drafter, dparams, 2, key, path=path, repeats=1
  )
  assert measured and got_path == path
  assert table.widths == scheduler.compiled_widths(drafter.draft_len)
  assert len(table.verify_seconds) == len(table.widths) and table.propose_seconds > 0
  again, _, measured = profile.load_or_measure(params, config, drafter, dparams, 2, key, path=path)
  assert not measured and again == table  # found, not measured again
  # Another batch is measured and added to the same file.
  profile.load_or_measure(params, config, drafter, dparams, 1, key, path=path, repeats=1)
  assert set(json.loads(path.read_text())["tables"]) == {"1", "2"}
  # The same file for other weights (or another machine, JAX version...) is refused.
  model_file.write_bytes(b"other weights")
  other = profile.profile_key(model_file, None, "dspark, 4 slots")
  with pytest.raises(profile.ProfileError, match="differs in: model"):
    profile.load_or_measure(params, config, drafter, dparams, 2, other, path=path)
  with pytest.raises(profile.ProfileError, match="no batch 3"):
    profile.cost_table(profile.load_profile(path, key), 3)


def test_unreadable_profiles_are_refused(tmp_path):
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(profile.ProfileError, match="not a cost profile"):
    profile.load_profile(bad)
  with pytest.raises(profile.ProfileError, match="no cost profile"):
    profile.load_profile(tmp_path / "missing.json")


def test_cost_tables_are_checked():
  with pytest.raises(ValueError, match="start at 1"):
    scheduler.CostTable((2, 3), (1.0, 1.0), 0.1)
  with pytest.raises(ValueError, match="one verification time per width"):
    scheduler.CostTable((1, 2), (1.0,), 0.1)
  with pytest.raises(ValueError, match="positive"):
    scheduler.CostTable((1, 2), (1.0, 0.0), 0.1)
