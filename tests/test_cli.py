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
  ],
)
def test_bad_flags_give_one_clear_error(flags, message, capsys):
  assert main(["generate", "--prompt", "hi", *flags]) == 2
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err


@pytest.mark.real_model
def test_demo_answers_the_capital_of_france(capsys):
  argv = ["generate", "--prompt", "What is the capital of France?", "--max-new-tokens", "24"]
  assert main(argv) == 0
  out = capsys.readouterr()
  assert "Paris" in out.out
  assert "tokens/s" in out.err
