#!/usr/bin/env python3
"""Compare two `lark run` outputs (GPU vs CPU) on the same pool: per-trajectory relative differences of the
model-based scores, and whether the top-B LARK selection is identical per problem. Exit 1 on a different
selection. Usage: gpu-pool-check.py CPU_OUT GPU_OUT"""
import json, sys

def load(d):
    rows = [json.loads(l) for l in open(f"{d}/scores.jsonl")]
    sel = {s["problem_id"]: [c["candidate_id"] for c in s["selected"]] for s in map(json.loads, open(f"{d}/selection.jsonl"))}
    return {(r["problem_id"], r["candidate_id"]): r for r in rows}, sel

cpu, cpu_sel = load(sys.argv[1])
gpu, gpu_sel = load(sys.argv[2])
worst = {}
for k, r in cpu.items():
    g = gpu[k]
    for f in ("L", "brier_mean", "rho_hat", "g_hat", "rsr", "mean_p_gold", "entropy_mean"):
        a, b = r[f], g[f]
        if a is None or b is None:
            continue
        rel = abs(a - b) / max(abs(a), 1e-12)
        worst[f] = max(worst.get(f, 0.0), rel)
same = sum(set(cpu_sel[p]) == set(gpu_sel[p]) for p in cpu_sel)
order = sum(cpu_sel[p] == gpu_sel[p] for p in cpu_sel)
print("pool check: worst relative GPU-vs-CPU difference per field: " +
      ", ".join(f"{f} {v:.2e}" for f, v in worst.items()))
print(f"pool check: top-B selection identical (as sets) in {same}/{len(cpu_sel)} problems, same order in {order}")
sys.exit(0 if same == len(cpu_sel) else 1)
