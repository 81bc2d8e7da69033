# Conveniences over the two commands of the README (scripts/serve and scripts/test).
.PHONY: serve test bench clean

serve:
	scripts/serve

test:
	scripts/test

bench:
	scripts/setup.sh && .venv/bin/python bench/engine_bench.py && .venv/bin/python bench/service_bench.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .hypothesis bench/out
