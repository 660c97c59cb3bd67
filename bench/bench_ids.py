#!/usr/bin/env python3
"""The token ids every tool of scripts/bench-cpu.sh scores: for each T, the first T ids of the longest sequence
of the golden fixture (tests/fixtures/golden_smollm2.json, a 2,408-token worked solution rendered with the SmolLM2
chat template), repeated if T is longer. Written as DIR/smollm2_ids_T{T}.json, a JSON array holding one array of
ids (batch 1), which `lark bench --ids-file`, bench/hf_cpu_bench.py and bench/llama_cpp_bench.py all read.
Standard library only.

Usage: bench_ids.py DIR T [T ...]   (prints the paths written)
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "fixtures", "golden_smollm2.json")


def ids_path(dirname, T):
    return os.path.join(dirname, f"smollm2_ids_T{T}.json")


def write_ids(dirname, lengths):
    with open(GOLDEN) as f:
        seqs = json.load(f)["sequences"]
    src = max(seqs, key=lambda s: len(s["ids"]))["ids"]
    os.makedirs(dirname, exist_ok=True)
    paths = []
    for T in lengths:
        ids = (src * (T // len(src) + 1))[:T]
        p = ids_path(dirname, T)
        with open(p, "w") as f:
            json.dump([ids], f)
            f.write("\n")
        paths.append(p)
    return paths


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    for p in write_ids(sys.argv[1], [int(t) for t in sys.argv[2:]]):
        print(p)
