"""An OpenAI-compatible HTTP server over the engine (Starlette + uvicorn, the `serve` extra).

Routes: POST /v1/completions and /v1/chat/completions (JSON or SSE streaming, `usage`
counts), GET /v1/models, GET /health. The engine runs in its own thread; each HTTP request
waits on an asyncio queue the engine's thread feeds (`call_soon_threadsafe`). A bad request
gets a 4xx with an OpenAI-style error body before it reaches the engine, so it cannot disturb
the others. A client that goes away (mid-stream or while waiting) cancels its request, which
frees its slot at the next tick. On SIGTERM uvicorn stops accepting connections and waits for
the open ones; the lifespan's shutdown then drains the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from dspark_jax.serving import protocol
from dspark_jax.serving.engine import Engine, EngineClosed, Event, Request
from dspark_jax.serving.protocol import BadRequest

DISCONNECT_POLL_SECONDS = 0.5


def error_response(error: BadRequest) -> JSONResponse:
  return JSONResponse(error.body(), status_code=error.status)


def build_app(engine: Engine, tokenizer, model_name: str, *, drain_seconds: float = 600.0):
  """The ASGI app. `engine` is started with the app (lifespan) and drained at shutdown."""

  @contextlib.asynccontextmanager
  async def lifespan(app):
    engine.start()
    try:
      yield
    finally:
      await asyncio.to_thread(engine.shutdown, True, drain_seconds)

  def encode(req: protocol.ParsedRequest) -> list[int]:
    if req.chat:
      return tokenizer.encode_chat(list(req.messages))
    return tokenizer.encode(req.prompt_text)

  def to_engine(req: protocol.ParsedRequest, prompt: list[int]) -> Request:
    room = engine.capacity - len(prompt) - engine.drafter.draft_len - 1
    max_tokens = req.max_tokens
    if max_tokens is None:  # chat without a limit: as much as fits
      max_tokens = max(min(engine.max_tokens, room), 1)
    request = Request(tuple(prompt), max_tokens, req.sampling, req.seed)
    try:
      engine.check(request)
    except ValueError as error:
      raise BadRequest(str(error), "max_tokens" if "context" in str(error) else None) from None
    return request

  async def parse(http: HttpRequest, chat: bool):
    try:
      body = json.loads(await http.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
      raise BadRequest(f"the body is not valid JSON: {error}") from None
    req = protocol.parse(body, chat=chat, model_name=model_name)
    prompt = encode(req)
    return req, prompt, to_engine(req, prompt)

  def submit(request: Request):
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Event] = asyncio.Queue()
    try:
      handle = engine.submit(request, lambda e: loop.call_soon_threadsafe(events.put_nowait, e))
    except EngineClosed as error:
      raise BadRequest(str(error), status=503) from None
    except ValueError as error:
      raise BadRequest(str(error)) from None
    return handle, events

  async def completions(http: HttpRequest, chat: bool):
    try:
      req, prompt, request = await parse(http, chat)
      handle, events = submit(request)
    except BadRequest as error:
      return error_response(error)
    rid = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    if req.stream:
      return StreamingResponse(
        stream(http, req, rid, prompt, handle, events), media_type="text/event-stream"
      )
    tokens, finish, filt = [], None, protocol.StopStringFilter(req.stop)
    text = ""
    try:
      while finish is None:
        try:
          event = await asyncio.wait_for(events.get(), DISCONNECT_POLL_SECONDS)
        except TimeoutError:
          if await http.is_disconnected():
            handle.cancel()
            return JSONResponse({}, status_code=499)
          continue
        tokens += event.tokens
        finish = event.finish_reason
        if event.error:
          return error_response(BadRequest(event.error, status=500))
        text += filt.push(tokenizer.decode(tokens), final=finish is not None)
        if filt.stopped and finish is None:
          handle.cancel()
          finish = "stop"
    finally:
      if finish is None:
        handle.cancel()
    finish = "stop" if filt.stopped else finish
    body = protocol.response_body(req, rid, text, finish, protocol.usage(len(prompt), len(tokens)))
    return JSONResponse(body)

  async def stream(http, req, rid, prompt, handle, events):
    """SSE chunks; a disconnect cancels the generator (Starlette), which cancels the request."""
    tokens, finish, filt = [], None, protocol.StopStringFilter(req.stop)
    sse = lambda body: f"data: {json.dumps(body)}\n\n"
    try:
      if req.chat:  # the first chunk names the role, as OpenAI's do
        first = protocol.response_body(req, rid, "", None, None, chunk=True)
        first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        yield sse(first)
      while finish is None:
        event = await events.get()
        if event.error:
          yield sse(BadRequest(event.error, status=500).body())
          finish = "error"
          break
        tokens += event.tokens
        finish = event.finish_reason
        delta = filt.push(tokenizer.decode(tokens), final=finish is not None)
        if filt.stopped:
          if finish is None:  # a stop string: the engine may still be decoding the request
            handle.cancel()
          finish = "stop"
        if delta:
          yield sse(protocol.response_body(req, rid, delta, None, None, chunk=True))
      yield sse(protocol.response_body(req, rid, "", finish, None, chunk=True))
      if req.include_usage:
        final = protocol.response_body(
          req, rid, "", None, protocol.usage(len(prompt), len(tokens)), chunk=True
        )
        final["choices"] = []
        yield sse(final)
      yield "data: [DONE]\n\n"
    finally:
      if finish is None:  # the client went away
        handle.cancel()

  async def chat_completions(http):
    return await completions(http, chat=True)

  async def text_completions(http):
    return await completions(http, chat=False)

  async def models(http):
    card = {
      "id": model_name,
      "object": "model",
      "created": int(time.time()),
      "owned_by": "dspark-jax",
    }
    return JSONResponse({"object": "list", "data": [card]})

  async def health(http):
    return JSONResponse(
      {
        "status": "ok",
        "slots": engine.num_slots,
        "busy_slots": engine.busy_slots,
        "pending": engine.pending,
      }
    )

  routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", text_completions, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
  ]
  return Starlette(routes=routes, lifespan=lifespan)


def warm_up(engine: Engine, tokenizer, prompt_lengths=(16, 32, 64, 128)) -> None:
  """Compiles the decode round and the common prompt buckets before the first request."""
  for n in prompt_lengths:
    if n + 2 + engine.drafter.draft_len + 1 > engine.capacity:
      break
    engine.submit(Request(tuple([tokenizer.pad_id or 0] * n), 2))
  engine.run_until_idle()
