# omc: every target creates and reuses .venv/ on its own; only Python 3.10+ and pip are needed.
#
#   make benchmark   set up, export the default OMC-L model (1088x608) and benchmark it on the CPU
#   make test        set up, type-check and run the test suite (what CI runs)
#
# Variables: PYTHON (interpreter for the venv), TORCH_INDEX (where torch comes from: the CPU index
# by default; a GPU user sets e.g. https://download.pytorch.org/whl/cu128), WEIGHTS (a checkpoint;
# empty exports seeded random weights), IMG_SIZE, ENGINES (output folder), BACKEND, PRECISION
# (engines of ort / trt in the benchmark: fp16 when BACKEND names trt, whose plans `make engines`
# builds from the fp16 graphs; else fp32), REFERENCE_REPO (a checkout of JudasDie/SOTS, branch MOT:
# the benchmark also times the reference tracker's own post-processing), VIDEO.

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
OMC         := $(VENV)/bin/omc
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
EXTRAS      ?= export,eval,bench,rtx,triton,cluster,dev
WEIGHTS     ?=
IMG_SIZE    ?= 1088x608
# One folder per model: a checkpoint's engines never mix with the random-weight ones (omc bench
# also refuses a folder exported from other weights than WEIGHTS).
MODEL_NAME  := $(if $(WEIGHTS),$(basename $(notdir $(WEIGHTS))),omc_l)
ENGINES     ?= engines/$(MODEL_NAME)_$(IMG_SIZE)
BACKEND     ?= torch,ort,ort-int8
PRECISION   ?= $(if $(findstring trt,$(BACKEND)),fp16,fp32)
REFERENCE_REPO ?=
VIDEO       ?=
PYTEST_ARGS ?=

STAMP := $(VENV)/.installed
# The Triton server of the end-to-end tests and the Triton benchmark: the tritonserver bundled by
# nvidia-pytriton (Python backend only), in its own environment because PyTriton pins numpy < 2.
# Its interpreter must be a shared-libpython build of Python 3.10-3.12 (the stubs PyTriton ships).
TRITON_VENV  := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed

.PHONY: setup live-deps test typecheck pytest triton-server export engines calib benchmark demo test-gpu clean

setup: $(STAMP)

# torch goes first, alone and without dependencies, from TORCH_INDEX: PyPI's default torch for
# Linux is a multi-GB CUDA build. pip then resolves torch's own dependencies with the project.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --retries 1 --no-deps --extra-index-url $(TORCH_INDEX) torch==2.13.0
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
	$(PY) tests/typecheck/prepare_trt_stubs.py
	touch $(STAMP)

test: setup live-deps typecheck pytest

# The live-stream tests serve real RTSP on 127.0.0.1 with GStreamer's RTSP server, run by the
# system Python (its `gi`); installed from Debian's packages when missing (root or sudo).
LIVE_PACKAGES := python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
LIVE_PROBE := /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" 2>/dev/null
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
live-deps:
	@$(LIVE_PROBE) || { echo "installing GStreamer's RTSP server for the live-stream tests: $(LIVE_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(LIVE_PACKAGES) >/dev/null; }
	@$(LIVE_PROBE) || { echo "GStreamer's RTSP server is still missing for /usr/bin/python3"; exit 1; }

triton-server: $(TRITON_STAMP)

$(TRITON_STAMP): Makefile
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q --retries 1 nvidia-pytriton==0.7.0 "numpy<2" "onnxruntime>=1.17"
	touch $(TRITON_STAMP)

typecheck: setup
	$(PY) tests/typecheck/prepare_trt_stubs.py
	$(PY) -m mypy
	$(PY) tests/typecheck/check_trt_api.py

# With the rtx extra installed, a TensorRT for RTX that does not import fails the engine-build
# tests instead of skipping them (tests/paths.py: OMC_REQUIRE_RTX).
pytest: setup triton-server
	OMC_REQUIRE_RTX=$(if $(findstring rtx,$(EXTRAS)),1,0) $(PY) -m pytest $(PYTEST_ARGS)

$(ENGINES)/export.json: | $(STAMP)
	$(OMC) export $(if $(WEIGHTS),--weights $(WEIGHTS),--random-weights) --img-size $(IMG_SIZE) --out $(ENGINES)

export: setup $(ENGINES)/export.json

engines: export
	$(OMC) export $(if $(WEIGHTS),--weights $(WEIGHTS),--random-weights) --img-size $(IMG_SIZE) --precision fp16 --out $(ENGINES)/fp16
	$(OMC) build --onnx $(ENGINES)/fp16 $(if $(GPU_TARGET),--gpu-target $(GPU_TARGET))

benchmark: export
	$(OMC) bench --onnx $(ENGINES) $(if $(WEIGHTS),--weights $(WEIGHTS)) --backend $(BACKEND) --precision $(PRECISION) $(if $(REFERENCE_REPO),--reference-repo $(REFERENCE_REPO)) --plot

demo: export
	@test -n "$(VIDEO)" || { echo "usage: make demo VIDEO=path/to/video.mp4"; exit 2; }
	$(OMC) track "$(VIDEO)" --engines $(ENGINES) --out runs/demo.txt --save-video runs/demo.mp4

test-gpu: setup
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(TRITON_VENV) engines runs .pytest_cache .mypy_cache
