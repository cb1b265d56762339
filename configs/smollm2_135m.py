"""CPU-sized DSpark, DFlash and Eagle3 drafters for SmolLM2-135M-Instruct (30 layers, d 576).

    dspark-jax train configs/smollm2_135m.py drafter=dspark

One identical budget for the three drafters, sized for a 2-core CPU (see TRAINING.md for the
measured wall time): the regenerated ShareGPT answers in `data/smollm2_sharegpt_train.jsonl`,
sequences cut at 512 tokens, batch 4, 16 anchors per sequence, 8 epochs. Each step supervises
the same 4 x 16 rounds of 7 predictions for every drafter (Eagle3's training-time test takes its
loss on the same sampled anchors). Small steps on purpose: the first budget (batch 8, 32 anchors,
4 epochs: the same number of supervised predictions in a quarter of the steps) left the drafters
further behind; at equal predictions seen, the small-step run was ahead (TRAINING.md). The loss
keeps its activations (remat_loss=False): at this size they take well under a GB. Target layers are spread over depth like DeepSpec's (1, 8, 15,
22, 28 of 30; the last layer, 29, is not allowed). DSpark has 2 layers (the paper's 2-layer
DSpark beats a 5-layer DFlash) and a rank-64 Markov head (the vocabulary is a third of Qwen3's,
and the saved drafter stays under 40 MB in bf16); DFlash has 2 layers for a like-for-like
comparison, Eagle3 1. The `smoke` variant runs 2 steps of batch 2 on 128 tokens.
"""

import dataclasses

from dspark_jax.config import DraftConfig, TrainConfig

LAYERS = (1, 8, 15, 22, 28)
DRAFTERS = ("dspark", "dflash", "eagle3")
MASK_TOKEN = 0  # <|endoftext|>: never inside a chat answer


def draft_config(drafter: str) -> DraftConfig:
  common = dict(target_layer_ids=LAYERS, mask_token_id=MASK_TOKEN, num_anchors=16)
  if drafter == "dspark":
    return DraftConfig(num_layers=2, markov_rank=64, **common)
  if drafter == "dflash":
    return DraftConfig(kind="dflash", num_layers=2, head="none", confidence_head=False, **common)
  return DraftConfig(kind="eagle3", num_layers=1, head="none", confidence_head=False, **common)


def get_config(drafter: str = "dspark", variant: str = "") -> TrainConfig:
  if drafter not in DRAFTERS:
    raise ValueError(f"drafter must be one of {DRAFTERS}, got {drafter!r}")
  config = TrainConfig(
    draft=draft_config(drafter),
    target="smollm2-135m",
    regenerated="data/smollm2_sharegpt_train.jsonl",
    out_dir=f"runs/smollm2_{drafter}",
    max_seq_len=512,
    batch_size=4,
    epochs=8.0,
    learning_rate=6e-4,
    anchor_chunk=16,
    remat_loss=False,
    eagle3_steps=7,
    log_every=10,
    checkpoint_every=50,
    save_shared=False,  # the committed drafter must stay under 40 MB; loading takes the target's
  )
  if variant == "smoke":
    config = dataclasses.replace(config, max_seq_len=128, batch_size=2, max_steps=2, log_every=1)
  elif variant:
    raise ValueError(f"unknown variant {variant!r} (known: smoke)")
  return config
