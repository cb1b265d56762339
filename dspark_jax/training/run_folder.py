"""A training run's folder: which run it holds, and restoring its newest intact checkpoint.

`train_config.json` records the run's config plus the facts that stand in for its paths (the
number of samples, online or cached features, the target's architecture), so a folder moved or
copied together with its data resumes, while one that holds another run is refused by name of
the field that differs. Checkpoints are orbax step folders; one that no longer restores is moved
aside to `<step>.corrupt` (never deleted) and the run resumes from the newest that does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import inspect
import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from dspark_jax.config import ModelConfig, TrainConfig


class TrainingError(ValueError):
  """The run folder belongs to another configuration, or the data cannot feed this drafter."""


class CorruptCheckpointWarning(UserWarning):
  """A checkpoint did not restore; it was moved aside and an older one was used."""


# TrainConfig fields that are not part of a run's identity (train_config.json still records them,
# for information). Paths: a run folder moved or copied together with its data must resume, so
# what the paths stand for is compared instead: the number of training samples, online or cached
# features, and the target's architecture (see run_record). Bookkeeping: log_every, checkpoint_every,
# keep_checkpoints and the export options save_dtype, save_shared decide what is written and how
# often, never a step's numbers (step_fn blanks the first three for its compile cache for the same
# reason), so a resume may change them: checkpoint more often on a flaky machine, say. Memory
# knobs (anchor_chunk, remat_loss) stay: they change float rounding, and resumes are exact.
NOT_IDENTITY = (
  "out_dir",
  "regenerated",
  "feature_cache",
  "target",
  "log_every",
  "checkpoint_every",
  "keep_checkpoints",
  "save_dtype",
  "save_shared",
)


def run_record(config: TrainConfig, num_samples: int, online: bool, target: ModelConfig) -> dict:
  """What train_config.json holds: the config, and the data and target facts that stand in for
  its paths in the run's identity (as JSON values: tuples are lists)."""
  record = {
    **dataclasses.asdict(config),
    "num_samples": num_samples,
    "online": online,
    "target_model": dataclasses.asdict(target),
  }
  return json.loads(json.dumps(record, default=str))


def _flat(record: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in record.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def check_run_folder(out: Path, record: dict) -> None:
  """Raises TrainingError when out_dir's train_config.json is another run's: a field of the
  identity differs. Fields recorded on one side only are not compared (run folders written before
  num_samples, online and target_model were recorded still resume)."""
  path = out / "train_config.json"
  if not path.is_file():
    return
  try:
    saved = _flat(json.loads(path.read_text()))
  except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
    raise TrainingError(f"{path} is not a run record ({_short(e)}); use a new out_dir") from None
  mine = _flat(record)
  differ = [
    f"{key}: {saved[key]!r} there, {mine[key]!r} here"
    for key in sorted(saved.keys() & mine.keys())
    if key.split(".")[0] not in NOT_IDENTITY and saved[key] != mine[key]
  ]
  if differ:
    more = f"; {len(differ) - 3} more" if len(differ) > 3 else ""
    raise TrainingError(
      f"{out} holds a run with another config ({'; '.join(differ[:3])}{more}); use a new out_dir"
    )


def _short(error: BaseException, limit: int = 120) -> str:
  """A one-line reason for an exception."""
  text = " ".join(str(error).split())
  text = f"{type(error).__name__}: {text}" if text else type(error).__name__
  return text if len(text) <= limit else text[: limit - 3] + "..."


def _move_aside(step_dir: Path) -> Path:
  """Renames a step folder to `<step>.corrupt` (then .corrupt2, ...): orbax then neither lists it
  nor refuses to save that step again, and nothing is deleted."""
  for i in range(1, 1000):
    target = step_dir.with_name(f"{step_dir.name}.corrupt{i if i > 1 else ''}")
    if not target.exists():
      step_dir.rename(target)
      return target
  raise TrainingError(f"too many corrupt copies of {step_dir}; delete some")


def _never_retrieved(record: logging.LogRecord) -> bool:
  return "exception was never retrieved" not in record.getMessage()


@contextlib.contextmanager
def _quiet_abandoned_reads():
  """Drops the debris of failed orbax restores inside the block. Orbax stops at the first
  unreadable array and closes its event loop with the other reads in flight; each then reports
  'Event loop is closed', its own read error from a garbage-collected coroutine or future, or a
  never-awaited coroutine: dozens of tracebacks for one damaged file. Set `failed[0]` after a
  failure: on leaving, the block then collects the garbage and waits until those reports stop
  (none for 0.3 s, at most 5 s) before it lets unraisable reports through again."""
  previous = sys.unraisablehook
  dropped, failed = [0], [False]

  def hook(report):
    error = report.exc_value
    closed = isinstance(error, RuntimeError) and "loop is closed" in str(error)
    if closed or inspect.iscoroutine(report.object):
      dropped[0] += 1
    else:
      previous(report)

  sys.unraisablehook = hook
  asyncio_log = logging.getLogger("asyncio")
  asyncio_log.addFilter(_never_retrieved)
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
      try:
        yield failed
      finally:
        if failed[0]:
          gc.collect()
          seen, quiet_since, give_up = dropped[0], time.monotonic(), time.monotonic() + 5.0
          while time.monotonic() - quiet_since < 0.3 and time.monotonic() < give_up:
            time.sleep(0.05)
            if dropped[0] != seen:
              seen, quiet_since = dropped[0], time.monotonic()
          gc.collect()
  finally:
    sys.unraisablehook = previous
    asyncio_log.removeFilter(_never_retrieved)


def restore_newest(manager, abstract) -> tuple[int, Any]:
  """(step, restored items) of the newest checkpoint that restores, or (0, None) when there is
  none. Newer ones that fail (truncated, garbled or missing files: any exception) are moved aside
  with a CorruptCheckpointWarning each; when none restores, nothing is moved and TrainingError
  says which steps failed."""
  import orbax.checkpoint as ocp

  args = ocp.args.Composite(
    state=ocp.args.StandardRestore(abstract), position=ocp.args.JsonRestore()
  )
  step, restored, failed = 0, None, []
  with _quiet_abandoned_reads() as failures:
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        restored = manager.restore(step, args=args)
        if restored["position"]["step"] != step:
          raise ValueError(f"its position record says step {restored['position']['step']}")
        break
      except Exception as e:  # orbax and tensorstore raise all kinds for damaged files
        restored = None
        failed.append((step, _short(e)))
        failures[0] = True
  if restored is None and failed:
    steps = ", ".join(str(step) for step, _ in failed)
    steps = f"steps {steps} are" if len(failed) > 1 else f"step {steps} is"
    reasons = "; ".join(f"step {step}: {reason}" for step, reason in failed)
    raise TrainingError(
      f"no checkpoint in {manager.directory} restores ({steps} corrupt: {reasons}); delete or "
      "move those step folders (the run then starts over there) or use a new out_dir"
    )
  for bad, reason in failed:
    try:  # the default step name format: the folder is the step number
      moved = _move_aside(Path(manager.directory) / str(bad))
    except OSError as e:
      raise TrainingError(
        f"checkpoint step {bad} in {manager.directory} is corrupt ({reason}) and cannot be moved "
        f"aside ({_short(e)}); move or delete it, or use a new out_dir"
      ) from None
    warnings.warn(
      f"checkpoint step {bad} in {manager.directory} is corrupt ({reason}); moved it to "
      f"{moved.name}, resuming from step {step}",
      CorruptCheckpointWarning,
      stacklevel=3,
    )
  if failed:
    manager.reload()  # forget the moved steps (a later save of that step would be refused)
  return (step, restored) if restored is not None else (0, None)
