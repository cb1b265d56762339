"""Drafters in the DeepSpec checkpoint format: round trips, a torch-built folder, bad input."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dspark_jax.drafters.shared import frozen_parts
from dspark_jax.io.deepspec import load_drafter, save_drafter, write_calibration
from dspark_jax.io.hf import CheckpointError
from dspark_jax.models.transformer import forward
from tests.tiny import tiny_model
from tests.tiny_drafters import KINDS, random_drafter


def target(untied=False):
  return tiny_model("qwen3", num_layers=3, tie_embeddings=not untied)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_is_exact(kind, tmp_path):
  config, params = target(untied=kind == "dflash")
  drafter, dparams = random_drafter(kind, config, params)
  save_drafter(tmp_path, drafter, dparams)
  loaded, lparams = load_drafter(tmp_path, config, params)
  assert loaded == drafter
  assert lparams["frozen"]["embedding"] is params["embedding"]  # shared, not copied
  jax.tree.map(np.testing.assert_array_equal, lparams["trainable"], dparams["trainable"])


def test_a_bf16_folder_without_the_shared_tensors_loads_the_rounded_params(tmp_path):
  config, params = target()
  drafter, dparams = random_drafter("dspark-markov", config, params)
  save_drafter(tmp_path, drafter, dparams, dtype="bfloat16", include_shared=False)
  from safetensors import safe_open

  assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
  with safe_open(tmp_path / "model.safetensors", "flax") as f:
    assert "embed_tokens.weight" not in f.keys() and "lm_head.weight" not in f.keys()
    assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"bfloat16"}
  loaded, lparams = load_drafter(tmp_path, config, params)
  assert loaded == drafter
  assert lparams["frozen"]["embedding"] is params["embedding"]
  rounded = jax.tree.map(
    lambda x: np.asarray(np.asarray(x, jnp.bfloat16), np.float32), dparams["trainable"]
  )
  jax.tree.map(
    lambda a, b: np.testing.assert_array_equal(np.asarray(a, np.float32), b),
    lparams["trainable"],
    rounded,
  )
  with pytest.raises(ValueError, match="dtype"):
    save_drafter(tmp_path, drafter, dparams, dtype="float16")


def test_stored_sts_temperatures_rescale_only_the_confidence_logits(tmp_path):
  config, params = target()
  drafter, dparams = random_drafter("dspark-markov", config, params)
  save_drafter(tmp_path, drafter, dparams)
  temps = [0.5, 2.0, 1.0, 3.0][: drafter.draft_len]
  write_calibration(tmp_path, temps, {"ece_before": [0.1]})
  calibrated, cparams = load_drafter(tmp_path, config, params)
  assert calibrated.config.confidence_temperatures == tuple(temps)
  tokens = jnp.array([[5, 9, 2, 33, 7, 1]])
  feats = forward(
    params, tokens, jnp.arange(6)[None], config=config, feature_layers=drafter.feature_layers
  ).features
  forced = jnp.array([[3, 4, 5, 6][: drafter.draft_len]])

  def propose(d, p):
    state = d.init_state(p, feats[:, :5], tokens[:, :5], jnp.array([5]), 32)
    return d.propose_forced(p, state, tokens[:, 5], jnp.array([5]), forced)

  raw, sts = propose(drafter, dparams), propose(calibrated, cparams)
  np.testing.assert_allclose(sts.logits, raw.logits, rtol=1e-6)  # proposals unchanged
  logit = lambda c: np.log(c) - np.log1p(-c)
  np.testing.assert_allclose(
    logit(np.asarray(sts.confidence, np.float64)) * np.array(temps),
    logit(np.asarray(raw.confidence, np.float64)),
    rtol=1e-3,
    atol=1e-4,
  )
  offsets = [-0.5, 0.25, 0.0, 1.0][: drafter.draft_len]
  write_calibration(tmp_path, temps, None, offsets)  # Platt: z / T + b
  platt, pparams = load_drafter(tmp_path, config, params)
  assert platt.config.confidence_offsets == tuple(offsets)
  np.testing.assert_allclose(
    logit(np.asarray(propose(platt, pparams).confidence, np.float64)),
    logit(np.asarray(raw.confidence, np.float64)) / np.array(temps) + np.array(offsets),
    rtol=1e-3,
    atol=1e-4,
  )
  write_calibration(tmp_path, [1.0])  # wrong length: refused on load
  with pytest.raises(CheckpointError, match="confidence_temperatures"):
    load_drafter(tmp_path, config, params)
  write_calibration(tmp_path, temps, None, [float("nan")] * len(temps))
  with pytest.raises(CheckpointError, match="confidence_offsets"):
    load_drafter(tmp_path, config, params)


@pytest.mark.parametrize("head", ["gated", "rnn"])
def test_a_torch_built_deepspec_folder_gives_the_same_logits(head, tmp_path):
  """Tensors made with torch from DeepSpec's key list load to what the same numbers give when
  placed into our params by hand (the layout mapping below is written independently here)."""
  config, tparams = target()
  d, h, n, k, f, v, r = 32, 4, 2, 8, 48, 64, 8
  m, layers, g = 2, 2, 4
  gen = torch.Generator().manual_seed(0)
  rand = lambda *shape: 0.3 * torch.randn(*shape, generator=gen)
  sd = {
    "embed_tokens.weight": torch.tensor(np.array(tparams["embedding"])),
    "lm_head.weight": torch.tensor(np.array(tparams["embedding"])),
    "fc.weight": rand(d, m * d),
    "hidden_norm.weight": 1 + rand(d),
    "norm.weight": 1 + rand(d),
    "markov_head.markov_w1.weight": rand(v, r),
    "markov_head.markov_w2.weight": rand(v, r),
    "confidence_head.proj.weight": rand(1, d + r),
    "confidence_head.proj.bias": rand(1),
  }
  if head == "gated":
    sd |= {"markov_head.gate_proj.weight": rand(r, d + r), "markov_head.gate_proj.bias": rand(r)}
  else:
    sd |= {
      "markov_head.joint_proj.weight": rand(3 * r, 2 * r + d),
      "markov_head.joint_proj.bias": rand(3 * r),
    }
  for i in range(layers):
    p = f"layers.{i}."
    sd |= {
      p + "self_attn.q_proj.weight": rand(h * k, d),
      p + "self_attn.k_proj.weight": rand(n * k, d),
      p + "self_attn.v_proj.weight": rand(n * k, d),
      p + "self_attn.o_proj.weight": rand(d, h * k),
      p + "self_attn.q_norm.weight": 1 + rand(k),
      p + "self_attn.k_norm.weight": 1 + rand(k),
      p + "mlp.gate_proj.weight": rand(f, d),
      p + "mlp.up_proj.weight": rand(f, d),
      p + "mlp.down_proj.weight": rand(d, f),
      p + "input_layernorm.weight": 1 + rand(d),
      p + "post_attention_layernorm.weight": 1 + rand(d),
    }
  save_file(sd, str(tmp_path / "model.safetensors"))
  cfg = {
    "architectures": ["Qwen3DSparkModel"],
    "model_type": "qwen3",
    "block_size": g,
    "mask_token_id": 3,
    "target_layer_ids": [-1, 1],
    "num_anchors": 16,
    "markov_rank": r,
    "markov_head_type": head,
    "enable_confidence_head": True,
    "confidence_head_with_markov": True,
    "hidden_size": d,
    "intermediate_size": f,
    "num_hidden_layers": layers,
    "num_attention_heads": h,
    "num_key_value_heads": n,
    "head_dim": k,
    "vocab_size": v,
    "rms_norm_eps": 1e-6,
    "rope_theta": 100.0,
  }
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  drafter, loaded = load_drafter(tmp_path, config, tparams)

  t = lambda name: sd[name].numpy()
  lin = lambda name: t(name).T  # torch [out, in] -> ours [in, out]
  by_hand = {
    "fc": lin("fc.weight"),
    "hidden_norm": {"scale": t("hidden_norm.weight")},
    "final_norm": {"scale": t("norm.weight")},
    "markov_head": {
      "markov_w1": t("markov_head.markov_w1.weight"),
      "markov_w2": lin("markov_head.markov_w2.weight"),
    },
    "confidence_head": {
      "kernel": lin("confidence_head.proj.weight"),
      "bias": t("confidence_head.proj.bias"),
    },
  }
  if head == "gated":
    by_hand["markov_head"] |= {
      "gate_kernel": lin("markov_head.gate_proj.weight"),
      "gate_bias": t("markov_head.gate_proj.bias"),
    }
  else:
    by_hand["markov_head"] |= {
      "joint_kernel": lin("markov_head.joint_proj.weight"),
      "joint_bias": t("markov_head.joint_proj.bias"),
    }
  for i in range(layers):
    p = f"layers.{i}."
    by_hand[f"layers_{i}"] = {
      "attn": {
        "q_proj": lin(p + "self_attn.q_proj.weight").reshape(d, h, k),
        "k_proj": lin(p + "self_attn.k_proj.weight").reshape(d, n, k),
        "v_proj": lin(p + "self_attn.v_proj.weight").reshape(d, n, k),
        "o_proj": lin(p + "self_attn.o_proj.weight").reshape(h, k, d),
        "q_norm": {"scale": t(p + "self_attn.q_norm.weight")},
        "k_norm": {"scale": t(p + "self_attn.k_norm.weight")},
      },
      "mlp": {
        name: lin(p + f"mlp.{name}.weight") for name in ("gate_proj", "up_proj", "down_proj")
      },
      "input_norm": {"scale": t(p + "input_layernorm.weight")},
      "pre_mlp_norm": {"scale": t(p + "post_attention_layernorm.weight")},
    }
  direct = {"trainable": by_hand, "frozen": frozen_parts(tparams, config)}

  tokens = jax.random.randint(jax.random.key(1), (1, 14), 0, v)
  feats = forward(tparams, tokens, jnp.arange(14)[None], config=config, feature_layers=(-1, 1))
  anchors = jnp.array([[2, 7, 10]])
  want = drafter.train_forward(direct, tokens, feats.features, anchors)
  got = drafter.train_forward(loaded, tokens, feats.features, anchors)
  assert drafter.config.head == head and drafter.config.mask_token_id == 3
  np.testing.assert_array_equal(got.logits, want.logits)
  np.testing.assert_array_equal(got.confidence_logits, want.confidence_logits)


def test_drafter_for_another_target_is_refused(tmp_path):
  config, params = target()
  drafter, dparams = random_drafter("dspark-markov", config, params)
  save_drafter(tmp_path, drafter, dparams)
  wide, wide_params = tiny_model("qwen3", num_layers=3, hidden_size=48)
  with pytest.raises(CheckpointError, match="hidden_size=32 differs"):
    load_drafter(tmp_path, wide, wide_params)
  big_vocab, bv_params = tiny_model("qwen3", num_layers=3, vocab_size=80)
  with pytest.raises(CheckpointError, match="vocab_size=64 differs"):
    load_drafter(tmp_path, big_vocab, bv_params)
  shallow, sh_params = tiny_model("qwen3", num_layers=2)
  with pytest.raises(CheckpointError, match="cannot run on this target"):
    load_drafter(tmp_path, shallow, sh_params)  # layer 1 is the last layer of a 2-layer model


def test_unsupported_or_broken_folders(tmp_path):
  config, params = target()
  drafter, dparams = random_drafter("eagle3", config, params)
  save_drafter(tmp_path, drafter, dparams)
  cfg = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({**cfg, "architectures": ["Gemma4DSparkModel"]}))
  with pytest.raises(CheckpointError, match="not a DeepSpec drafter folder: architecture"):
    load_drafter(tmp_path, config, params)
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  from safetensors.numpy import load_file
  from safetensors.numpy import save_file as save_np

  tensors = load_file(str(tmp_path / "model.safetensors"))
  del tensors["layers.0.hidden_norm.weight"]
  save_np(tensors, str(tmp_path / "model.safetensors"))
  with pytest.raises(CheckpointError, match="no tensor 'layers.0.hidden_norm.weight'"):
    load_drafter(tmp_path, config, params)
  with pytest.raises(CheckpointError, match="drafter folder not found: .*nowhere"):
    load_drafter(tmp_path / "nowhere", config, params)
  (tmp_path / "empty").mkdir()
  with pytest.raises(CheckpointError, match="is not a DeepSpec drafter folder: it has no config"):
    load_drafter(tmp_path / "empty", config, params)


def test_tensors_the_config_does_not_describe_are_refused(tmp_path):
  """A DSpark folder whose config says rank 0 (DFlash) but which holds head tensors would load
  as a DFlash drafter with its heads silently dropped."""
  config, params = target()
  drafter, dparams = random_drafter("dspark-markov", config, params)
  save_drafter(tmp_path, drafter, dparams)
  cfg = json.loads((tmp_path / "config.json").read_text())
  cfg.update(markov_rank=0, enable_confidence_head=False)
  del cfg["markov_head_type"], cfg["confidence_head_with_markov"]
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(CheckpointError, match="tensors this dflash drafter does not use"):
    load_drafter(tmp_path, config, params)


@pytest.mark.parametrize("spelling", ["vanilla", "markov", "VANILLA"])
def test_the_plain_markov_head_is_read_in_either_spelling_and_written_as_deepspecs(
  spelling, tmp_path
):
  config, params = target()
  drafter, dparams = random_drafter("dspark-markov", config, params)
  save_drafter(tmp_path, drafter, dparams)
  cfg = json.loads((tmp_path / "config.json").read_text())
  assert cfg["markov_head_type"] == "vanilla"
  (tmp_path / "config.json").write_text(json.dumps({**cfg, "markov_head_type": spelling}))
  loaded, _ = load_drafter(tmp_path, config, params)
  assert loaded == drafter and loaded.config.head == "markov"


def test_folders_written_before_the_deepspec_config_still_load(tmp_path):
  """dspark-jax once wrote `dspark_jax_kind`, `markov_head_type: "markov"`, a rank for DFlash."""
  config, params = target(untied=True)
  for kind in ("dspark-markov", "dflash"):
    drafter, dparams = random_drafter(kind, config, params)
    save_drafter(tmp_path, drafter, dparams)
    cfg = json.loads((tmp_path / "config.json").read_text())
    head = "none" if kind == "dflash" else "markov"
    old = {
      **cfg,
      "dspark_jax_kind": drafter.config.kind,
      "markov_rank": 8,
      "markov_head_type": head,
    }
    (tmp_path / "config.json").write_text(json.dumps(old))
    loaded, _ = load_drafter(tmp_path, config, params)
    assert loaded == drafter


def test_open_drafter_reads_folders_and_ngram_and_cuts_proposals(tmp_path):
  from dspark_jax.drafters.ngram import NgramDrafter
  from dspark_jax.drafters.prefix import PrefixDrafter
  from dspark_jax.io.deepspec import open_drafter

  config, target_params = tiny_model("qwen3", num_layers=3)
  drafter, params = random_drafter("dspark-markov", config, target_params)
  save_drafter(tmp_path, drafter, params)
  folder, _ = open_drafter(str(tmp_path), config, target_params)
  assert folder.config == drafter.config
  cut, _ = open_drafter(str(tmp_path), config, target_params, verify_slots=2)
  assert isinstance(cut, PrefixDrafter) and cut.draft_len == 2 and cut.inner == folder
  ngram, none = open_drafter("ngram", config, target_params, ngram_len=5)
  assert none is None and ngram == NgramDrafter(5, config.vocab_size)
  with pytest.raises(ValueError, match="1 <= g <= 5"):
    open_drafter("ngram", config, target_params, ngram_len=5, verify_slots=6)
