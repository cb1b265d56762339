"""`dspark-jax <command>`: the command-line entry point.

dspark-jax generate --model smollm2-135m --prompt "What is the capital of France?"

One module per command (or pair of commands) under this package; each adds its parser and runs
its arguments. Bad input raises ValueError / FileNotFoundError and is printed here as one line.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path

from dspark_jax import distributed
from dspark_jax.cli import calibrate, evaluate, generate, regenerate, schedule, serve, train

_PACKAGE = str(Path(__file__).resolve().parents[1])


@contextlib.contextmanager
def one_line_warnings(prefix: str):
  """Our warnings (a corrupt checkpoint skipped, a drafter trained for another target) as one
  line each, `<prefix>: warning: <message>`, instead of Python's file:line plus source echo."""
  show = warnings.showwarning

  def show_ours(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, UserWarning) and filename.startswith(_PACKAGE):
      print(f"{prefix}: warning: {message}", file=sys.stderr)
    else:
      show(message, category, filename, lineno, file, line)

  warnings.showwarning = show_ours
  try:
    yield
  finally:
    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="dspark-jax", description=__doc__.splitlines()[0])
  multi = parser.add_argument_group(
    "multi-host (before the command: dspark-jax --distributed train ...)"
  )
  multi.add_argument(
    "--distributed",
    action="store_true",
    help="initialise jax.distributed first, detecting the cluster (Cloud TPU VMs, SLURM)",
  )
  multi.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
  multi.add_argument("--num-processes", type=int)
  multi.add_argument("--process-id", type=int)
  sub = parser.add_subparsers(dest="command", required=True)
  generate.add_parser(sub)
  regenerate.add_parser(sub)
  train.add_parsers(sub)
  evaluate.add_parser(sub)
  calibrate.add_parser(sub)
  schedule.add_parser(sub)
  serve.add_parser(sub)
  try:
    args = parser.parse_args(argv)
  except SystemExit as e:  # argparse has printed the usage and the error (or --help)
    return int(e.code or 0)
  commands = {
    "generate": generate.run,
    "regenerate": regenerate.run,
    "train": train.run_train,
    "cache": train.run_cache,
    "eval": evaluate.run,
    "calibrate": calibrate.run,
    "profile": schedule.run_profile,
    "serve": serve.run,
  }
  try:
    with one_line_warnings(f"dspark-jax {args.command}"):
      distributed.initialize(
        distributed.DistributedArgs(
          args.distributed, args.coordinator, args.num_processes, args.process_id
        )
      )
      return commands[args.command](args)
  except (ValueError, FileNotFoundError) as e:
    # Bad input (invalid flags, missing or corrupt model files) gets one clear line, no trace.
    print(f"dspark-jax {args.command}: error: {e}", file=sys.stderr)
    return 2
