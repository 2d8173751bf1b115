# The two commands of the README: `make demo` and `make test`.
# Both create (or reuse) .venv in the repo root and install the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

# torch 2.13.0 is pinned here, not in setup.py: on this kind of machine pip finds
# a CPU wheel of exactly that version on disk, while a bare `torch` requirement
# would download a multi-GB CUDA build. GPU clusters install their own torch first.
TORCH ?= torch==2.13.0

.PHONY: install test demo clean-venv

install: $(STAMP)

$(STAMP): setup.py Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check "$(TORCH)"
	@# zeroshot: lm-eval, so that the test suite runs the real harness (tests/test_zeroshot.py).
	$(PIP) install --quiet --disable-pip-version-check -e ".[test,zeroshot]"
	@# ve-fairseq pulls a CUDA torchaudio that breaks `import transformers` beside a
	@# CPU torch; fairseq never imports it (see setup.py).
	$(PIP) uninstall --quiet --yes torchaudio 2>/dev/null || true
	$(PY) -c "import fairseq, fairseq_headless; from transformers import RobertaModel, GPT2LMHeadModel, GPTNeoXForCausalLM"
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests -q --durations=20

demo: $(STAMP)
	$(PY) -m studies.demo $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)
