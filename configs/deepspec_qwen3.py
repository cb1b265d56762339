"""DeepSpec's defaults for DSpark, DFlash and Eagle3 drafters on Qwen3-4B, 8B and 14B.

    dspark-jax train configs/deepspec_qwen3.py size=4b drafter=dspark regenerated=... \
      target=/path/to/Qwen3-4B

Block 7, 5 drafter layers (Eagle3: 1), target layers [1, 9, 17, 25, 33] (4B, 8B: 36 layers) or
[1, 10, 19, 28, 37] (14B: 40 layers), 512 anchors per sequence, lr 6e-4 with 4% warmup and
cosine decay, grad clip 1.0, global batch 512 sequences of up to 4096 tokens, 10 epochs, seed 42.
The `smoke` variant keeps every field but the budget (2 steps, batch 2, 256 tokens).
"""

from dspark_jax.config import DraftConfig, TrainConfig

LAYERS = {"4b": (1, 9, 17, 25, 33), "8b": (1, 9, 17, 25, 33), "14b": (1, 10, 19, 28, 37)}
DRAFTERS = ("dspark", "dflash", "eagle3")


def draft_config(size: str, drafter: str) -> DraftConfig:
  layers = LAYERS[size]
  if drafter == "dspark":
    return DraftConfig(target_layer_ids=layers)
  if drafter == "dflash":
    return DraftConfig(kind="dflash", head="none", confidence_head=False, target_layer_ids=layers)
  return DraftConfig(
    kind="eagle3", num_layers=1, head="none", confidence_head=False, target_layer_ids=layers
  )


def get_config(size: str = "4b", drafter: str = "dspark", variant: str = "") -> TrainConfig:
  if size not in LAYERS or drafter not in DRAFTERS:
    raise ValueError(f"size in {sorted(LAYERS)}, drafter in {DRAFTERS}; got {size!r}, {drafter!r}")
  config = TrainConfig(
    draft=draft_config(size, drafter),
    target=f"Qwen3-{size.upper()}",
    out_dir=f"runs/qwen3_{size}_{drafter}",
    max_seq_len=4096,
    batch_size=512,
    epochs=10.0,
    learning_rate=6e-4,
    anchor_chunk=64,
    eagle3_steps=7,
  )
  if variant == "smoke":
    import dataclasses

    config = dataclasses.replace(config, max_seq_len=256, batch_size=2, max_steps=2, log_every=1)
  elif variant:
    raise ValueError(f"unknown variant {variant!r} (known: smoke)")
  return config
