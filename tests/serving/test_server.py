"""`dspark-jax serve` on localhost, driven by the official `openai` client: the bundled SmolLM2
target with the committed DSpark drafter.

One server for the module (start-up compiles for about a minute on 2 cores). The schedule is
`threshold`, a per-row schedule: a row's verification lengths depend on its own confidences
only, so a seeded sampled request gives the same text alone or among others. (Algorithm 1
plans over the whole batch; there greedy output stays exact, `test_engine.py`, and sampled
output keeps its distribution but not its exact draws.)
"""

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parents[2]
DRAFTER = ROOT / "data" / "drafters" / "smollm2_135m_dspark"
MODEL = "smollm2-135m"
MAX_TOKENS = 24
QUESTIONS = [
  "What is the capital of France?",
  "Name three primary colours.",
  "What is 12 times 11?",
  "Write a haiku about rain.",
  "Why do cats purr?",
  "Give a synonym for happy.",
  "What does a CPU do?",
  "How many legs does a spider have?",
]

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def cli(*args: str) -> list[str]:
  return [sys.executable, "-m", "dspark_jax.cli", *args]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  port = free_port()
  # A file, not a pipe: a pipe nobody reads would block the server once it filled.
  log_path = tmp_path_factory.mktemp("serve") / "serve.log"
  log = open(log_path, "w")  # noqa: SIM115 - lives as long as the server
  proc = subprocess.Popen(
    cli(
      "serve",
      "--model",
      MODEL,
      "--drafter-path",
      str(DRAFTER),
      "--slots",
      "4",
      "--schedule",
      "threshold",
      "--threshold",
      "0.3",
      "--max-context",
      "512",
      "--max-tokens",
      "128",
      "--port",
      str(port),
      "--warm-up",
      "64",
    ),
    stdout=log,
    stderr=subprocess.STDOUT,
  )
  base = f"http://127.0.0.1:{port}"
  deadline = time.monotonic() + 600
  while True:
    if proc.poll() is not None:
      pytest.fail(f"the server exited: {log_path.read_text()}")
    try:
      urllib.request.urlopen(base + "/health", timeout=2)
      break
    except (urllib.error.URLError, ConnectionError):
      if time.monotonic() > deadline:
        proc.kill()
        pytest.fail("the server did not come up in 10 minutes")
      time.sleep(1)
  yield proc, base
  if proc.poll() is None:
    proc.kill()
  log.close()


def client(base):
  return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300)


def chat(base, question, **kwargs):
  r = client(base).chat.completions.create(
    model=MODEL, messages=[{"role": "user", "content": question}], **kwargs
  )
  return r.choices[0].message.content


def health(base) -> dict:
  return json.loads(urllib.request.urlopen(base + "/health", timeout=5).read())


def concurrently(fns, delays=None):
  out = [None] * len(fns)

  def run(i):
    time.sleep(delays[i] if delays else 0)
    out[i] = fns[i]()

  threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return out


def test_eight_concurrent_greedy_chats_equal_plain_greedy_from_the_generate_command(server):
  _, base = server
  got = concurrently(
    [lambda q=q: chat(base, q, temperature=0, max_tokens=MAX_TOKENS) for q in QUESTIONS]
  )
  # The reference is plain greedy decoding (no drafter): the server's speculative output must
  # equal it token for token, and plain decoding compiles in a fraction of the time.
  argv = ["generate", "--model", MODEL, "--no-progress"]
  argv += ["--max-new-tokens", str(MAX_TOKENS), "--temperature", "0"]
  for q in QUESTIONS:
    argv += ["--prompt", q]
  out = subprocess.run(cli(*argv), capture_output=True, text=True, check=True).stdout
  # `generate` prints "--- [i] question" before each output of a batch.
  want = [part.split("\n", 1)[1].strip() for part in out.split("--- [")[1:]]
  assert [g.strip() for g in got] == want


def test_a_streamed_request_equals_the_non_streamed_one(server):
  _, base = server
  kwargs = dict(temperature=0.8, seed=11, max_tokens=MAX_TOKENS)
  whole = chat(base, QUESTIONS[3], **kwargs)
  stream = client(base).chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": QUESTIONS[3]}],
    stream=True,
    stream_options={"include_usage": True},
    **kwargs,
  )
  chunks = list(stream)
  text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
  assert text == whole
  assert chunks[-1].usage.completion_tokens > 0


@pytest.mark.extended  # the engine's tests check the same invariance below HTTP, in the default run
def test_a_seeded_sampled_request_is_the_same_alone_and_among_others(server):
  _, base = server
  kwargs = dict(temperature=1.0, top_p=0.95, seed=1234, max_tokens=MAX_TOKENS)
  alone = chat(base, QUESTIONS[4], **kwargs)
  others = [
    lambda q=q: chat(base, q, temperature=1.0, max_tokens=MAX_TOKENS) for q in QUESTIONS[:7]
  ]
  fns = [*others[:3], lambda: chat(base, QUESTIONS[4], **kwargs), *others[3:]]
  got = concurrently(fns, delays=[0.3 * i for i in range(len(fns))])
  assert got[3] == alone


def post(base, path, data: bytes):
  req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(req, timeout=60) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def test_bad_requests_get_4xx_and_the_server_stays_healthy(server):
  _, base = server
  good = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
  cases = [
    (b"{not json", 400, "not valid JSON"),
    (json.dumps({**good, "model": "gpt-9"}).encode(), 404, "does not exist"),
    (json.dumps(good).replace('"max_tokens": 4', '"temperature": NaN').encode(), 400, "finite"),
    (json.dumps({**good, "max_tokens": 100}).replace("hi", "hi " * 600).encode(), 400, "context"),
    (json.dumps({**good, "top_p": 0}).encode(), 400, "top_p"),
  ]
  for data, status, message in cases:
    code, body = post(base, "/v1/chat/completions", data)
    assert code == status and message in body["error"]["message"], (code, body)
  with pytest.raises(openai.BadRequestError):
    client(base).chat.completions.create(model=MODEL, messages=good["messages"], temperature=-1)
  assert health(base)["status"] == "ok"
  assert chat(base, "hi", temperature=0, max_tokens=4)


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server):
  _, base = server
  stream = client(base).chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": QUESTIONS[3]}],
    stream=True,
    max_tokens=120,
    temperature=0,
  )
  for i, _ in enumerate(stream):
    if i == 3:
      break
  stream.close()
  deadline = time.monotonic() + 60
  while health(base)["busy_slots"] and time.monotonic() < deadline:
    time.sleep(0.2)
  assert health(base)["busy_slots"] == 0 and health(base)["pending"] == 0


def test_sigterm_drains_the_in_flight_request_and_exits(server):
  proc, base = server
  out = {}

  def request():
    out["text"] = chat(base, QUESTIONS[0], temperature=0, max_tokens=48)

  t = threading.Thread(target=request)
  t.start()
  deadline = time.monotonic() + 30
  while not health(base)["busy_slots"] and time.monotonic() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  t.join(timeout=120)
  assert out.get("text")  # answered in full after the signal
  # uvicorn exits by re-raising the signal it caught, once the shutdown has run.
  assert proc.wait(timeout=120) in (0, -signal.SIGTERM)
