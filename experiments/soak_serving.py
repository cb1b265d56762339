"""A bounded soak of `dspark-jax serve`: concurrent clients over HTTP with the `openai` client.

    python experiments/soak_serving.py --clients 16 --requests 320 --out results/soak_serving.json

Starts the server (the committed DSpark drafter, Algorithm 1), then `--clients` threads send
`--requests` requests in all: chat and text completions, streamed and not, greedy and sampled
(top-k / top-p, seeded or not), some with stop strings, and one in ten abandoned mid-stream.
Every greedy answer to a repeated prompt must be the same text. The server's resident memory
is sampled every second. Reports: errors, mismatches, slots still busy at the end (a leak),
and the memory curve (flat = the growth after warm-up stays within a few percent).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import openai

QUESTIONS = [
  "What is the capital of France?",
  "Explain photosynthesis in two sentences.",
  "Write a haiku about autumn.",
  "What is 17 times 23?",
  "List three uses of a paperclip.",
  "Why is the sky blue?",
  "Give me a short motivational quote.",
  "What does HTTP stand for?",
]


def rss_mib(pid: int) -> float:
  for line in Path(f"/proc/{pid}/status").read_text().splitlines():
    if line.startswith("VmRSS:"):
      return int(line.split()[1]) / 1024
  return float("nan")


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--clients", type=int, default=16)
  ap.add_argument("--requests", type=int, default=320)
  ap.add_argument("--slots", type=int, default=8)
  ap.add_argument("--max-tokens", type=int, default=32)
  ap.add_argument("--drafter", default="data/drafters/smollm2_135m_dspark")
  ap.add_argument("--schedule", default="alg1")
  ap.add_argument("--out", default="results/soak_serving.json")
  args = ap.parse_args()

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  base = f"http://127.0.0.1:{port}"
  log_path = Path("runs") / "soak_serving.server.log"  # runs/ is not committed
  log_path.parent.mkdir(parents=True, exist_ok=True)
  log = open(log_path, "w")  # noqa: SIM115 - the server's whole life
  server = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "dspark_jax.cli",
      "serve",
      "--drafter-path",
      args.drafter,
      "--slots",
      str(args.slots),
      "--schedule",
      args.schedule,
      "--max-context",
      "512",
      "--max-tokens",
      "128",
      "--port",
      str(port),
    ],
    stdout=log,
    stderr=subprocess.STDOUT,
  )
  t0 = time.monotonic()
  while True:
    try:
      urllib.request.urlopen(base + "/health", timeout=2)
      break
    except OSError:
      if server.poll() is not None:
        print(log_path.read_text(), file=sys.stderr)
        return 1
      time.sleep(1)
  startup = time.monotonic() - t0
  client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=600)

  memory, stop_sampling = [], threading.Event()

  def sample_memory():
    start = time.monotonic()
    while not stop_sampling.is_set():
      memory.append((round(time.monotonic() - start, 1), rss_mib(server.pid)))
      stop_sampling.wait(1.0)

  counter = iter(range(args.requests))
  lock = threading.Lock()
  stats = {"ok": 0, "errors": [], "abandoned": 0, "streamed": 0, "tokens": 0}
  greedy_answers: dict[str, set[str]] = {}

  def one(i: int) -> None:
    rng = random.Random(i)
    question = rng.choice(QUESTIONS)
    greedy = rng.random() < 0.4
    kw = dict(model="smollm2-135m", max_tokens=rng.randint(4, args.max_tokens))
    if greedy:
      kw.update(temperature=0, max_tokens=args.max_tokens)
    else:
      kw.update(temperature=rng.choice([0.7, 1.0]), top_p=rng.choice([1.0, 0.9]))
      if rng.random() < 0.5:
        kw["seed"] = rng.randrange(1000)
      if rng.random() < 0.2:
        kw["stop"] = ["."]
    chat = rng.random() < 0.75
    stream = rng.random() < 0.5
    abandon = stream and rng.random() < 0.2
    messages = [{"role": "user", "content": question}]
    if chat and stream:
      chunks = client.chat.completions.create(messages=messages, stream=True, **kw)
      text = ""
      for k, c in enumerate(chunks):
        if abandon and k == 2:
          chunks.close()
          with lock:
            stats["abandoned"] += 1
          return
        if c.choices:
          text += c.choices[0].delta.content or ""
    elif chat:
      r = client.chat.completions.create(messages=messages, **kw)
      text = r.choices[0].message.content
      with lock:
        stats["tokens"] += r.usage.completion_tokens
    elif stream:
      chunks = client.completions.create(prompt=question, stream=True, **kw)
      text = "".join(c.choices[0].text for c in chunks if c.choices)
    else:
      r = client.completions.create(prompt=question, **kw)
      text = r.choices[0].text
      with lock:
        stats["tokens"] += r.usage.completion_tokens
    with lock:
      stats["ok"] += 1
      stats["streamed"] += stream
      if greedy:
        greedy_answers.setdefault(f"{chat}:{question}", set()).add(text)

  def worker():
    while True:
      with lock:
        i = next(counter, None)
      if i is None:
        return
      try:
        one(i)
      except Exception as error:  # counted, never fatal: the soak reports them
        with lock:
          stats["errors"].append(f"request {i}: {type(error).__name__}: {error}")

  sampler = threading.Thread(target=sample_memory, daemon=True)
  sampler.start()
  start = time.monotonic()
  threads = [threading.Thread(target=worker) for _ in range(args.clients)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  seconds = time.monotonic() - start
  time.sleep(2)  # abandoned streams are freed at the engine's next ticks
  health = json.loads(urllib.request.urlopen(base + "/health").read())
  stop_sampling.set()
  server.terminate()
  server.wait(timeout=120)

  mismatched = {k: sorted(v) for k, v in greedy_answers.items() if len(v) > 1}
  warm = [m for t, m in memory if t >= min(30.0, seconds / 4)] or [m for _, m in memory]
  report = {
    "command": " ".join(sys.argv),
    "settings": vars(args),
    "startup_seconds": round(startup, 1),
    "seconds": round(seconds, 1),
    "requests": args.requests,
    "completed": stats["ok"],
    "abandoned_mid_stream": stats["abandoned"],
    "streamed": stats["streamed"],
    "errors": stats["errors"],
    "greedy_mismatches": mismatched,
    "busy_slots_at_end": health["busy_slots"],
    "pending_at_end": health["pending"],
    "rss_mib_first_last_max_after_warmup": [warm[0], warm[-1], max(warm)],
    "rss_growth_after_warmup": (warm[-1] - warm[0]) / warm[0],
    "rss_mib": memory,
  }
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(report, indent=1))
  print(json.dumps({k: v for k, v in report.items() if k != "rss_mib"}, indent=1))
  ok = not stats["errors"] and not mismatched and health["busy_slots"] == 0
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
