#!/usr/bin/env bash
# The Slurm recipe (examples/cluster/slurm-submit.sh) on a real Slurm: a one-node cluster on this machine, made
# from Debian's slurm-wlm and munge, configured as a small site would (proctrack/linuxproc, task/none, no
# cgroups, no accounting), private to this run (its own munge key and socket, config, state, spool and ports
# under a temporary directory; nothing in /etc is read or changed).
#
#   bash scripts/slurm-test.sh          (run by scripts/test.sh; needs root, as slurmd does)
#
# It submits the recipe as a 4-task array on the CPU backend with the real SmolLM2 student, SIGKILLs one task's
# `lark` mid-run, and checks with no manual step that:
#   - the killed task retried by itself and resumed from its journal (its log, and its run.json's `resume`);
#   - the merge job ran exactly once, after every task, and succeeded;
#   - the merged scores.jsonl, scores.json, selection.jsonl and train.jsonl are byte-identical to an unsharded
#     `lark run` of the same pool and settings.
# The daemons are stopped at the end, whatever happens. Environment: LARK_BIN (default target/release/lark),
# LARK_CACHE (fixtures, as scripts/fetch-fixtures.sh), SLURM_TEST_KEEP=1 keeps the temporary directory.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lark="${LARK_BIN:-$repo/target/release/lark}"
die() { echo "slurm-test: FAILED: $*" >&2; exit 1; }
say() { echo "slurm-test: $*" >&2; }
t_start=$SECONDS

[[ "$(id -u)" == 0 ]] || die "needs root (slurmd runs jobs as their users); run it as root, as CI does"
[[ -x "$lark" ]] || die "no lark binary at $lark (cargo build --release --bin lark)"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
model="$(bash "$repo/scripts/fetch-fixtures.sh" | sed -n 's/^SMOLLM2_DIR=//p')"
[[ -d "$model" ]] || die "scripts/fetch-fixtures.sh gave no SMOLLM2_DIR"

T="$(mktemp -d "${TMPDIR:-/tmp}/lark-slurm.XXXXXX")"
chmod 755 "$T"
pids=()
cleanup() {
    local rc=$?
    set +e
    [[ -n "${SLURM_CONF:-}" ]] && scancel --quiet --user=root >/dev/null 2>&1
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    sleep 1
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    pkill -KILL -f "$T/" 2>/dev/null
    if [[ $rc != 0 ]]; then
        for f in "$T"/slurmctld.log "$T"/slurmd.log "$T"/run/logs/*.log; do
            [[ -f "$f" ]] && { echo "----- $f (last 40 lines)" >&2; tail -n 40 "$f" >&2; }
        done
    fi
    if [[ "${SLURM_TEST_KEEP:-}" == 1 ]]; then say "kept $T"; else rm -rf "$T"; fi
    exit $rc
}
trap cleanup EXIT

# 1. munge, private: its own key, socket, pid, log and seed files.
mkdir -p "$T/munge" && chmod 700 "$T/munge"
mungekey --create --keyfile="$T/munge/munge.key" >/dev/null 2>&1 || dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$T/munge/munge.key"
munged --force --foreground --socket="$T/munge/munge.sock" --key-file="$T/munge/munge.key" \
    --pid-file="$T/munge/munged.pid" --log-file="$T/munge/munged.log" --seed-file="$T/munge/munged.seed" \
    >"$T/munge/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [[ -S "$T/munge/munge.sock" ]] && break; sleep 0.1; done
[[ -S "$T/munge/munge.sock" ]] || die "munged did not start (log: $(tail -n 5 "$T/munge/munged.log" 2>/dev/null))"

# 2. Slurm: one node (this machine) with 4 CPUs declared (config_overrides: the 4 tasks run side by side even
# on a 2-core machine), one partition.
node="$(hostname -s)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mkdir -p "$T/state" "$T/spool"
cat >"$T/slurm.conf" <<CONF
ClusterName=larktest
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/munge/munge.sock
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=3600
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$node NodeAddr=127.0.0.1 CPUs=4 RealMemory=16000 State=UNKNOWN
PartitionName=lark Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$T/slurm.conf"
slurmctld -D -f "$SLURM_CONF" >"$T/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$T/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 120); do
    state="$(sinfo -h -n "$node" -o %t 2>/dev/null || true)"
    [[ "$state" == idle ]] && break
    sleep 0.5
done
[[ "$state" == idle ]] || die "the node did not come up (sinfo: '${state:-}')"
say "slurm $(sinfo -V | cut -d' ' -f2) up on $node in $((SECONDS - t_start)) s"

# 3. The pool (3 candidates of each example problem), the settings, and the unsharded reference.
python3 - "$repo/examples/pool.jsonl" "$T/pool.jsonl" <<'PY'
import json, sys
rows = [l for l in open(sys.argv[1], encoding="utf-8") if json.loads(l)["candidate_id"] < 3]
open(sys.argv[2], "w", encoding="utf-8").write("".join(rows))
PY
# --batch-tokens (hidden, for tests) makes journal chunks of one problem, so a killed task has work to resume.
settings=(--device cpu --max-len 384 --batch-tokens 256)
t_ref=$SECONDS
"$lark" run --model "$model" --pool "$T/pool.jsonl" --out "$T/reference" "${settings[@]}" >"$T/reference.log" 2>&1 \
    || die "the unsharded reference run failed: $(tail -n 5 "$T/reference.log")"
say "unsharded reference in $((SECONDS - t_ref)) s"

# 4. The recipe, as a user submits it: N = 4, CPU nodes (GRES=none), the merge's resources set to fit the node.
t_run=$SECONDS
out="$T/run"
submit="$(MODEL="$model" POOL="$T/pool.jsonl" OUT="$out" N=4 GRES=none CPUS=1 MEM=2G TIME=30:00 MERGE_CPUS=1 \
    MERGE_MEM=1G MERGE_TIME=10:00 LARK="$lark" LARK_ARGS="${settings[*]}" bash "$repo/examples/cluster/slurm-submit.sh")"
echo "$submit" | sed 's/^/slurm-test: /' >&2
array="$(echo "$submit" | sed -n 's/^shards: job array \([0-9]*\).*/\1/p')"
merge="$(echo "$submit" | sed -n 's/^merge:  job \([0-9]*\).*/\1/p')"
[[ -n "$array" && -n "$merge" ]] || die "could not read the job ids from: $submit"

# 5. SIGKILL one task's lark mid-run: the first shard with a journaled chunk and no run.json yet.
killed=""
for _ in $(seq 1200); do
    for k in 0 1 2 3; do
        d="$out/shard-$k"
        if [[ -s "$d/partial/journal.jsonl" && ! -e "$d/run.json" ]] \
            && pkill -KILL -f -- "--out $d --shard $k/4" 2>/dev/null; then
            killed=$k
            break 2
        fi
    done
    sleep 0.1
done
[[ -n "$killed" ]] || die "no task's lark could be killed mid-run"
say "SIGKILLed the lark of task $killed after $(wc -l <"$out/shard-$killed/partial/journal.jsonl") journaled chunk(s)"

# 6. Wait for everything to end, with no manual step.
for _ in $(seq 1200); do
    [[ -z "$(squeue -h -j "$array,$merge" -o %i 2>/dev/null)" ]] && break
    sleep 0.5
done
[[ -z "$(squeue -h -j "$array,$merge" -o %i 2>/dev/null)" ]] || die "jobs still queued after 10 minutes: $(squeue)"
say "the array and the merge ended $((SECONDS - t_run)) s after submission"

job_state() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -1 | cut -d= -f2; }
for k in 0 1 2 3; do
    st="$(job_state "${array}_$k")"
    [[ "$st" == COMPLETED ]] || die "task $k ended $st"
done
[[ "$(job_state "$merge")" == COMPLETED ]] || die "the merge job ended $(job_state "$merge")"
merges="$(ls "$out"/logs/lark-merge-*.log 2>/dev/null | wc -l)"
[[ "$merges" == 1 ]] || die "expected exactly one merge job log, found $merges"
[[ "$(grep -c '^lark-merge: 4 shards merged' "$out"/logs/lark-merge-*.log)" == 1 ]] || die "the merge did not run exactly once"

log="$out/logs/lark-shard-${array}_$killed.log"
grep -q "attempt 1 of 3 failed (exit 137)" "$log" || die "task $killed's log does not show the failed attempt"
grep -q "lark: resuming: [0-9]* finished chunks" "$log" || die "task $killed did not resume from its journal"
python3 - "$out/shard-$killed/run.json" <<'PY' || die "task $killed's run.json does not show the resumed work"
import json, sys
r = json.load(open(sys.argv[1]))["resume"]
assert r["chunks_resumed"] >= 1 and r["tokens_resumed"] > 0, r
print(f"slurm-test: task's run.json: {r['chunks_resumed']} of {r['chunks']} chunks resumed, "
      f"{r['tokens_resumed']} tokens resumed, {r['tokens_computed']} computed", file=sys.stderr)
PY
for f in scores.jsonl scores.json selection.jsonl train.jsonl; do
    cmp -s "$T/reference/$f" "$out/merged/$f" || die "merged $f differs from the unsharded run's"
done
[[ -s "$out/merged/report.html" ]] || die "no merged report"
say "ok: 4 tasks, one killed and resumed by itself, one merge; merged files byte-identical to the unsharded run" \
    "($((SECONDS - t_start)) s in all)"
