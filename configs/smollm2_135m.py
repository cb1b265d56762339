"""CPU-sized DSpark, DFlash and Eagle3 drafters for SmolLM2-135M-Instruct (30 layers, d 576).

    dspark-jax train configs/smollm2_135m.py drafter=dspark

Budget v3 (TRAINING.md), one identical budget for the three drafters:
  * data: the target's own answers to the first 512 ShareGPT train prompts
    (`data/smollm2_sharegpt_train.jsonl`, 418 usable) followed by ShareGPT's own first answers to
    the first 600 train prompts (`dspark-jax regenerate --answers dataset --limit 600 --out
    runs/smollm2_dataset_answers.jsonl`, 494 usable; the target's soft labels come from the
    feature cache either way): 912 samples, cut at 512 tokens.
  * a reduced draft vocabulary of the 16,384 most frequent answer tokens (counted over ShareGPT's
    10k answers and the target's; stop tokens always in; 95-97% of held-out answer tokens): the draft logits are 16,384 columns of the target's head,
    and the cache's stored log-sum-exp normalises the target's.
  * batch 4, 64 anchors per sequence (about 1,640 supervised predictions per step), 5.4 epochs
    (1,232 steps, about 2.0M supervised predictions: 10x budget v2), AdamW lr 6e-4.
Every drafter supervises the same anchors' 7 predictions per step (Eagle3's training-time test
takes its loss on the same sampled anchors). Target layers are spread over depth like DeepSpec's
(1, 8, 15, 22, 28 of 30; the last layer, 29, is not allowed). DSpark has 2 layers (the paper's
2-layer DSpark beats a 5-layer DFlash) and a rank-64 Markov head (the saved drafter stays under
40 MB in bf16); DFlash has 2 layers for a like-for-like comparison, Eagle3 1. The loss keeps its
activations (remat_loss=False): at this size they take well under a GB.

Variants: `v2` is the previous budget (the first 256 prompts' 212 answers, full vocabulary,
16 anchors, 8 epochs: 190k predictions; its numbers are TRAINING.md's "CPU budget v2"), `smoke`
runs 2 steps of batch 2 on 128 tokens from the committed answers alone (online, no cache).
"""

import dataclasses

from dspark_jax.config import DraftConfig, TrainConfig

LAYERS = (1, 8, 15, 22, 28)
REGENERATED = "data/smollm2_sharegpt_train.jsonl"
DATASET_ANSWERS = "runs/smollm2_dataset_answers.jsonl"
DRAFT_VOCAB = 16384
# The draft vocabulary is counted over ShareGPT's answers to all 10k train prompts (40 s to
# write with `regenerate --answers dataset --limit 10000`) and the target's own answers: the
# 912 training samples hold fewer than 16,384 distinct tokens.
VOCAB_SOURCE = "runs/smollm2_sharegpt_dataset_answers.jsonl"
DRAFTERS = ("dspark", "dflash", "eagle3")
MASK_TOKEN = 0  # <|endoftext|>: never inside a chat answer


def draft_config(drafter: str, num_anchors: int = 64, draft_vocab_size: int = DRAFT_VOCAB):
  common = dict(
    target_layer_ids=LAYERS,
    mask_token_id=MASK_TOKEN,
    num_anchors=num_anchors,
    draft_vocab_size=draft_vocab_size,
  )
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
    regenerated=f"{REGENERATED},{DATASET_ANSWERS}",
    draft_vocab_source=f"{REGENERATED},{VOCAB_SOURCE}",
    out_dir=f"runs/smollm2_{drafter}",
    max_seq_len=512,
    batch_size=4,
    epochs=5.4,
    learning_rate=6e-4,
    anchor_chunk=16,
    remat_loss=False,
    eagle3_steps=7,
    log_every=10,
    checkpoint_every=50,
    save_shared=False,  # the committed drafter must stay under 40 MB; loading takes the target's
  )
  if variant == "smoke":  # only committed data, no cache: runs on a fresh clone (notebook 02)
    config = dataclasses.replace(
      config,
      regenerated=REGENERATED,
      draft_vocab_source="",
      max_seq_len=128,
      batch_size=2,
      max_steps=2,
      log_every=1,
    )
  elif variant == "v2":  # regenerate with --limit 256 into its own file for the exact data
    draft = draft_config(drafter, num_anchors=16, draft_vocab_size=0)
    config = dataclasses.replace(
      config, draft=draft, regenerated=REGENERATED, draft_vocab_source="", epochs=8.0
    )
  elif variant:
    raise ValueError(f"unknown variant {variant!r} (known: smoke, v2)")
  return config
