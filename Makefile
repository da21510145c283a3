# mespot — set-up and checks. `make install` once, then `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint format bench bench-accuracy gpu-check wheels demo clean

install: $(STAMP)

# Re-runs only when pyproject.toml changes, so a second `make install` returns at once.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "mespot needs Python >= 3.10, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.1"
	$(BIN)/python -m pip install --progress-bar off -e ".[dev]"
	touch $@

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Preprocessing speed, flow accuracy and memory → experiments/bench/preprocess.{json,md} (~5 min);
# model sizes, train/infer speed and epoch memory → experiments/bench/training.{json,md} (~5 min);
# mespot-spot end to end per flow method, × real time → experiments/bench/spot.{json,md} (~5 min);
# every console script's `--help` in a fresh process → experiments/bench/startup.{json,md} (~3 min).
bench: install
	$(BIN)/python -m mespot.bench.preprocess
	$(BIN)/python -m mespot.bench.training
	$(BIN)/python -m mespot.bench.spot
	$(BIN)/python -m mespot.bench.startup

# Accuracy, kept out of `make bench`: a seeded mock CAS(ME)² (6 subjects, made once in data/bench/)
# → every LOSO fold of the baseline and of VoVNet ± flow, ResNet and DenseNet at CPU sizes → the
# Table-4-style table in experiments/bench/accuracy.{json,md}; ~29 min on 2 cores
# (conf/experiment/bench_accuracy.yaml; the sweeps stay in data/bench/runs/).
bench-accuracy: install
	$(BIN)/python -m mespot.bench.accuracy

# The paper's spotter at its own size on one CUDA GPU (~7 min on one H200 and 16 cores): mock,
# preprocessing with TV-L1 on the GPU, every LOSO fold of experiment=paper and of the accuracy
# recipe at paper size, mespot-spot → experiments/bench/gpu.{json,md}. Without CUDA: the same
# steps at toy sizes on the CPU (~2 min). The mock, caches and sweeps stay in data/gpu/.
gpu-check: install
	$(BIN)/python -m mespot.bench.gpu

# For a machine without network whose python3 already has a PyTorch stack (torch, torchvision,
# Lightning, timm, torchmetrics, numpy, pandas, OpenCV, rich): the pure-Python packages mespot
# adds, at the versions this .venv tested, as wheels in .whl/ (~1 MB; docs/benchmarks.md).
OFFLINE := hydra-core omegaconf antlr4-python3-runtime openpyxl et-xmlfile xlrd hydra-joblib-launcher

wheels: install
	$(BIN)/python -m pip wheel --quiet --no-deps -w .whl $$($(BIN)/python -m pip freeze | \
		grep -iE '^($(subst -,[-_],$(subst $(eval) ,|,$(OFFLINE))))==')
	@ls .whl

# The README's main command: a small mock CAS(ME)² (5 subjects, faces held still) → preprocessing →
# every LOSO fold of the accuracy recipe at CPU size, two at a time → the summed table; ~4 min on
# 2 free cores (conf/experiment/demo.yaml, experiments/demo.md).
DEMO := data/demo

demo: install $(DEMO)/casme2/mock.json
	$(BIN)/mespot-preprocess data=casme2 data.root=$(DEMO)/casme2 paths.cache_dir=$(DEMO)/cache size=64
	$(BIN)/mespot-train -m experiment=demo data.test_subject=all hydra/launcher=joblib \
		hydra.launcher.n_jobs=2

# mock.json is written last: it exists only for a finished mock (`rm -rf data/demo` to redo it).
$(DEMO)/casme2/mock.json: | $(STAMP)
	$(BIN)/mespot-synth data=casme2 out=$(DEMO)/casme2 subjects=5 videos_per_subject=2 frames=600 \
		mae_per_video=3 me_per_video=3 distractors=0 workers=2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
