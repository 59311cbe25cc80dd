"""Science steps run inside jobs: raw CCD frames towards redshifts (see docs/science.md).

Each step is a plain function usable in-process; `jobs.run_job` is what `desinight step run`
calls, spreading cameras over MPI ranks.
"""
