"""The drafter training loop: data order, jitted step, orbax checkpoints, metrics, resume.

Everything a step depends on is a function of the step number and the seed: the batch (a seeded
permutation per epoch over the samples), the anchor RNG (fold_in(seed, step)) and the learning
rate. A checkpoint holds the trainable params, the optimizer state and a JSON record of the step,
seed and data position, so a run killed at any point and restarted continues with exactly the
losses an uninterrupted run produces. A newest checkpoint that no longer restores is moved aside
(`<step>.corrupt`) with a warning and the run resumes from the newest one that does. Metrics go
to `metrics.jsonl` (and TensorBoard when tensorboardX is installed); lines past the restored step
are dropped on resume. `train_config.json` records the run; paths and bookkeeping fields are not
part of its identity, so a run folder can be moved or copied (with its data) and resumed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from dspark_jax import sharding
from dspark_jax.config import ModelConfig, TrainConfig
from dspark_jax.data.target_cache import TargetCache, online_features, online_features_jit
from dspark_jax.decoding.generate import round_up
from dspark_jax.drafters.draft_vocab import draft_frozen
from dspark_jax.drafters.shared import final_norm_scale
from dspark_jax.training import feature_scale
from dspark_jax.training.objective import dspark_objective, eagle3_objective
from dspark_jax.training.run_folder import (  # noqa: F401 (TrainingError is part of this API)
  CorruptCheckpointWarning,
  TrainingError,
  check_run_folder,
  restore_newest,
  run_record,
)


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
  """AdamW with linear warmup and cosine decay to 0, after global-norm clipping."""
  warmup = max(1, int(round(config.warmup_fraction * total_steps)))
  schedule = optax.warmup_cosine_decay_schedule(
    0.0, config.learning_rate, warmup, max(total_steps, warmup + 1), end_value=0.0
  )
  return optax.chain(
    optax.clip_by_global_norm(config.grad_clip),
    optax.adamw(
      schedule, config.adam_b1, config.adam_b2, config.adam_eps, weight_decay=config.weight_decay
    ),
  )


def total_steps(config: TrainConfig, num_samples: int) -> int:
  per_epoch = max(1, num_samples // config.batch_size)
  steps = int(math.ceil(config.epochs * per_epoch)) if config.epochs > 0 else config.max_steps
  return min(steps, config.max_steps) if config.max_steps > 0 else steps


def batch_indices(
  step: int, num_samples: int, batch_size: int, seed: int
) -> tuple[np.ndarray, int]:
  """(sample indices of the step's batch, epoch): full batches of a seeded per-epoch order."""
  per_epoch = max(1, num_samples // batch_size)
  epoch, k = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(num_samples)
  return order[k * batch_size : (k + 1) * batch_size], epoch


LENGTH_BUCKET = 128


def host_batch(samples, cache: TargetCache | None, indices, max_len: int) -> dict[str, np.ndarray]:
  """[B, W] arrays (right-padded, mask 0 on padding) for one step. W is the batch's longest
  sample rounded up to a multiple of 128, at most max_len: a few shapes (a few compiles), and
  batches of short samples do not pay for max_len (padding cost the backbone half its work)."""
  b = len(indices)
  rows = [samples[i] if cache is None else cache.sample(int(i)) for i in indices]
  longest = max(len(r.tokens) if cache is None else len(r["input_ids"]) for r in rows)
  max_len = min(max_len, round_up(longest, LENGTH_BUCKET))
  tokens = np.zeros((b, max_len), np.int32)
  mask = np.zeros((b, max_len), np.int32)
  out: dict[str, Any] = {"tokens": tokens, "loss_mask": mask}
  for r, row in enumerate(rows):
    if cache is None:
      n = min(len(row.tokens), max_len)
      tokens[r, :n] = row.tokens[:n]
      mask[r, :n] = row.loss_mask[:n]
      continue
    n = min(len(row["input_ids"]), max_len)
    tokens[r, :n] = row["input_ids"][:n]
    mask[r, :n] = row["loss_mask"][:n]
    for name in ("features", "hidden", "target_lse"):
      if name not in row:
        continue
      if name not in out:
        out[name] = np.zeros((b, max_len, *row[name].shape[1:]), row[name].dtype)
      out[name][r, :n] = row[name][:n]
  return out


@dataclasses.dataclass(frozen=True)
class StepFn:
  """What the jitted train step depends on (static, hashable): equal runs share one compile."""

  drafter: Any
  target: ModelConfig
  config: TrainConfig  # with the fields that do not enter the step blanked (see `step_fn`)
  online: bool
  total_steps: int

  @property
  def optimizer(self) -> optax.GradientTransformation:
    return make_optimizer(self.config, self.total_steps)

  def loss(self, trainable, frozen, target_params, batch, rng, inv_scale_F=None):
    if self.online:
      feats, hidden = online_features(
        target_params, batch["tokens"], self.target, self.drafter.feature_layers
      )
      batch = {**batch, "features": feats, "hidden": hidden}
    if inv_scale_F is not None:  # preconditioning (feature_scale.py)
      batch = {**batch, "features": batch["features"].astype(inv_scale_F.dtype) * inv_scale_F}
    params = {"trainable": trainable, "frozen": frozen}
    if self.drafter.config.kind == "eagle3":
      loss, report = eagle3_objective(
        self.drafter,
        params,
        batch,
        rng,
        num_steps=self.config.eagle3_steps,
        num_anchors=self.drafter.config.num_anchors,
        remat=self.config.remat_loss,
      )
      return loss, report._asdict()
    loss, report = dspark_objective(
      self.drafter,
      params,
      batch,
      rng,
      num_anchors=self.drafter.config.num_anchors,
      anchor_chunk=self.config.anchor_chunk,
      remat=self.config.remat_loss,
    )
    return loss, report._asdict()


def step_fn(drafter, target: ModelConfig, config: TrainConfig, online: bool, steps: int):
  bookkeeping = dict(out_dir="", log_every=1, checkpoint_every=1, keep_checkpoints=1)
  return StepFn(drafter, target, dataclasses.replace(config, **bookkeeping), online, steps)


def _train_step(fn: StepFn, trainable, opt_state, frozen, target_params, batch, rng, inv_scale):
  (_, metrics), grads = jax.value_and_grad(fn.loss, has_aux=True)(
    trainable, frozen, target_params, batch, rng, inv_scale
  )
  updates, opt_state = fn.optimizer.update(grads, opt_state, trainable)
  trainable = optax.apply_updates(trainable, updates)
  metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
  return trainable, opt_state, metrics


# Module level, so runs with equal StepFn (a resumed run, say) reuse the compiled step.
_train_step_jit = jax.jit(_train_step, static_argnums=0, donate_argnums=(1, 2))


def initial_trainable(drafter, config: TrainConfig, target_params, target: ModelConfig):
  """Random trainable params from the seed; with `final_norm_from_target`, the final norm's
  scale starts at the target's effective one; with `init_layers_from_target`, the draft layers
  start as the target's top layers (`layers_from_target`)."""
  trainable = drafter.init_trainable(jax.random.key(config.seed))
  if config.init_layers_from_target:
    trainable = layers_from_target(trainable, target_params, target)
  if not config.final_norm_from_target:
    return trainable
  old = trainable["final_norm"]["scale"]
  norm = final_norm_scale(target_params, target).astype(old.dtype)
  return {**trainable, "final_norm": {**trainable["final_norm"], "scale": norm}}


def layers_from_target(trainable, target_params, target: ModelConfig):
  """Draft layers `layers_i` (i < n) replaced by copies of target layers L - n + i.

  A draft layer has the target layer's parameters (same names and shapes) plus q/k norms,
  which keep their init; Gemma-style norms (stored as w, applied as 1 + w) are converted to
  the draft's plain scales.

  Raises:
    TrainingError: the drafter has no such layers (Eagle3) or their shapes differ.
  """
  n = sum(1 for k in trainable if k.startswith("layers_"))
  if not n or "fc" not in trainable:
    raise TrainingError("init_layers_from_target needs a DSpark or DFlash drafter")
  total = target.num_layers
  out = dict(trainable)

  def copy(path, draft_leaf, source):
    name = jax.tree_util.keystr(path)
    if name not in source:  # q/k norms: the target has none
      return draft_leaf
    x = np.asarray(source[name], np.float32)
    if x.shape != tuple(draft_leaf.shape):
      raise TrainingError(
        f"init_layers_from_target: {name} is {x.shape} in the target, "
        f"{tuple(draft_leaf.shape)} in the drafter"
      )
    if target.gemma_style and name.endswith("['scale']"):
      x = x + 1.0
    return jax.numpy.asarray(x, draft_leaf.dtype)

  for i in range(n):
    layer = target_params[f"layers_{total - n + i}"]
    source = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(layer)}
    out[f"layers_{i}"] = jax.tree_util.tree_map_with_path(
      lambda p, x, source=source: copy(p, x, source), trainable[f"layers_{i}"]
    )
  return out


def measure_feature_scale(
  samples, cache: TargetCache | None, target_params, target: ModelConfig, layer_ids, max_len: int
) -> np.ndarray:
  """Per-dimension RMS [m*D] of the target features over the first samples (all their tokens)."""
  num = len(samples) if cache is None else cache.num_samples
  indices = list(range(min(num, feature_scale.NUM_SAMPLES)))
  if cache is not None:
    return feature_scale.feature_rms([cache.sample(i)["features"] for i in indices])
  tokens = host_batch(samples, None, indices, max_len)["tokens"]
  feats, _ = online_features_jit(target_params, tokens, config=target, layer_ids=tuple(layer_ids))
  feats = np.asarray(feats, np.float32)
  lengths = [min(len(samples[i].tokens), tokens.shape[1]) for i in indices]
  return feature_scale.feature_rms([feats[r, :n] for r, n in enumerate(lengths)])


def _to_json(metrics) -> dict:
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v)
    out[k] = float(v) if v.ndim == 0 else [float(x) for x in v.ravel()]
  return out


def train(
  config: TrainConfig,
  drafter,
  target_config: ModelConfig,
  target_params,
  *,
  samples=None,
  cache: TargetCache | None = None,
  init_trainable=None,
  stop_after: int | None = None,
  stop_at: int | None = None,
  mesh=None,
  progress: bool = True,
  draft_ids=None,
) -> dict:
  """Trains (or resumes) a drafter; returns the final params and the last metrics.

  With `config.precondition_features` the checkpoints hold W_c for rescaled features and the
  returned params have it folded back (feature_scale.py): save or evaluate the returned ones.

  Args:
    samples: training samples (online mode); or `cache` (offline mode) with their features.
    init_trainable: starting trainable params (default: random from the seed).
    stop_after: stop after this many steps of this call (to simulate a kill in tests).
    stop_at: stop once this step is done (a time-boxed slice of the run: the learning-rate
      schedule stays the full run's, and a later call continues from the checkpoint).
    mesh: a device mesh (`sharding.make_mesh`): the batch is split over its data axis and the
      drafter's params follow the logical rules; None runs on the default device.
    draft_ids: the [N] ascending target ids of a drafter with a reduced draft vocabulary
      (`draft_vocab.most_frequent_ids` of the training answers); recorded in the run folder,
      and a resume with other ids is refused.
  """
  import orbax.checkpoint as ocp
  from tqdm import tqdm

  if (samples is None) == (cache is None):
    raise TrainingError("give either samples (online features) or a target cache")
  try:
    draft_ids = drafter.checked_draft_ids(draft_ids)
  except ValueError as e:
    raise TrainingError(str(e)) from None
  num = len(samples) if samples is not None else cache.num_samples
  if num < config.batch_size:
    raise TrainingError(f"{num} samples cannot fill one batch of {config.batch_size}")
  out = Path(config.out_dir)
  out.mkdir(parents=True, exist_ok=True)
  record = run_record(config, num, cache is None, target_config)
  check_run_folder(out, record)
  (out / "train_config.json").write_text(json.dumps(record, sort_keys=True))
  if draft_ids is not None:
    _check_draft_ids_file(out, draft_ids)

  steps = total_steps(config, num)
  fn = step_fn(drafter, target_config, config, cache is None, steps)
  if mesh is not None:
    target_params = sharding.shard_params(target_config, target_params, mesh)
  frozen = draft_frozen(target_params, target_config, draft_ids)
  trainable = init_trainable
  if trainable is None:
    trainable = initial_trainable(drafter, config, target_params, target_config)
  if mesh is not None:
    trainable = sharding.shard_drafter_params(drafter, {"trainable": trainable}, mesh)["trainable"]
  opt_state = fn.optimizer.init(trainable)
  scale = inv_scale = None
  if config.precondition_features:
    scale = feature_scale.load_or_measure(
      out,
      lambda: measure_feature_scale(
        samples, cache, target_params, target_config, drafter.feature_layers, config.max_seq_len
      ),
    )
    inv_scale = jax.numpy.asarray(1.0 / scale)

  manager = ocp.CheckpointManager(
    (out / "checkpoints").absolute(),
    options=ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints, enable_async_checkpointing=False
    ),
  )
  abstract = jax.tree.map(
    ocp.utils.to_shape_dtype_struct, {"trainable": trainable, "opt": opt_state}
  )
  start, restored = restore_newest(manager, abstract)
  if restored is not None:
    trainable, opt_state = restored["state"]["trainable"], restored["state"]["opt"]
    if restored["position"]["seed"] != config.seed:
      raise TrainingError("checkpoint seed differs from the config's")

  metrics_file = out / "metrics.jsonl"
  if metrics_file.is_file():  # drop lines written after the restored checkpoint
    kept = [ln for ln in metrics_file.read_text().splitlines() if json.loads(ln)["step"] <= start]
    metrics_file.write_text("".join(line + "\n" for line in kept))
  writer = _tensorboard(out)

  def save(step):
    _, epoch = batch_indices(step, num, config.batch_size, config.seed)
    position = {"step": step, "seed": config.seed, "epoch": epoch}
    manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave({"trainable": trainable, "opt": opt_state}),
        position=ocp.args.JsonSave(position),
      ),
      force=True,
    )

  end = steps if stop_after is None else min(steps, start + stop_after)
  end = end if stop_at is None else max(start, min(end, stop_at))
  bar = tqdm(total=steps, initial=start, desc=f"train {drafter.config.kind}", disable=not progress)
  last = {}
  t0 = time.perf_counter()
  context = jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()
  with open(metrics_file, "a") as log, context:
    for step in range(start, end):
      indices, epoch = batch_indices(step, num, config.batch_size, config.seed)
      batch = host_batch(samples, cache, indices, config.max_seq_len)
      if mesh is not None:
        batch = {k: sharding.shard_batch(v, mesh) for k, v in batch.items()}
      rng = jax.random.fold_in(jax.random.key(config.seed), step)
      trainable, opt_state, metrics = _train_step_jit(
        fn, trainable, opt_state, frozen, target_params, batch, rng, inv_scale
      )
      if (step + 1) % config.log_every == 0 or step + 1 == end:
        last = {"step": step + 1, "epoch": epoch, **_to_json(metrics)}
        last["seconds"] = time.perf_counter() - t0
        log.write(json.dumps(last) + "\n")
        log.flush()
        if writer is not None:
          for k, v in last.items():
            if isinstance(v, float):
              writer.add_scalar(k, v, step + 1)
        bar.set_postfix(loss=f"{last['loss']:.3f}")
      if (step + 1) % config.checkpoint_every == 0 or step + 1 == end:
        save(step + 1)
      bar.update(1)
  bar.close()
  manager.wait_until_finished()
  if scale is not None:  # checkpoints hold W~; the returned drafter reads raw features
    trainable = feature_scale.fold_into_fc(trainable, scale)
  return {
    "trainable": trainable,
    "frozen": frozen,
    "metrics": last,
    "steps": end,
    "total_steps": steps,
  }


def _check_draft_ids_file(out: Path, draft_ids: np.ndarray) -> None:
  """Records the draft vocabulary in `out/draft_ids.json`, or refuses a resume with another."""
  path = out / "draft_ids.json"
  ids = [int(i) for i in draft_ids]
  if path.is_file():
    old = json.loads(path.read_text())
    if old != ids:
      raise TrainingError(
        f"{out} was trained with another draft vocabulary ({len(old)} ids; now {len(ids)}, "
        f"{sum(a != b for a, b in zip(old, ids, strict=False))} differ): use a new out_dir"
      )
    return
  path.write_text(json.dumps(ids))


def _tensorboard(out: Path):
  try:
    from tensorboardX import SummaryWriter
  except ImportError:
    return None
  return SummaryWriter(str(out / "tensorboard"))


def read_metrics(out_dir: str | Path) -> list[dict]:
  path = Path(out_dir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
