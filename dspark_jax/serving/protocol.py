"""The OpenAI-compatible request schema: parsing and validating `/v1/completions` and
`/v1/chat/completions` bodies into engine requests, and the response bodies.

Pure functions, no web framework: every check raises `BadRequest` (status, message, param),
which the server turns into an OpenAI-style error body. Parameters we accept: model, prompt /
messages, max_tokens (max_completion_tokens for chat), temperature (default 1, as OpenAI's),
top_p, top_k (an extension), seed, stop (strings, up to 4), stream, n (1 only), and the
informational ones (user, ...) which are ignored.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from dspark_jax.decoding.sampling import SamplingParams

MAX_STOP_STRINGS = 4
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions


class BadRequest(Exception):
  def __init__(self, message: str, param: str | None = None, status: int = 400):
    super().__init__(message)
    self.message, self.param, self.status = message, param, status

  def body(self) -> dict:
    kind = "invalid_request_error" if self.status < 500 else "server_error"
    code = "model_not_found" if self.status == 404 else None
    return {"error": {"message": self.message, "type": kind, "param": self.param, "code": code}}


@dataclasses.dataclass(frozen=True)
class ParsedRequest:
  chat: bool
  model: str
  prompt_text: str | None  # completions
  messages: tuple[dict, ...] | None  # chat
  max_tokens: int
  sampling: SamplingParams
  seed: int | None
  stop: tuple[str, ...]
  stream: bool
  include_usage: bool  # stream_options.include_usage


def _number(body: dict, name: str, default, *, integer: bool = False):
  value = body.get(name, default)
  if value is None:
    return default
  # bool is an int in Python; JSON true is not a number.
  if isinstance(value, bool) or not isinstance(value, int | float):
    raise BadRequest(f"{name} must be a number", name)
  if integer and (isinstance(value, float) and not value.is_integer()):
    raise BadRequest(f"{name} must be an integer", name)
  if not math.isfinite(value):
    raise BadRequest(f"{name} must be finite", name)
  return int(value) if integer else float(value)


def parse(body: Any, *, chat: bool, model_name: str) -> ParsedRequest:
  """Validates a request body (already decoded from JSON). Raises BadRequest."""
  if not isinstance(body, dict):
    raise BadRequest("the request body must be a JSON object")
  model = body.get("model")
  if not isinstance(model, str):
    raise BadRequest("model is required (a string)", "model")
  if model != model_name:
    raise BadRequest(
      f"the model '{model}' does not exist; this server has '{model_name}'", "model", status=404
    )
  prompt_text, messages = None, None
  if chat:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
      raise BadRequest("messages must be a non-empty list", "messages")
    parsed = []
    for i, m in enumerate(raw):
      if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
        raise BadRequest(f"messages[{i}] needs a role of system, user or assistant", "messages")
      content = m.get("content")
      if isinstance(content, list):  # content parts: text only
        if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
          raise BadRequest(f"messages[{i}]: only text content is supported", "messages")
        content = "".join(str(p.get("text", "")) for p in content)
      if not isinstance(content, str):
        raise BadRequest(f"messages[{i}].content must be a string", "messages")
      parsed.append({"role": m["role"], "content": content})
    messages = tuple(parsed)
    max_name = (
      "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    )
  else:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
      prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
      raise BadRequest("prompt must be a non-empty string", "prompt")
    prompt_text = prompt
    max_name = "max_tokens"
  max_tokens = _number(body, max_name, DEFAULT_MAX_TOKENS if not chat else None, integer=True)
  if max_tokens is not None and max_tokens < 1:
    raise BadRequest(f"{max_name} must be >= 1", max_name)
  temperature = _number(body, "temperature", 1.0)
  top_p = _number(body, "top_p", 1.0)
  top_k = _number(body, "top_k", 0, integer=True)
  try:
    sampling = SamplingParams(temperature, top_k, top_p)
  except ValueError as error:
    raise BadRequest(str(error), "temperature") from None
  n = _number(body, "n", 1, integer=True)
  if n != 1:
    raise BadRequest("only n = 1 is supported", "n")
  seed = _number(body, "seed", None, integer=True)
  if seed is not None and not 0 <= seed < 2**32:
    raise BadRequest("seed must be in [0, 2**32)", "seed")
  stop = body.get("stop")
  stop = () if stop is None else (stop,) if isinstance(stop, str) else stop
  if not isinstance(stop, list | tuple) or not all(isinstance(s, str) and s for s in stop):
    raise BadRequest("stop must be a non-empty string or a list of them", "stop")
  if len(stop) > MAX_STOP_STRINGS:
    raise BadRequest(f"at most {MAX_STOP_STRINGS} stop strings", "stop")
  stream = body.get("stream", False)
  if not isinstance(stream, bool):
    raise BadRequest("stream must be true or false", "stream")
  options = body.get("stream_options") or {}
  if not isinstance(options, dict):
    raise BadRequest("stream_options must be an object", "stream_options")
  return ParsedRequest(
    chat,
    model,
    prompt_text,
    messages,
    max_tokens,
    sampling,
    seed,
    tuple(stop),
    stream,
    bool(options.get("include_usage", False)),
  )


class StopStringFilter:
  """Turns the growing decoded text into deltas that never show a stop string (or the start of
  one that may still complete), nor an incomplete UTF-8 character."""

  def __init__(self, stops: tuple[str, ...]):
    self.stops = stops
    self.hold = max((len(s) for s in stops), default=1) - 1
    self.sent = ""
    self.stopped = False

  def push(self, text: str, final: bool) -> str:
    """The next delta given the whole text so far; sets `stopped` at a stop string."""
    cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
    if cut >= 0:
      text, final, self.stopped = text[:cut], True, True
    if not final:
      text = text.rstrip("\ufffd")  # a character whose bytes have not all arrived
      text = text[: max(len(text) - self.hold, len(self.sent))]
    if not text.startswith(self.sent):  # the tokenizer revised an earlier piece: wait
      return ""
    delta, self.sent = text[len(self.sent) :], text
    return delta


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
  return {
    "prompt_tokens": prompt_tokens,
    "completion_tokens": completion_tokens,
    "total_tokens": prompt_tokens + completion_tokens,
  }


def response_body(
  req: ParsedRequest,
  rid: str,
  text: str,
  finish: str | None,
  use: dict | None,
  *,
  chunk: bool = False,
) -> dict:
  """A completion (or one streamed chunk) in OpenAI's shape."""
  created = int(time.time())
  if req.chat:
    if chunk:
      choice = {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
      kind = "chat.completion.chunk"
    else:
      choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": finish,
      }
      kind = "chat.completion"
  else:
    choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
    kind = "text_completion"
  body = {"id": rid, "object": kind, "created": created, "model": req.model, "choices": [choice]}
  if use is not None:
    body["usage"] = use
  return body
