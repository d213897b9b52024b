# The README's commands. `make install` builds .venv; `make test` installs if needed, then tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH_SPEC ?= torch==2.13.0
MAX_JOBS ?= $(shell nproc)
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` (2 on the 2-core CI machine); --dist loadgroup keeps
# the tests that share an expensive fixture (xdist_group) on one worker, and tests/conftest.py
# starts the slow tests first
TEST_WORKERS ?= 2

# ../shared/wheels holds an mmcv wheel built against torch==2.13.0 (CPU); it is only valid
# beside that exact torch, so it is used only with the default TORCH_SPEC.
WHEEL_CACHE := $(abspath ../shared/wheels)
FIND_LINKS := $(if $(and $(filter torch==2.13.0,$(TORCH_SPEC)),$(wildcard $(WHEEL_CACHE)/*.whl)),--find-links $(WHEEL_CACHE),)

# Re-install only when the install recipe or the dependencies change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)-$(subst =,,$(subst /,_,$(TORCH_SPEC)))

.PHONY: install test clean demo bench

install: $(STAMP)

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install "setuptools>=77.0.3,<81" wheel numpy ninja packaging
	MAX_JOBS=$(MAX_JOBS) $(PIP) install --no-build-isolation $(FIND_LINKS) "mmcv==2.1.0"
	$(PIP) install --no-build-isolation -e ".[test,bench]"
	@# the fused DySample CPU kernel (mmdysample/ops); without a compiler it stays pure PyTorch
	$(PY) -m mmdysample.ops || echo "mmdysample: fused DySample kernel not built; the pure-PyTorch path will be used"
	@# panopticapi (needed by mmdet's CocoPanopticMetric) is not on PyPI; panopticapi-lite
	@# ships the module but pins numpy<2 for no reason, so it goes in without its deps.
	$(PIP) install --no-deps "panopticapi-lite>=0.1"
	$(PY) -c "import mmdysample, mmdet, mmseg, mmpretrain; from mmcv.ops import nms, RoIAlign"
	@rm -f $(VENV)/.installed-*
	@touch $@

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# End-to-end CPU demo: synthetic data (written once), DySample and baseline Faster R-CNN and
# SegFormer trained and evaluated, table printed. Options: make demo DEMO_ARGS="--seeds 0 1".
demo: install
	$(PY) tools/demo.py $(DEMO_ARGS)
	$(PY) tools/collect_results.py --table demo --work-dir work_dirs/demo

# Latency / peak memory of the four DySample variants against bilinear (and nearest) at the two
# sizes and thread counts of the performance targets, with the fused kernel off (reference) and
# under torch.compile, then every registered upsampler at 1x256x64x64 with the plots
# (work_dirs/benchmark/{targets,all}). Other runs: make bench BENCH_ARGS="models" (training
# step of whole models), or any `tools/benchmark.py layers|models` options.
BENCH_ARGS ?= layers --upsamplers Nearest Bilinear DySample DySample+ DySample-S DySample-S+ \
	--sizes 1x256x64x64 2x256x128x128 --threads 1 2 --compare-reference --compile \
	--repeats 9 --no-plots --out-dir work_dirs/benchmark/targets
BENCH_ALL_ARGS ?= layers --sizes 1x256x64x64 --threads 2 --out-dir work_dirs/benchmark/all
bench: install
	OMP_WAIT_POLICY=PASSIVE $(PY) tools/benchmark.py $(BENCH_ARGS)
	OMP_WAIT_POLICY=PASSIVE $(PY) tools/benchmark.py $(BENCH_ALL_ARGS)

clean:
	rm -rf $(VENV)
