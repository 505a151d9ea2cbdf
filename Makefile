# The two commands of the README (and the inner loop, test-fast). Each does its own set-up
# (scripts/setup.sh, idempotent).
.PHONY: demo test test-fast setup lock lab listen lint bench docs

# One pass of every stage with the demo's small settings (params/demo.yaml): the voice search
# searches on the base and on phase 2 before the one evaluation, so the report shows both
# voices beside fine-tuning.
demo: setup
	.venv/bin/voicebook run --experiment demo -f params/demo.yaml

# Everything (CI: .ci/run): unit tests, the slow ones, every notebook with nbmake (the demo's
# parameters at smaller sizes: conftest.py).
test: setup
	.venv/bin/python -m pytest tests notebooks --nbmake --nbmake-timeout=1200 -p no:cacheprovider \
		-n 3 --no-loadscope-reorder  # three workers: see conftest.py

# The inner loop: unit tests only (no training, notebooks, browser, Ray or full size).
test-fast: setup
	.venv/bin/python -m pytest tests -m "not slow" -p no:cacheprovider -n 2 --no-loadscope-reorder

setup:
	@bash scripts/setup.sh

# Re-lock after changing pyproject.toml's dependencies (or to take upstream fixes on purpose):
# uv.lock for set-up, requirements.lock.txt (the same pins, no hashes) for conda's environment.yml.
lock:
	@bash scripts/setup.sh --uv-only
	.uv/bin/uv lock --python 3.11
	.uv/bin/uv export --frozen --no-hashes --no-emit-project --no-header --quiet \
		--format requirements-txt -o requirements.lock.txt

lab: setup
	.venv/bin/jupyter lab notebooks

# The blind listening test as web pages, one link per rater (docs/listening.md):
#   make listen EXPERIMENT=demo RATERS="ann bob" [HOST=127.0.0.1] [PORT=8866]
EXPERIMENT ?= demo
HOST ?= 127.0.0.1
PORT ?= 8866
listen: setup
	.venv/bin/voicebook listen --experiment $(EXPERIMENT) --host $(HOST) --port $(PORT) \
		$(if $(RATERS),--raters $(RATERS))

lint: setup
	.venv/bin/ruff check conftest.py lib tests benchmarks scripts \
		&& .venv/bin/ruff format --check conftest.py lib tests benchmarks scripts

bench: setup
	for b in benchmarks/*.py; do .venv/bin/python $$b || exit 1; done

docs:  ## docs/stages.md from the stage contract (lib/voicebook/core/stages.py)
	.venv/bin/python -m voicebook.core.stages_doc
