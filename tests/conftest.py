"""Shared test setup.

- float32 matmuls at full precision, so parity tolerances mean something.
- Cost profiles (`decoding.profile`) go to a temporary folder, never the user's cache.
- XLA:CPU compiles with LLVM's cheap pipeline. The unit tests run tiny programs that each
  compile once, so compilation, not execution, is most of the suite's time; the cheap pipeline
  cuts it by about a third (measured on tests/decoding/test_loop.py's greedy matrix: 49 s to
  34 s), while compute-bound tests (the 20,000-request distribution tests, the real model) run
  as fast as before. The program's semantics do not change: XLA:CPU does not reassociate
  floating point at any optimisation level. Subprocesses (simulated meshes, the server, the
  CLI) inherit the flags through the environment. DSPARK_JAX_TEST_FULL_OPT=1 turns this off,
  and so does a GPU or TPU on the machine.
- Tests marked `extended` (heavier repeats of what the default tests already cover: more
  parametrisations, the notebooks beyond the quickstart, a second real model) are skipped
  unless pytest gets `--extended` (`make test-extended`): the default run has 15 minutes on
  2 cores.
"""

import glob
import os
import tempfile


def _accelerator_present() -> bool:
  """A GPU or TPU this run may use (checked before jax starts a backend, from device files)."""
  if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
    return False
  return bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/accel[0-9]*"))


# Only on CPU-only machines: the optimisation level applies to every backend, and a device
# machine's tests should compile as its users' programs do.
if os.environ.get("DSPARK_JAX_TEST_FULL_OPT") != "1" and not _accelerator_present():
  _CHEAP = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_CHEAP}".strip()

import jax  # noqa: E402 - after XLA_FLAGS, which the backend reads when it starts
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
os.environ.setdefault("DSPARK_JAX_CACHE", tempfile.mkdtemp(prefix="dspark-jax-test-cache-"))


def pytest_addoption(parser):
  parser.addoption(
    "--extended",
    action="store_true",
    help="also run the tests marked `extended` (heavier repeats of default coverage)",
  )


# The longest files (by a full run's durations), scheduled first: `--dist loadfile` hands
# files to the two workers in collection order, so a long file collected last would leave one
# worker running it alone at the end.
LONGEST_FILES = (
  "tests/training/test_trainer.py",
  "tests/serving/test_server.py",
  "tests/decoding/test_scheduler.py",
  "tests/decoding/test_loop.py",
  "tests/drafters/test_drafter_loop.py",
  "tests/models/test_real_smollm2.py",
  "tests/serving/test_engine.py",
  "tests/test_sharding.py",
)


def _schedule_rank(item) -> int:
  path = item.nodeid.split("::", 1)[0]
  return LONGEST_FILES.index(path) if path in LONGEST_FILES else len(LONGEST_FILES)


def pytest_collection_modifyitems(config, items):
  items.sort(key=_schedule_rank)  # stable: the order within a file is kept
  if config.getoption("--extended") or os.environ.get("DSPARK_JAX_EXTENDED_TESTS") == "1":
    return
  skip = pytest.mark.skip(reason="extended tier: run with --extended (make test-extended)")
  for item in items:
    if "extended" in item.keywords:
      item.add_marker(skip)
