# The README's commands. `make install` builds .venv; `make test` installs if needed, then tests.
# docs/install.md: the CPU and CUDA recipes, what each step takes, installing elsewhere.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# torch: one requirement, from pip's configured index or from TORCH_INDEX_URL, e.g.
# https://download.pytorch.org/whl/cu128 (CUDA 12.8 build) or .../whl/cpu (CPU build)
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
MAX_JOBS ?= $(shell nproc)
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` (2 on the 2-core CI machine); --dist loadgroup keeps
# the tests that share an expensive fixture (xdist_group) on one worker, and tests/conftest.py
# starts the slow tests first
TEST_WORKERS ?= 2
INSTALL_STEPS := tools/install_steps.py
MMCV_LOG := $(VENV)/mmcv-build.log

ifneq ($(word 2,$(TORCH_SPEC)),)
$(error TORCH_SPEC must be one requirement such as torch==2.13.0, got "$(TORCH_SPEC)"; give the index as TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128)
endif
ifneq ($(word 2,$(TORCH_INDEX_URL)),)
$(error TORCH_INDEX_URL must be one URL, got "$(TORCH_INDEX_URL)")
endif

# A CUDA install when TORCH_INDEX_URL is one of PyTorch's CUDA indexes (.../cuXYZ), decided
# here so that `make -n install` shows the recipe that will run (tools/install_steps.py
# check-torch confirms it from torch.version.cuda once torch is installed). mmcv is then
# compiled with its CUDA ops (FORCE_CUDA=1: mmcv otherwise builds them only where a GPU is
# visible), never from the wheel cache and never from pip's wheel cache (--no-cache-dir:
# pip would reuse a wheel built without them).
CUDA_TAG := $(filter cu%,$(notdir $(patsubst %/,%,$(TORCH_INDEX_URL))))
# ../shared/wheels holds an mmcv wheel built against torch==2.13.0+cpu; it is only valid
# beside that exact torch, so it is offered only to a CPU install of the default TORCH_SPEC.
WHEEL_CACHE ?= $(abspath ../shared/wheels)
ifeq ($(CUDA_TAG),)
FIND_LINKS := $(if $(and $(filter torch==2.13.0,$(TORCH_SPEC)),$(wildcard $(WHEEL_CACHE)/*.whl)),--find-links $(WHEEL_CACHE),)
MMCV_STEP := $(strip MAX_JOBS=$(MAX_JOBS) $(PY) $(INSTALL_STEPS) mmcv --log $(MMCV_LOG) -- \
	$(PIP) install -v --no-build-isolation $(FIND_LINKS) "mmcv==2.1.0")
else
MMCV_STEP := $(strip FORCE_CUDA=1 MAX_JOBS=$(MAX_JOBS) \
	$(if $(TORCH_CUDA_ARCH_LIST),TORCH_CUDA_ARCH_LIST="$(TORCH_CUDA_ARCH_LIST)") \
	$(PY) $(INSTALL_STEPS) mmcv --cuda --log $(MMCV_LOG) -- \
	$(PIP) install -v --no-build-isolation --no-cache-dir "mmcv==2.1.0")
endif
CHECK_TOOLKIT = $(PYTHON) $(INSTALL_STEPS) check-toolkit --cuda-tag $(CUDA_TAG)

# Re-install only when the install recipe, the dependencies or the torch asked for change.
STAMP := $(VENV)/.installed-$(shell { cat pyproject.toml Makefile $(INSTALL_STEPS); \
	echo '$(TORCH_SPEC) $(TORCH_INDEX_URL) $(TORCH_CUDA_ARCH_LIST)'; } | sha1sum | cut -c1-12)

.PHONY: install check-cuda-toolkit test clean demo bench

install: $(STAMP)

$(STAMP):
	@echo "mmdysample install into $(VENV): $(TORCH_SPEC)$(if $(TORCH_INDEX_URL), from $(TORCH_INDEX_URL)), mmcv 2.1.0$(if $(CUDA_TAG), with CUDA ops compiled from source,$(if $(FIND_LINKS), from the prebuilt CPU wheel, compiled from source)), mmdet, mmseg, mmpretrain, mmdysample (docs/install.md)"
	$(if $(CUDA_TAG),$(CHECK_TOOLKIT))
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install "$(TORCH_SPEC)"$(if $(TORCH_INDEX_URL), --index-url $(TORCH_INDEX_URL))
	$(PY) $(INSTALL_STEPS) check-torch $(if $(CUDA_TAG),--cuda-tag $(CUDA_TAG),--cpu)
	$(PIP) install "setuptools>=77.0.3,<81" wheel numpy ninja packaging
	$(MMCV_STEP)
	$(PIP) install --no-build-isolation -e ".[all,test,bench]"
	@# the C++ CPU kernels (mmdysample/ops: DySample sampling, reassembly); without a compiler
	@# the layers run their pure-PyTorch paths
	$(PY) -m mmdysample.ops || echo "mmdysample: CPU kernels not built; the pure-PyTorch paths will be used"
	@# panopticapi (needed by mmdet's CocoPanopticMetric) is not on PyPI; panopticapi-lite
	@# ships the module but pins numpy<2 for no reason, so it goes in without its deps.
	$(PIP) install --no-deps "panopticapi-lite>=0.1"
	$(PY) -c "import mmdysample, mmdet, mmseg, mmpretrain; from mmcv.ops import nms, RoIAlign"
	@rm -f $(VENV)/.installed-*
	@touch $@
	$(if $(CUDA_TAG),@echo "mmdysample install: done. On a GPU node: $(PY) tools/check_device.py --device cuda")

# The first step of a CUDA `make install` alone: nvcc found and of torch's CUDA major version,
# the GPU architectures known (TORCH_CUDA_ARCH_LIST or a visible GPU).
check-cuda-toolkit:
	$(if $(CUDA_TAG),$(CHECK_TOOLKIT),$(error check-cuda-toolkit needs TORCH_INDEX_URL=<a PyTorch CUDA index, e.g. https://download.pytorch.org/whl/cu128>))

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# End-to-end CPU demo: synthetic data (written once), DySample and baseline Faster R-CNN and
# SegFormer trained and evaluated, table printed. Options: make demo DEMO_ARGS="--seeds 0 1".
demo: install
	$(PY) tools/demo.py $(DEMO_ARGS)
	$(PY) tools/collect_results.py --table demo --work-dir work_dirs/demo

# `make bench` (work_dirs/benchmark/{targets,reassembly,all,fig8}), four runs:
# 1. the four DySample variants against bilinear (and nearest) at the two sizes and thread
#    counts of the performance targets: fused kernel, the composed path every other device
#    runs ([kernels off]), the authors' formulation ([reference]) and torch.compile;
# 2. the reassembly layers (CARAFE, FADE, SAPA-B, A2U) against bilinear at the issue-25
#    targets, with the C++ kernel and on the device-agnostic path ([kernels off]);
# 3. every registered upsampler at 1x256x64x64 with the plots;
# 4. the paper's Fig. 8: SegFormer-B1 with every upsampler (params, GFLOPs at 512x512,
#    training step time and memory and inference at 256x256, batch 2 on the CPU).
# Any other run: make bench BENCH_ARGS="..." or `tools/benchmark.py layers|models --help`.
BENCH_ARGS ?= layers --upsamplers Nearest Bilinear DySample DySample+ DySample-S DySample-S+ \
	--sizes 1x256x64x64 2x256x128x128 --threads 1 2 --compare-reference --compile \
	--kernels-off --repeats 9 --no-plots --out-dir work_dirs/benchmark/targets
BENCH_REASSEMBLY_ARGS ?= layers --upsamplers Bilinear CARAFE FADE SAPA-B A2U \
	--sizes 1x256x64x64 2x256x128x128 --threads 2 --kernels-off --repeats 7 --no-plots \
	--out-dir work_dirs/benchmark/reassembly
BENCH_ALL_ARGS ?= layers --sizes 1x256x64x64 --threads 2 --out-dir work_dirs/benchmark/all
BENCH_FIG8_ARGS ?= models --fig8 --size 256 --batch 2 --threads 2 --repeats 5 --warmup 1 \
	--out-dir work_dirs/benchmark/fig8
bench: install
	OMP_WAIT_POLICY=PASSIVE $(PY) tools/benchmark.py $(BENCH_ARGS)
	OMP_WAIT_POLICY=PASSIVE $(PY) tools/benchmark.py $(BENCH_REASSEMBLY_ARGS)
	OMP_WAIT_POLICY=PASSIVE $(PY) tools/benchmark.py $(BENCH_ALL_ARGS)
	OMP_WAIT_POLICY=PASSIVE $(PY) tools/benchmark.py $(BENCH_FIG8_ARGS)

clean:
	rm -rf $(VENV)
