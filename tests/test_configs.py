"""Configs in configs/: every variant builds, validates against its target, and overrides work."""

from pathlib import Path

import pytest

from dspark_jax.config import ModelConfig, TrainConfig, load_config_file

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QWEN3 = {
  "4b": ModelConfig("qwen3", 151_936, 2560, 9728, 36, 32, 8, 128),
  "8b": ModelConfig("qwen3", 151_936, 4096, 12288, 36, 32, 8, 128),
  "14b": ModelConfig("qwen3", 151_936, 5120, 17408, 40, 40, 8, 128),
}
SMOLLM2 = ModelConfig("llama", 49_152, 576, 1536, 30, 9, 3, 64)


@pytest.mark.parametrize("variant", ["", "smoke"])
@pytest.mark.parametrize("drafter", ["dspark", "dflash", "eagle3"])
def test_every_config_builds_and_fits_its_target(drafter, variant):
  for size, target in QWEN3.items():
    config = load_config_file(
      str(CONFIGS / "deepspec_qwen3.py"),
      [f"size={size}", f"drafter={drafter}", f"variant={variant}"],
    )
    assert isinstance(config, TrainConfig) and config.draft.kind == drafter
    config.draft.check_target(target)
    if not variant:
      assert (config.draft.block_size, config.batch_size, config.learning_rate) == (7, 512, 6e-4)
      assert config.draft.num_anchors == 512 and config.epochs == 10.0
  small = load_config_file(
    str(CONFIGS / "smollm2_135m.py"), [f"drafter={drafter}", f"variant={variant}"]
  )
  small.draft.check_target(SMOLLM2)


def test_overrides_after_get_config_arguments():
  config = load_config_file(
    str(CONFIGS / "smollm2_135m.py"),
    ["drafter=dspark", "batch_size=4", "draft.head=gated", "draft.target_layer_ids=2,9"],
  )
  assert config.batch_size == 4 and config.draft.head == "gated"
  assert config.draft.target_layer_ids == (2, 9)
  v3 = load_config_file(str(CONFIGS / "smollm2_135m.py"), ["drafter=dflash"])
  assert (v3.draft.draft_vocab_size, v3.draft.num_anchors) == (16384, 64)
  assert len(v3.regenerated.split(",")) == 2  # the target's answers, then the dataset's
  v2 = load_config_file(str(CONFIGS / "smollm2_135m.py"), ["drafter=dflash", "variant=v2"])
  assert (v2.draft.draft_vocab_size, v2.draft.num_anchors, v2.epochs) == (0, 16, 8.0)
  with pytest.raises(ValueError, match="unknown config key"):
    load_config_file(str(CONFIGS / "smollm2_135m.py"), ["no_such_field=1"])
  with pytest.raises(ValueError, match="does not exist"):
    load_config_file("configs/nope.py", [])
