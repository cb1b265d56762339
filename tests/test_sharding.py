"""The forward and generation on a mesh of 8 simulated CPU devices equal one device."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_worker(name: str) -> dict:
  """Runs tests/<name> in a subprocess (8 simulated devices) and returns its JSON line."""
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(
    [sys.executable, str(ROOT / "tests" / name)],
    capture_output=True,
    text=True,
    env=env,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.multidevice
def test_data_x_tensor_mesh_equals_single_device():
  result = run_worker("mesh_worker.py")
  assert result["devices"] == 8
  assert result["q_proj_spec"] == [None, "tensor", None]
  assert result["logit_diff"] < 1e-5
  assert result["tokens_equal"]


def test_make_mesh_checks_device_count():
  from dspark_jax.sharding import make_mesh

  with pytest.raises(ValueError, match="needs 6 devices"):
    make_mesh(data=2, tensor=3, devices=[object()] * 4)


@pytest.mark.multidevice
def test_dspark_proposal_on_a_mesh_equals_single_device():
  result = run_worker("drafter_mesh_worker.py")
  # Drafter weights follow the target's logical rules: heads and vocabulary over "tensor".
  assert result["q_proj_spec"] == ["None", "tensor", "None"]
  assert result["markov_w2_spec"] == ["None", "tensor"]
  assert result["logit_diff"] < 1e-5 and result["confidence_diff"] < 1e-6
  assert result["tokens_equal"]


@pytest.mark.multidevice
def test_moe_expert_parallel_and_sharded_moe_target_equal_single_device():
  result = run_worker("moe_mesh_worker.py")
  assert result["devices"] == 8
  for mesh, diff in result["expert_layer"].items():
    assert diff < 1e-5, mesh
  assert "skewed_expert4_ragged-emulated" in result["expert_layer"]
  for mesh in ("data2_expert4", "data2_tensor2_expert2", "fsdp2_expert2_tensor2"):
    assert result[f"gate_spec_{mesh}"][0] == "expert", result
    assert result[f"logit_diff_{mesh}"] < 1e-5, mesh
    assert result[f"tokens_equal_{mesh}"], mesh
  assert result["gate_spec_fsdp2_expert2_tensor2"] == ["expert", "fsdp", "tensor"]
  assert result["deepseek_q_spec"] == ["fsdp", "tensor", "None"]
  assert result["deepseek_logit_diff"] < 1e-5
  assert result["deepseek_tokens_equal"]
