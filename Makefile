# Conveniences over the scripts the README names (scripts/ work without make installed).
.PHONY: demo test unit bench slurm-up slurm-down pg-up pg-down

demo:
	bash scripts/demo
test:
	bash scripts/test
unit:           ## fast tests only, no SLURM/PostgreSQL needed
	.venv/bin/python -m pytest -q -m "not slurm and not postgres and not slow"
bench:          ## every figure in docs/benchmarks.md (needs scripts/local-slurm up for SLURM ones)
	bash scripts/bootstrap-python && .venv/bin/python -m pip install -q -e '.[bench]'
	bash scripts/local-slurm up
	.venv/bin/python -m bench
slurm-up:
	bash scripts/local-slurm up
slurm-down:
	bash scripts/local-slurm down
pg-up:
	bash scripts/local-postgres up
pg-down:
	bash scripts/local-postgres down
