# The two commands a newcomer needs (see README.md):
#   make demo   set up what is missing, then run the example job on the embedded default model (models/micro-sd)
#   make test   set up what is missing, then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-controlnet demo-img2img demo-utility test test-fast setup clean

setup: $(STAMP)

# torch goes in first, by exact version, so pip takes the CPU build that lies on this
# machine's disk instead of resolving a multi-GB CUDA build for the range in pyproject.toml.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# The embedded default model family is committed under models/ (trained by `python -m lab.train_micro`).
# Exit 3 is a `partial` run: every image was made and QC rejected a few (see out/default/qc/report.html).
demo: $(STAMP)
	$(BIN)/diffgen run examples/default/job.yaml --output out/default || test $$? -eq 3

demo-controlnet: $(STAMP)
	$(BIN)/diffgen run examples/controlnet/job.yaml --output out/controlnet

demo-img2img: $(STAMP)
	$(BIN)/diffgen run examples/img2img/job.yaml --output out/img2img

# A guidance sweep of the utility example (micro-sd, a shape classifier probed on real renders):
# out/utility-sweep/sweep.html, and each point's qc/utility.json and qc/report.html.
demo-utility: $(STAMP)
	$(BIN)/diffgen sweep examples/utility/job.yaml --grid sampler.guidance_scale=1.5,3,5,7.5 --output out/utility-sweep

test: $(STAMP)
	$(BIN)/python -m pytest

# The edit-test loop's tier: everything that starts no Ray and trains nothing (~1.5 min on 2 cores).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf out examples/models
