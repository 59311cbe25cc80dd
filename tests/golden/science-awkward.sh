#!/bin/bash
# desinight job 20261124/science/26112403 (attempt 1) of production daily
# Rendered 2026-11-25T06:00:00Z. Rerun by hand: bash '/tmp/it'"'"'s a "dir"; rm -rf ~ $(id)/run/20261124/science/attempt-1/job.sh'
# (a run by hand records its exit in a hand-<time> directory of its own beside this script,
# never in the attempt's record; or set DESINIGHT_ATTEMPT_DIR to choose the directory)
#SBATCH --job-name=dn-daily-7-science
#SBATCH --nodes=1
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=1
#SBATCH --time=30
#SBATCH --no-requeue
#SBATCH --mem=8000M

set -uo pipefail

__dn_default_dir='/tmp/it'"'"'s a "dir"; rm -rf ~ $(id)/run/20261124/science/attempt-1'
# The attempt's tag: its exit record counts for this attempt only when tag and job id match.
__dn_tag=desinight:daily:7:1
if [ -z "${DESINIGHT_ATTEMPT_DIR:-}" ] && ! { [ -n "${SLURM_JOB_ID:-}" ] && [ "${SLURM_JOB_NAME:-}" = dn-daily-7-science ]; }; then
    # Not started by the batch system (run by hand): never write over the attempt's record.
    __dn_default_dir="$__dn_default_dir/hand-$(date -u +%Y%m%dT%H%M%SZ)-$$"
    __dn_tag=hand
fi
export DESINIGHT_ATTEMPT_DIR="${DESINIGHT_ATTEMPT_DIR:-$__dn_default_dir}"
export DESI_SPECTRO_DATA='/tmp/it'"'"'s a "dir"; rm -rf ~ $(id)/raw data'
export DESI_SPECTRO_REDUX='/tmp/it'"'"'s a "dir"; rm -rf ~ $(id)/redux'
export SPECPROD=daily
# One thread per rank: ranks already fill the allocation; BLAS threads would oversubscribe it.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

mkdir -p "$DESINIGHT_ATTEMPT_DIR"
__dn_start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
__dn_exit() {
    local rc=$?
    local tmp="$DESINIGHT_ATTEMPT_DIR/exit.json.tmp.$$"
    # Written to a temporary name then renamed: the poller never reads half a record.
    printf '{"status": "%s", "exit_code": %d, "start": "%s", "end": "%s", "host": "%s", "backend_id": "%s", "tag": "%s"}\n' \
        "$([ "$rc" -eq 0 ] && echo completed || echo failed)" "$rc" "$__dn_start" \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(hostname)" "${SLURM_JOB_ID:-${DESINIGHT_BACKEND_ID:-}}" "$__dn_tag" \
        > "$tmp" && mv -f "$tmp" "$DESINIGHT_ATTEMPT_DIR/exit.json"
}
trap __dn_exit EXIT
# scancel / time limit send SIGTERM: exit through the EXIT trap so the record is written.
trap 'exit 143' TERM INT

echo 'desinight: 20261124/science/26112403'" attempt 1 on $(hostname) at $__dn_start"
srun --mpi=pmi2 /opt/py/bin/python -m desinight step run science --night 20261124 --expids 26112403 --tile 1000 --cameras a0

