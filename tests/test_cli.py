"""The command line: the README's demo on the real model, and clear errors for bad flags."""

import pytest

from dspark_jax.cli import main


@pytest.mark.parametrize(
  "flags,message",
  [
    (["--temperature", "-1"], "temperature must be >= 0"),
    (["--top-p", "0"], "top_p must be in (0, 1]"),
    (["--top-k", "-3"], "top_k must be >= 0"),
    (["--max-new-tokens", "0"], "max_new_tokens must be >= 1"),
    (["--model", "/no/such/model.gguf"], "does not exist"),
    (["--drafter", "checkpoint"], "needs --drafter-path"),
    (["--compare-plain"], "--compare-plain needs a drafter"),
    (["--drafter", "ngram", "--verify-slots", "0"], "--verify-slots must be >= 1, got 0"),
    (["--temperature", "inf"], "--temperature: expected a finite number, got 'inf'"),
    (["--temperature", "nan"], "--temperature: expected a finite number, got 'nan'"),
    (["--top-p=-inf"], "--top-p: expected a finite number"),
    (["--drafter-path", "/no/such/drafter"], "drafter folder not found: /no/such/drafter"),
    # G of a trained drafter is its block size: --draft-len would be ignored, so it is refused.
    (["--drafter-path", "d", "--draft-len", "100"], "--draft-len applies to the n-gram drafter"),
    (["--drafter-path", "d", "--draft-len", "0"], "--draft-len applies to the n-gram drafter"),
    (["--drafter-path", "d", "--ngram", "2"], "--ngram applies to the n-gram drafter"),
    (["--draft-len", "3"], "--draft-len applies to the n-gram drafter only (--drafter ngram)"),
    (["--drafter", "ngram", "--draft-len", "0"], "--draft-len must be >= 1, got 0"),
    (["--drafter", "ngram", "--schedule", "threshold"], "needs --threshold X"),
    (["--drafter", "ngram", "--threshold", "0.5"], "--threshold applies to --schedule threshold"),
    (["--drafter", "ngram", "--schedule", "threshold", "--threshold", "2"], "must be in (0, 1]"),
    (["--schedule", "alg1"], "--schedule and --profile need a drafter"),
  ],
)
def test_bad_flags_give_one_clear_error(flags, message, capsys):
  assert main(["generate", "--prompt", "hi", *flags]) == 2
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
  "flags,message",
  [
    (["--sort-window", "0"], "sort_window must be >= 1, got 0"),
    (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
    # Valid flags get past the settings to the prompts (a settings mix-up would stop earlier).
    (["--temperature", "0.5", "--source", "/no/such.jsonl"], "No such file"),
  ],
)
def test_regenerate_flags_reach_the_settings_by_name(flags, message, tmp_path, capsys):
  assert main(["regenerate", "--out", str(tmp_path / "out.jsonl"), *flags]) == 2
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
  "flags,message",
  [
    (["--benchmarks", "no-such-benchmark"], "no bundled benchmark 'no-such-benchmark'"),
    (["--benchmarks", "/no/such.jsonl"], "benchmark file not found: /no/such.jsonl"),
    (["--temperature", "inf"], "--temperature: expected a finite number"),
    (["--draft-len", "0"], "--draft-len must be >= 1, got 0"),
    (["--cap", "gsm8k=0"], "--cap takes NAME=N with N >= 1"),
    (["--cap", "gsm8k"], "--cap takes NAME=N"),
    (["--limit", "0"], "--limit must be >= 1"),
    (["--temperature", "-0.5"], "temperature must be >= 0"),
    (["--verify-slots", "-2"], "--verify-slots must be >= 1, got -2"),
    (["--cumulative"], "--cumulative applies to --schedule threshold only"),
  ],
)
def test_eval_flags_give_one_clear_error(flags, message, capsys):
  assert main(["eval", "--drafter", "ngram", "--benchmarks", "gsm8k", *flags]) == 2
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err


def test_eval_refuses_a_trained_drafter_with_draft_len_and_a_missing_folder(capsys):
  base = ["eval", "--benchmarks", "gsm8k", "--model", "/no/such/model.gguf"]
  assert main([*base, "--drafter", "/no/such/drafter", "--draft-len", "3"]) == 2
  assert "--draft-len applies to the n-gram drafter" in capsys.readouterr().err
  assert main([*base, "--drafter", "/no/such/drafter"]) == 2  # before the model is looked up
  assert "drafter folder not found: /no/such/drafter" in capsys.readouterr().err


def test_eval_checks_every_benchmark_file_before_the_model_loads(tmp_path, capsys):
  good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
  good.write_text('{"turns": ["What is 2 + 2?"]}\n')
  bad.write_text('{"turns": ["fine"]}\n{"turns": "What is 3 + 3?"}\n')
  # The model does not exist: an error about it would mean the benchmarks were read too late.
  argv = ["eval", "--drafter", "ngram", "--model", "/no/such/model.gguf"]
  assert main([*argv, "--benchmarks", str(good), str(bad)]) == 2
  err = capsys.readouterr().err
  assert f"{bad}:2:" in err and "must be a list of strings, got str" in err
  assert "Traceback" not in err


@pytest.mark.parametrize(
  "flags,message",
  [
    (["--prompts", "0"], "--prompts, --batch-size and --max-new-tokens must be >= 1"),
    (["--skip", "-1"], "--skip >= 0"),
    (["--temperature", "-1"], "temperature must be >= 0"),
  ],
)
def test_calibrate_flags_give_one_clear_error(flags, message, capsys):
  assert main(["calibrate", "--drafter", "/no/such/folder", *flags]) == 2
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err


def test_calibrate_refits_saved_rounds_and_writes_platt_offsets(tmp_path, capsys):
  """--rounds: no model, no rollouts; the held-out fit uses whole batches; --write stores both
  the temperatures and the offsets beside the drafter."""
  import json

  import numpy as np

  from dspark_jax.eval import calibration as cal

  rng = np.random.default_rng(0)
  true = rng.normal(0.0, 1.5, (3000, 3))
  prefix = np.cumprod(rng.uniform(size=true.shape) < 1 / (1 + np.exp(-true)), 1).astype(float)
  rounds = tmp_path / "rounds.npz"
  np.savez(rounds, logits=true + 1.0, prefix_accepted=prefix, batch=np.arange(3000) // 300)
  drafter = tmp_path / "drafter"
  drafter.mkdir()
  argv = ["calibrate", "--drafter", str(drafter), "--rounds", str(rounds), "--method", "platt"]
  assert main([*argv, "--out", str(tmp_path / "out"), "--write"]) == 0
  report = json.loads((tmp_path / "out" / "calibration.json").read_text())
  assert report["held_out"]["fit_rounds"] == report["held_out"]["scored_rounds"] == 1500
  temps, offsets = cal.fit_platt(true + 1.0, prefix)
  np.testing.assert_allclose(report["offsets"], offsets, rtol=1e-9)
  assert report["after"]["ece"][0] < report["before"]["ece"][0] / 2
  stored = json.loads((drafter / "calibration.json").read_text())
  np.testing.assert_allclose(stored["confidence_temperatures"], temps, rtol=1e-9)
  np.testing.assert_allclose(stored["confidence_offsets"], offsets, rtol=1e-9)
  assert "| 1 |" in capsys.readouterr().out
  assert main([*argv, "--fit-fraction", "1.5"]) == 2
  assert "--fit-fraction must be in (0, 1)" in capsys.readouterr().err


@pytest.mark.real_model
@pytest.mark.parametrize(
  "argv,message",
  [
    # SmolLM2's context is 8,192 tokens (GGUF llama.context_length).
    (["--prompt", "hi", "--max-new-tokens", "1000000"], "+ max_new_tokens (1000000) = "),
    (["--prompt", "word " * 10_000], "+ max_new_tokens (128) = "),
  ],
)
def test_sizes_beyond_the_context_are_refused_before_allocating(argv, message, capsys):
  assert main(["generate", *argv]) == 2
  err = capsys.readouterr().err
  assert message in err and "exceeds the model's context length (8192)" in err
  assert "Traceback" not in err


@pytest.mark.real_model
def test_demo_answers_the_capital_of_france(capsys):
  argv = ["generate", "--prompt", "What is the capital of France?", "--max-new-tokens", "24"]
  assert main(argv) == 0
  out = capsys.readouterr()
  assert "Paris" in out.out
  assert "tokens/s" in out.err


@pytest.mark.real_model
def test_a_saved_dspark_drafter_runs_losslessly_from_the_command_line(tmp_path, capsys):
  """A random-weight DSpark drafter for SmolLM2, saved in DeepSpec format and loaded by the CLI:
  greedy output is the plain greedy output (acceptance is near zero, which is not the point)."""
  import jax

  from dspark_jax.config import DraftConfig
  from dspark_jax.drafters.dspark import DSparkDrafter
  from dspark_jax.io.deepspec import save_drafter
  from dspark_jax.io.load import load_model

  model = load_model("smollm2-135m")
  config = DraftConfig(block_size=3, num_layers=1, target_layer_ids=(1, 15, 28), markov_rank=32)
  drafter = DSparkDrafter(config, model.config)
  save_drafter(tmp_path, drafter, drafter.init_params(jax.random.key(0), model.params))
  # The demo test's prompt and budget: its compiled plain decode is reused.
  argv = ["generate", "--prompt", "What is the capital of France?", "--max-new-tokens", "24"]
  assert main(argv) == 0
  plain = capsys.readouterr().out
  # --schedule fixed: the default (alg1) would first profile six compiled shapes of the real
  # model, a minute of CI; the scheduled loop is tested on tiny models.
  assert main([*argv, "--drafter-path", str(tmp_path), "--schedule", "fixed"]) == 0
  out = capsys.readouterr()
  assert out.out == plain
  assert "dspark drafter, G=3, schedule fixed" in out.err


def test_our_warnings_are_one_line_each_and_others_untouched(capsys):
  import warnings

  import dspark_jax.training.trainer as trainer_module
  from dspark_jax.cli import one_line_warnings
  from dspark_jax.training.run_folder import CorruptCheckpointWarning

  with warnings.catch_warnings(), one_line_warnings("dspark-jax train"):
    warnings.simplefilter("always")
    warnings.warn_explicit(
      "checkpoint step 4 is corrupt", CorruptCheckpointWarning, trainer_module.__file__, 1
    )
    warnings.warn_explicit("not ours", UserWarning, "/elsewhere/lib.py", 7)
  err = capsys.readouterr().err.splitlines()
  assert err[0] == "dspark-jax train: warning: checkpoint step 4 is corrupt"
  # Other libraries' warnings go to the previous handler (pytest's recorder here), unchanged.
  assert not any("warning: not ours" in line for line in err)
