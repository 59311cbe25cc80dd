#!/usr/bin/env bash
# How the captured text in this directory was produced (local cluster: scripts/local-slurm up).
# Re-run to refresh: bash tests/data/slurm/capture.sh [outdir]. Takes ~100 s (one job times out).
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
eval "$(bash scripts/local-slurm env)"
OUT=${1:-tests/data/slurm}
W=$(mktemp -d /tmp/dn-capture.XXXX)
FMT=JobID,State,ExitCode,Start,End,NodeList,Comment,Reason
mk() { printf '#!/bin/bash\n%s\n' "$2" >"$W/$1.sh"; }
mk ok 'echo hello'
mk fail 'exit 3'
mk sleep 'sleep 300'
mk mem 'python3 -c "b=bytearray(400*1024*1024); import time; time.sleep(20)"'
sb() { sbatch --parsable -o "$W/%j.log" --chdir "$W" "$@"; }

bash scripts/local-slurm up >/dev/null
T=$(sb -J cap-timeout --comment cap:timeout:1 --time=1 "$W/sleep.sh")
OK=$(sb -J cap-ok --comment cap:ok:1 "$W/ok.sh"); echo "$OK" >"$OUT/sbatch_parsable.txt"
F=$(sb -J cap-fail --comment cap:fail:1 "$W/fail.sh")
D=$(sb -J cap-dep --comment cap:dep:1 --dependency=afterok:$F --kill-on-invalid-dep=yes "$W/ok.sh")
R=$(sb -J cap-run --comment cap:run:1 "$W/sleep.sh")
P=$(sb -J cap-pend --comment cap:pend:1 --dependency=afterok:$R "$W/ok.sh")
M=$(sb -J cap-mem --comment cap:mem:1 --mem=100M "$W/mem.sh")
sbatch --parsable --mem=999999999 "$W/ok.sh" >"$OUT/sbatch_badmem.out" 2>"$OUT/sbatch_badmem.err"
sbatch --parsable --dependency=afterok:abc "$W/ok.sh" >/dev/null 2>"$OUT/sbatch_baddep.err"
sleep 4
squeue -h -o '%i|%T|%r|%E' >"$OUT/squeue_running_pending.txt"
squeue -h -o '%i|%k' >"$OUT/squeue_find.txt"
sacct -X --parsable2 --noheader -j "$T,$OK,$F,$D,$R,$P,$M" --format=$FMT >"$OUT/sacct_live.txt"
scancel "$R"; sleep 4
# Dependency never satisfiable, kept PENDING: switch kill_invalid_depend off for a moment.
bash scripts/local-slurm up --no-kill-invalid-depend >/dev/null
F2=$(sb -J cap-fail2 --comment cap:fail2:1 "$W/fail.sh"); sleep 2
N=$(sb -J cap-never --comment cap:never:1 --dependency=afterok:$F2 "$W/ok.sh"); sleep 3
squeue -h -o '%i|%T|%r|%E' -j "$N" >"$OUT/squeue_never_satisfied.txt"
sacct -X --parsable2 --noheader -j "$N" --format=$FMT >"$OUT/sacct_never_satisfied.txt"
scancel "$N"
bash scripts/local-slurm up >/dev/null
sleep 85   # the --time=1 job ends by TIMEOUT (~86 s after its start)
sacct -X --parsable2 --noheader -j "$T,$OK,$F,$D,$R,$P,$M,$F2,$N" --format=$FMT >"$OUT/sacct_final.txt"
sacct -X --parsable2 --noheader -S now-7days --format=JobID,Comment >"$OUT/sacct_find.txt"
squeue -h -o '%i|%T|%r|%E' -j 999999 >"$OUT/squeue_unknown.out" 2>"$OUT/squeue_unknown.err"; echo "rc=$?" >>"$OUT/squeue_unknown.err"
echo "ids: timeout=$T ok=$OK fail=$F dep=$D run=$R pend=$P mem=$M fail2=$F2 never=$N" | tee "$OUT/ids.txt"
