"""The multi-host flags: validated before anything runs; without them nothing is initialised."""

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
