"""Run in a subprocess with 8 simulated CPU devices: training steps on data x tensor and
fsdp x tensor x expert meshes vs one device. Prints one JSON line; `tests/training/test_trainer.py` asserts on it."""

import dataclasses
import json
import os
import sys
import tempfile

import jax

# Simulated CPU devices through the config, not XLA_FLAGS, so flags the test run sets
# (tests/conftest.py) still reach this process.
jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")

import numpy as np  # noqa: E402

from dspark_jax import sharding  # noqa: E402
from dspark_jax.training import trainer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
from tests.training.test_trainer import setup  # noqa: E402


def main():
  assert jax.device_count() == 8
  with tempfile.TemporaryDirectory() as tmp:
    from pathlib import Path

    config, params, drafter, samples, tcfg = setup(Path(tmp))
    tcfg = dataclasses.replace(tcfg, batch_size=4, max_steps=3)
    one = trainer.train(tcfg, drafter, config, params, samples=samples, progress=False)
    one_losses = [m["loss"] for m in trainer.read_metrics(tcfg.out_dir)]
    out = {"one": one_losses}
    meshes = {"mesh": dict(data=4, tensor=2), "fsdp_mesh": dict(data=1, fsdp=2, tensor=2, expert=2)}
    for name, shape in meshes.items():
      mesh_cfg = dataclasses.replace(tcfg, out_dir=str(Path(tmp) / name))
      mesh = sharding.make_mesh(**shape)
      many = trainer.train(
        mesh_cfg, drafter, config, params, samples=samples, mesh=mesh, progress=False
      )
      out[name] = [m["loss"] for m in trainer.read_metrics(mesh_cfg.out_dir)]
      out[f"{name}_param_diff"] = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(
          jax.tree.leaves(one["trainable"]), jax.tree.leaves(many["trainable"]), strict=True
        )
      )
      spec = many["trainable"]["layers_0"]["attn"]["q_proj"].sharding.spec
      out[f"{name}_q_spec"] = [str(a) for a in spec]
  print(json.dumps(out))


if __name__ == "__main__":
  main()
