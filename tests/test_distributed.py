"""The multi-host flags: validated before anything runs; without them nothing is initialised."""

import numpy as np
import pytest

from dspark_jax import distributed
from dspark_jax.cli import main


def test_no_flags_initialise_nothing():
  assert distributed.initialize(distributed.DistributedArgs()) is False


@pytest.mark.parametrize(
  "args, match",
  [
    (distributed.DistributedArgs(coordinator="h:1"), "together"),
    (distributed.DistributedArgs(coordinator="h:1", num_processes=2, process_id=2), "process-id"),
    (distributed.DistributedArgs(coordinator="host", num_processes=2, process_id=0), "host:port"),
  ],
)
def test_partial_or_bad_settings_are_refused(args, match):
  with pytest.raises(ValueError, match=match):
    distributed.initialize(args)


def test_the_cli_refuses_them_in_one_line(capsys):
  rc = main(["--coordinator", "h:1", "generate", "--model", "smollm2-135m", "--prompt", "hi"])
  assert rc == 2
  assert "give --coordinator, --num-processes and --process-id together" in capsys.readouterr().err


@pytest.mark.multiprocess
def test_two_local_processes_train_and_decode_like_one():
  """Two JAX processes (2 CPU devices each, the CPU collectives) joined by the CLI's
  `jax.distributed` wrapper: a drafter training step and a decode step on the 4-device mesh
  equal one device's."""
  import json
  import os
  import socket
  import subprocess
  import sys
  from pathlib import Path

  root = Path(__file__).resolve().parents[1]
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
  env = {**os.environ, "PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu"}
  worker = str(root / "tests" / "multiprocess_worker.py")
  procs = [
    subprocess.Popen(
      [sys.executable, worker, str(i), "2", port],
      env=env,
      text=True,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err[-3000:]
  result = json.loads(outs[0][0].strip().splitlines()[-1])
  assert result["processes"] == 2 and result["devices"] == 4
  np.testing.assert_allclose(result["losses_mesh"], result["losses_one"], rtol=1e-5)
  assert result["param_diff"] < 1e-5 and result["logit_diff"] < 1e-5
