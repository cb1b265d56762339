"""Training: a killed run resumes to the uninterrupted losses; cache and online modes agree."""

import dataclasses
import gc
import json
import shutil
import sys
import time

import jax
import numpy as np
import pytest

from dspark_jax.config import TrainConfig
from dspark_jax.data import target_cache as tc
from dspark_jax.drafters.draft_vocab import most_frequent_ids
from dspark_jax.training import feature_scale, run_folder, trainer
from tests.tiny import tiny_model
from tests.tiny_drafters import make_drafter


def setup(tmp_path, kind="dspark-markov", draft_vocab_size=0, **overrides):
  config, params = tiny_model("qwen3")
  drafter = make_drafter(
    kind,
    config,
    num_anchors=6,
    num_layers=1,
    target_layer_ids=(-1, 0),
    draft_vocab_size=draft_vocab_size,
  )
  rng = np.random.default_rng(0)
  samples = []
  for i in range(12):
    p, r = 3 + i % 3, 6 + i % 5
    tokens = tuple(int(t) for t in rng.integers(0, 64, p + r))
    samples.append(tc.Sample(tokens, (0,) * p + (1,) * r))
  train_config = TrainConfig(
    draft=drafter.config,
    out_dir=str(tmp_path / "run"),
    max_seq_len=16,
    batch_size=4,
    epochs=2.0,
    anchor_chunk=4,
    log_every=1,
    checkpoint_every=2,
    learning_rate=3e-3,
    eagle3_steps=3,
    **overrides,
  )
  return config, params, drafter, samples, train_config


def losses_of(out_dir):
  return [(m["step"], m["loss"]) for m in trainer.read_metrics(out_dir)]


def test_killed_training_resumes_to_the_uninterrupted_losses(tmp_path, monkeypatch):
  config, params, drafter, samples, tcfg = setup(tmp_path)
  ref_cfg = dataclasses.replace(tcfg, out_dir=str(tmp_path / "ref"))
  ref = trainer.train(ref_cfg, drafter, config, params, samples=samples, progress=False)
  want = losses_of(ref_cfg.out_dir)
  assert [s for s, _ in want] == list(range(1, 7)) and ref["steps"] == 6
  assert want[-1][1] < want[0][1]  # it learns

  real = trainer.host_batch
  calls = {"n": 0}

  def crash_on_fifth(*args):
    calls["n"] += 1
    if calls["n"] == 5:  # step 5: after checkpoint 4 and after metrics of steps 1-4
      raise KeyboardInterrupt("killed")
    return real(*args)

  monkeypatch.setattr(trainer, "host_batch", crash_on_fifth)
  with pytest.raises(KeyboardInterrupt):
    trainer.train(tcfg, drafter, config, params, samples=samples, progress=False)
  monkeypatch.setattr(trainer, "host_batch", real)
  part = trainer.train(tcfg, drafter, config, params, samples=samples, stop_at=5, progress=False)
  assert (part["steps"], part["total_steps"]) == (5, 6)  # a time-boxed slice, then the rest
  trainer.train(tcfg, drafter, config, params, samples=samples, progress=False)
  assert losses_of(tcfg.out_dir) == want


@pytest.mark.parametrize("draft_vocab_size", [0, 20])
def test_cache_mode_equals_online_mode(tmp_path, draft_vocab_size):
  """With a reduced draft vocabulary the cached run normalises the target's N logits with the
  stored log-sum-exp, the online run with all V logits: the same losses either way."""
  config, params, drafter, samples, tcfg = setup(tmp_path, draft_vocab_size=draft_vocab_size)
  tcfg = dataclasses.replace(tcfg, epochs=1.0)
  ids = None
  if draft_vocab_size:
    answers = [[t for t, m in zip(s.tokens, s.loss_mask, strict=True) if m] for s in samples]
    ids = most_frequent_ids(answers, draft_vocab_size, config.vocab_size)
  online = trainer.train(
    tcfg, drafter, config, params, samples=samples, progress=False, draft_ids=ids
  )
  tc.build_cache(
    tmp_path / "cache",
    samples,
    params,
    config,
    drafter.feature_layers,
    target_name="tiny",
    progress=False,
  )
  cache = tc.open_cache(tmp_path / "cache", config, params, drafter.feature_layers)
  if draft_vocab_size:
    got = cache.answer_tokens()
    assert [list(a) for a in got] == answers
    assert "target_lse" in cache.sample(0)
  offline_cfg = dataclasses.replace(tcfg, out_dir=str(tmp_path / "offline"))
  offline = trainer.train(
    offline_cfg, drafter, config, params, cache=cache, progress=False, draft_ids=ids
  )
  np.testing.assert_allclose(
    [loss for _, loss in losses_of(offline_cfg.out_dir)],
    [loss for _, loss in losses_of(tcfg.out_dir)],
    rtol=1e-5,
  )
  assert online["steps"] == offline["steps"] == 3
  if draft_vocab_size:
    np.testing.assert_array_equal(online["frozen"]["draft_ids"], ids)
    assert online["frozen"]["draft_head"].shape == (config.hidden_size, draft_vocab_size)
    with pytest.raises(trainer.TrainingError, match="another draft vocabulary"):
      trainer.train(tcfg, drafter, config, params, samples=samples, draft_ids=ids + 1)
    with pytest.raises(trainer.TrainingError, match="needs 20 draft ids"):
      trainer.train(tcfg, drafter, config, params, samples=samples)


def test_preconditioned_training_rescales_features_resumes_and_exports_the_same_function(tmp_path):
  config, params, drafter, samples, tcfg = setup(tmp_path, precondition_features=True)
  tcfg = dataclasses.replace(tcfg, max_steps=2)
  result = trainer.train(tcfg, drafter, config, params, samples=samples, progress=False)
  want = losses_of(tcfg.out_dir)

  # The scale: per-dimension RMS over every token of the first samples, each run unpadded.
  feats = [
    np.asarray(
      tc.online_features_jit(params, np.array([s.tokens]), config, drafter.feature_layers)[0]
    )
    for s in samples[: feature_scale.NUM_SAMPLES]
  ]
  flat = np.concatenate([f[0].astype(np.float64) for f in feats])
  scale = np.load(tmp_path / "run" / feature_scale.FILE)
  np.testing.assert_allclose(scale, np.sqrt(np.mean(flat**2, 0)), rtol=1e-5)

  # Step 1 trained on rescaled features: its logged loss is the initial params' loss on x / s.
  fn = trainer.step_fn(drafter, config, tcfg, True, 2)
  indices, _ = trainer.batch_indices(0, len(samples), tcfg.batch_size, tcfg.seed)
  batch = trainer.host_batch(samples, None, indices, tcfg.max_seq_len)
  rng = jax.random.fold_in(jax.random.key(tcfg.seed), 0)
  init = drafter.init_trainable(jax.random.key(tcfg.seed))
  inv = jax.numpy.asarray(1 / scale)
  np.testing.assert_allclose(
    fn.loss(init, result["frozen"], params, batch, rng, inv)[0], want[0][1], rtol=1e-5
  )
  assert abs(float(fn.loss(init, result["frozen"], params, batch, rng)[0]) - want[0][1]) > 1e-4

  # The returned (folded) drafter on raw features = the trained W~ on rescaled features.
  folded = result["trainable"]
  trained = {**folded, "fc": folded["fc"] * scale[:, None]}
  raw, _ = fn.loss(folded, result["frozen"], params, batch, rng)
  pre, _ = fn.loss(trained, result["frozen"], params, batch, rng, inv)
  np.testing.assert_allclose(float(raw), float(pre), rtol=1e-5)

  # A run stopped after step 1 resumes with the stored scale to the same losses and drafter.
  again = dataclasses.replace(tcfg, out_dir=str(tmp_path / "again"))
  trainer.train(again, drafter, config, params, samples=samples, stop_at=1, progress=False)
  resumed = trainer.train(again, drafter, config, params, samples=samples, progress=False)
  assert losses_of(again.out_dir) == want
  np.testing.assert_allclose(resumed["trainable"]["fc"], folded["fc"], rtol=1e-6)


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_final_norm_from_target_starts_at_the_targets_effective_scale(tmp_path, family):
  config, params = tiny_model(family)
  params = {**params, "final_norm": {"scale": jax.numpy.linspace(-0.5, 2.0, config.hidden_size)}}
  drafter = make_drafter("dflash", config, num_layers=1, target_layer_ids=(-1, 0))
  tcfg = TrainConfig(draft=drafter.config, final_norm_from_target=True)
  got = trainer.initial_trainable(drafter, tcfg, params, config)["final_norm"]["scale"]
  want = np.linspace(-0.5, 2.0, config.hidden_size) + (1.0 if family == "gemma3" else 0.0)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  plain = trainer.initial_trainable(drafter, TrainConfig(draft=drafter.config), params, config)
  np.testing.assert_array_equal(plain["final_norm"]["scale"], np.ones(config.hidden_size))


def test_a_run_folder_with_another_config_is_refused(tmp_path):
  config, params, drafter, samples, tcfg = setup(tmp_path)
  trainer.train(
    dataclasses.replace(tcfg, max_steps=1), drafter, config, params, samples=samples, progress=False
  )
  with pytest.raises(trainer.TrainingError, match="another config"):
    trainer.train(tcfg, drafter, config, params, samples=samples, progress=False)


def test_eagle3_trains(tmp_path):
  config, params, drafter, samples, tcfg = setup(tmp_path, "eagle3")
  trainer.train(tcfg, drafter, config, params, samples=samples, progress=False)
  got = trainer.read_metrics(tcfg.out_dir)
  assert len(got) == 6 and got[-1]["loss"] < got[0]["loss"] and len(got[0]["step_ce"]) == 3


@pytest.mark.multidevice
def test_data_parallel_steps_on_8_devices_equal_one_device():
  from tests.test_sharding import run_worker

  result = run_worker("training/train_mesh_worker.py")
  for mesh in ("mesh", "fsdp_mesh"):
    np.testing.assert_allclose(result[mesh], result["one"], rtol=1e-5)
    assert result[f"{mesh}_param_diff"] < 1e-5
  # Heads stay split after the updates (and the width over fsdp).
  assert result["mesh_q_spec"][:2] == ["None", "tensor"]
  assert result["fsdp_mesh_q_spec"][:2] == ["fsdp", "tensor"]


def uninterrupted(tmp_path, **overrides):
  """(config, params, drafter, samples, train config, uninterrupted losses) of the tiny run."""
  config, params, drafter, samples, tcfg = setup(tmp_path, **overrides)
  ref = dataclasses.replace(tcfg, out_dir=str(tmp_path / "ref"))
  trainer.train(ref, drafter, config, params, samples=samples, progress=False)
  return config, params, drafter, samples, tcfg, losses_of(ref.out_dir)


def truncate_arrays(step_dir):
  """What an interrupted copy or a full disk leaves: the array data files cut in half."""
  files = [f for f in (step_dir / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
  assert files
  for f in files:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def test_a_corrupt_newest_checkpoint_is_moved_aside_and_the_run_resumes_from_the_older(tmp_path):
  config, params, drafter, samples, tcfg, want = uninterrupted(tmp_path)
  trainer.train(tcfg, drafter, config, params, samples=samples, stop_at=4, progress=False)
  ckpts = tmp_path / "run" / "checkpoints"
  assert sorted(p.name for p in ckpts.iterdir()) == ["2", "4"]
  truncate_arrays(ckpts / "4")

  with pytest.warns(run_folder.CorruptCheckpointWarning) as caught:
    trainer.train(tcfg, drafter, config, params, samples=samples, progress=False)
  (message,) = [str(w.message) for w in caught if w.category is run_folder.CorruptCheckpointWarning]
  assert "\n" not in message
  assert "checkpoint step 4" in message and "4.corrupt" in message
  assert "resuming from step 2" in message
  # Metrics of steps 3-4 were dropped with the checkpoint and written again by the resumed run.
  assert losses_of(tcfg.out_dir) == want
  assert sorted(p.name for p in ckpts.iterdir()) == ["4", "4.corrupt", "6"]


def test_a_run_whose_checkpoints_are_all_corrupt_is_refused_in_one_line(tmp_path):
  config, params, drafter, samples, tcfg = setup(tmp_path)
  trainer.train(tcfg, drafter, config, params, samples=samples, stop_at=4, progress=False)
  ckpts = tmp_path / "run" / "checkpoints"
  truncate_arrays(ckpts / "4")
  (ckpts / "2" / "state" / "_METADATA").unlink()  # a lost metadata file
  with pytest.raises(trainer.TrainingError) as error:
    trainer.train(tcfg, drafter, config, params, samples=samples, progress=False)
  message = str(error.value)
  assert "\n" not in message
  assert "step 4" in message and "step 2" in message and str(ckpts) in message
  assert "new out_dir" in message
  assert sorted(p.name for p in ckpts.iterdir()) == ["2", "4"]  # nothing moved or deleted


def test_a_failed_restore_leaves_no_tracebacks_of_its_abandoned_reads(
  tmp_path, monkeypatch, caplog, recwarn
):
  # Orbax stops at the first unreadable array and closes its event loop with the other reads in
  # flight; they used to print dozens of tracebacks ('Event loop is closed', 'exception was never
  # retrieved') on some tries, so try a few times, letting the garbage collector run each time.
  config, params, drafter, samples, tcfg = setup(tmp_path)
  trainer.train(tcfg, drafter, config, params, samples=samples, stop_at=2, progress=False)
  truncate_arrays(tmp_path / "run" / "checkpoints" / "2")
  reports = []
  monkeypatch.setattr(sys, "unraisablehook", reports.append)
  for _ in range(5):
    with pytest.raises(trainer.TrainingError, match="step 2 is corrupt"):
      trainer.train(tcfg, drafter, config, params, samples=samples, progress=False)
    gc.collect()
    time.sleep(0.3)
    gc.collect()
  assert [str(r.exc_value)[:80] for r in reports] == []
  assert "never retrieved" not in caplog.text
  assert [str(w.message) for w in recwarn if "never awaited" in str(w.message)] == []


def old_record(tcfg):
  """train_config.json as the code before paths left the config identity wrote it."""
  return json.dumps(dataclasses.asdict(tcfg), sort_keys=True, default=str)


@pytest.mark.parametrize("writer", ["current", "old"])
def test_a_moved_run_folder_resumes_where_it_stopped(tmp_path, writer):
  config, params, drafter, samples, tcfg, want = uninterrupted(tmp_path)
  trainer.train(tcfg, drafter, config, params, samples=samples, stop_at=4, progress=False)
  if writer == "old":
    (tmp_path / "run" / "train_config.json").write_text(old_record(tcfg))
  moved = tmp_path / "elsewhere" / "run"
  moved.parent.mkdir()
  shutil.move(tmp_path / "run", moved)
  # Paths and bookkeeping may change on resume; the losses may not.
  again = dataclasses.replace(
    tcfg,
    out_dir=str(moved),
    regenerated=str(tmp_path / "elsewhere" / "data.jsonl"),
    target="/somewhere/else/model",
    checkpoint_every=1,
    log_every=2,
    keep_checkpoints=3,
  )
  part = trainer.train(again, drafter, config, params, samples=samples, stop_at=5, progress=False)
  assert part["steps"] == 5
  assert losses_of(moved) == want[:5]  # steps 1-4 from before the move, then step 5
  assert sorted(p.name for p in (moved / "checkpoints").iterdir()) == ["2", "4", "5"]
  saved = json.loads((moved / "train_config.json").read_text())
  assert saved["out_dir"] == str(moved) and saved["num_samples"] == len(samples)


@pytest.mark.parametrize("writer", ["current", "old"])
def test_a_run_folder_refuses_another_learning_rate_and_names_it(tmp_path, writer):
  config, params, drafter, samples, tcfg = setup(tmp_path)
  trainer.train(tcfg, drafter, config, params, samples=samples, stop_at=2, progress=False)
  if writer == "old":
    (tmp_path / "run" / "train_config.json").write_text(old_record(tcfg))
  faster = dataclasses.replace(tcfg, learning_rate=1e-2)
  with pytest.raises(trainer.TrainingError, match=r"another config \(learning_rate: 0.003 ") as e:
    trainer.train(faster, drafter, config, params, samples=samples, progress=False)
  assert "\n" not in str(e.value)


def test_a_run_folder_refuses_another_number_of_samples(tmp_path):
  config, params, drafter, samples, tcfg = setup(tmp_path)
  trainer.train(tcfg, drafter, config, params, samples=samples, stop_at=2, progress=False)
  more = samples + samples[:1]  # 13 samples: the same 3 steps per epoch, another data order
  with pytest.raises(trainer.TrainingError, match="num_samples: 12 .* 13 "):
    trainer.train(tcfg, drafter, config, params, samples=more, progress=False)


def test_init_layers_from_target_copies_the_top_layers(tmp_path):
  config, params, drafter, samples, tcfg = setup(tmp_path)
  tcfg = dataclasses.replace(tcfg, init_layers_from_target=True)
  got = trainer.initial_trainable(drafter, tcfg, params, config)
  top = params[f"layers_{config.num_layers - 1}"]  # a 1-layer drafter takes the last layer
  for path, leaf in jax.tree_util.tree_leaves_with_path(top):
    name = jax.tree_util.keystr(path)
    mine = {
      jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(got["layers_0"])
    }
    np.testing.assert_array_equal(mine[name], leaf, err_msg=name)
  assert np.all(np.asarray(got["layers_0"]["attn"]["q_norm"]["scale"]) == 1.0)
  eagle = make_drafter("eagle3", config, target_layer_ids=(-1, 0))
  with pytest.raises(trainer.TrainingError, match="DSpark or DFlash"):
    trainer.initial_trainable(eagle, tcfg, params, config)
