"""Score a pool with a student, keep B = 3 trajectories per problem with LARK's χ²-B weights, and write the
weighted SFT set for TRL.

    pip install ./python                    # once, from the repository (README "Python")
    python examples/python/select_for_trl.py --model STUDENT_DIR --pool examples/pool.jsonl --out runs/trl

The pool may be any that `lark score` reads (JSONL, ShareGPT, Parquet shards, RSR_data) or an HF dataset name
saved to disk (`--dataset DIR`, from `Dataset.save_to_disk`). Scoring is a resumable job: after Ctrl-C, run the
same command with --resume. What it writes in OUT:

- scores.jsonl, scores.json, run.json    the job's files (those of `lark score`)
- selection.jsonl, train.jsonl           those of `lark select --budget 3`
- trl/                                   the SFT set as a `datasets.Dataset` (save_to_disk): messages, tools,
                                         train_weight, and the selection's metadata

In TRL, use `train_weight` as a per-example loss weight (a weighted SFTTrainer or a weighted sampler);
trainers without weights can drop the weight-0 ties with --drop-zero-weight.
"""

import argparse
from pathlib import Path

import lark_select as lark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="student model directory")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--pool", nargs="+", help="pool path(s), as `lark score --pool`")
    src.add_argument("--dataset", help="a datasets.Dataset saved with save_to_disk")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--budget", type=int, default=3)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--drop-zero-weight", action="store_true")
    a = ap.parse_args()

    if a.dataset:
        import datasets

        pool = datasets.load_from_disk(a.dataset)  # records in memory: written to OUT/input.jsonl once
    else:
        pool = a.pool
    rows = lark.score_pool(a.model, pool, a.out, device=a.device, resume=a.resume)
    selections = lark.select(rows, by="g_hat", budget=a.budget, weighting="chi2")
    pool_for_export = a.out / "input.jsonl" if a.dataset else a.pool
    n = lark.write_selection(selections, pool_for_export, a.out, drop_zero_weight=a.drop_zero_weight)
    sft = lark.to_trl(selections, pool_for_export, drop_zero_weight=a.drop_zero_weight)
    if hasattr(sft, "save_to_disk"):
        sft.save_to_disk(str(a.out / "trl"))
        where = a.out / "trl"
    else:  # datasets is not installed: the JSONL that TRL's load_dataset("json", ...) reads
        lark.to_trl(selections, pool_for_export, path=a.out / "trl.jsonl", as_dataset=False)
        where = a.out / "trl.jsonl"
    print(f"{len(rows)} trajectories of {len(selections)} problems scored; {n} selected (B = {a.budget}, χ²-B)")
    print(f"wrote {a.out}/train.jsonl and the TRL set {where}")


if __name__ == "__main__":
    main()
