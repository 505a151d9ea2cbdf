# The two commands of the README. Each does its own set-up (scripts/setup.sh, idempotent).
.PHONY: demo test setup lock lab listen lint bench docs

# The demo searches two voices, on the base and on phase 2, so the report shows both beside
# fine-tuning: every stage once, then the voice search again from phase 2 and what follows it.
demo: setup
	.venv/bin/voicebook run --experiment demo
	.venv/bin/voicebook run --experiment demo --stages voice_search evaluation decision -p init_from phase2

test: setup
	.venv/bin/python -m pytest tests notebooks --nbmake --nbmake-timeout=1200 -p no:cacheprovider \
		-n 3 --no-loadscope-reorder  # three workers: see tests/conftest.py

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
	.venv/bin/ruff check lib tests benchmarks scripts && .venv/bin/ruff format --check lib tests benchmarks scripts

bench: setup
	for b in benchmarks/*.py; do .venv/bin/python $$b || exit 1; done

docs:  ## docs/stages.md from the stage contract (lib/voicebook/core/stages.py)
	.venv/bin/python -m voicebook.core.stages_doc
