"""The OpenAI request schema (pure parsing, no server) and the stop-string filter."""

import pytest

from dspark_jax.cli import main
from dspark_jax.serving.protocol import BadRequest, StopStringFilter, parse

MODEL = "m"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def test_defaults_and_values_carry_over():
  req = parse(
    {**CHAT, "temperature": 0, "top_p": 0.9, "top_k": 5, "seed": 3, "stop": "x"},
    chat=True,
    model_name=MODEL,
  )
  assert req.sampling.greedy and req.sampling.top_p == 0.9 and req.sampling.top_k == 5
  assert req.seed == 3 and req.stop == ("x",) and req.max_tokens is None
  text = parse({"model": MODEL, "prompt": ["abc"]}, chat=False, model_name=MODEL)
  assert text.prompt_text == "abc" and text.max_tokens == 16 and text.sampling.temperature == 1.0
  parts = parse(
    {
      **CHAT,
      "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
      "max_completion_tokens": 7,
    },
    chat=True,
    model_name=MODEL,
  )
  assert parts.messages[0]["content"] == "a" and parts.max_tokens == 7


@pytest.mark.parametrize(
  "change,status,message",
  [
    ({"model": "other"}, 404, "does not exist"),
    ({"model": None}, 400, "model is required"),
    ({"messages": []}, 400, "non-empty list"),
    ({"messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
    ({"messages": [{"role": "user", "content": 3}]}, 400, "content must be a string"),
    ({"temperature": float("nan")}, 400, "finite"),
    ({"temperature": float("inf")}, 400, "finite"),
    ({"temperature": -1}, 400, "temperature must be >= 0"),
    ({"temperature": "hot"}, 400, "must be a number"),
    ({"temperature": True}, 400, "must be a number"),
    ({"top_p": 0}, 400, "top_p"),
    ({"top_k": 2.5}, 400, "integer"),
    ({"max_tokens": 0}, 400, "max_tokens must be >= 1"),
    ({"n": 2}, 400, "n = 1"),
    ({"seed": -1}, 400, "seed"),
    ({"stop": ["a", ""]}, 400, "stop"),
    ({"stop": ["a"] * 5}, 400, "at most 4"),
    ({"stream": "yes"}, 400, "stream"),
  ],
)
def test_bad_fields_are_refused_with_their_status(change, status, message):
  with pytest.raises(BadRequest, match=message) as caught:
    parse({**CHAT, **change}, chat=True, model_name=MODEL)
  assert caught.value.status == status
  assert caught.value.body()["error"]["message"]


def test_a_body_that_is_not_an_object_is_refused():
  with pytest.raises(BadRequest, match="JSON object"):
    parse([1, 2], chat=False, model_name=MODEL)
  with pytest.raises(BadRequest, match="prompt"):
    parse({"model": MODEL, "prompt": ""}, chat=False, model_name=MODEL)


def test_stop_strings_are_never_shown_even_split_across_pieces():
  f = StopStringFilter(("END",))
  pieces = ["Hello E", "Hello EN", "Hello ENDING"]
  out = [f.push(p, final=False) for p in pieces]
  assert "".join(out) == "Hello " and f.stopped
  g = StopStringFilter(())
  assert g.push("ab\ufffd", final=False) == "ab"  # half a character waits
  assert g.push("abé", final=True) == "é"


def test_serve_flags_are_checked_before_anything_loads(capsys):
  assert main(["serve", "--slots", "0"]) == 2
  assert "--slots" in capsys.readouterr().err
  assert main(["serve", "--port", "70000"]) == 2
  assert "--port" in capsys.readouterr().err
  assert main(["serve", "--drafter", "checkpoint"]) == 2
  assert "--drafter-path" in capsys.readouterr().err
