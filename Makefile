# The two commands of the README. Each does its own set-up (scripts/setup.sh, idempotent).
.PHONY: demo test setup lab lint bench

demo: setup
	.venv/bin/voicebook run --experiment demo

test: setup
	.venv/bin/python -m pytest tests notebooks --nbmake --nbmake-timeout=1200 -p no:cacheprovider

setup:
	@bash scripts/setup.sh

lab: setup
	.venv/bin/jupyter lab notebooks

lint: setup
	.venv/bin/ruff check lib tests benchmarks scripts && .venv/bin/ruff format --check lib tests benchmarks scripts

bench: setup
	for b in benchmarks/*.py; do .venv/bin/python $$b || exit 1; done
