#!/usr/bin/env python3
"""Write tests/fixtures/parquet/: small Parquet pools as HF `datasets` stores them (pyarrow, snappy), for
tests/parquet_pool.rs.

    ~/.cache/lark/golden-venv/bin/python -m pip install pyarrow   # once
    ~/.cache/lark/golden-venv/bin/python scripts/make_parquet_fixtures.py

- `shards/data/train-0000{0,1}-of-00002.parquet`: examples/agentic_pool.jsonl as two shards with row groups of 2
  rows: columns problem_id, candidate_id, teacher, messages (list of structs; tool-call arguments as JSON
  strings, as agent datasets on the Hub store them, since their shapes differ between calls) and tools (a JSON
  string). pyarrow unifies the message structs, so a user message gets `tool_calls: null` etc.;
- `shards.jsonl`: the same records as JSONL (what lark must score identically);
- `sharegpt.parquet`: examples/agentic_sharegpt.jsonl with a `conversations` column and no id columns;
- `wrong_type.parquet` (messages an int64 column), `no_messages.parquet` (only a `text` column),
  `zstd.parquet` (a codec lark is built without), `bad_row.parquet` (row 1: an assistant message without
  content).
"""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests/fixtures/parquet")


def load(name):
    with open(os.path.join(ROOT, "examples", name), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def hub_style(r):
    r = dict(r)
    msgs = []
    for m in r["messages"]:
        m = dict(m)
        if "tool_calls" in m:
            m["tool_calls"] = [{"id": c["id"], "type": c["type"],
                                "function": {"name": c["function"]["name"],
                                             "arguments": json.dumps(c["function"]["arguments"], ensure_ascii=False)}}
                               for c in m["tool_calls"]]
        msgs.append(m)
    r["messages"] = msgs
    r["tools"] = json.dumps(r["tools"], ensure_ascii=False) if "tools" in r else None
    return r


def main():
    os.makedirs(os.path.join(OUT, "shards/data"), exist_ok=True)
    recs = [hub_style(r) for r in load("agentic_pool.jsonl")]
    with open(os.path.join(OUT, "shards.jsonl"), "w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps({k: v for k, v in r.items() if v is not None}, ensure_ascii=False) + "\n")
    # One schema for both shards (datasets writes every shard with the dataset's features).
    schema = pa.Table.from_pylist(recs).schema
    half = len(recs) // 2
    for i, part in enumerate([recs[:half], recs[half:]]):
        pq.write_table(pa.Table.from_pylist(part, schema=schema),
                       os.path.join(OUT, f"shards/data/train-{i:05d}-of-00002.parquet"),
                       row_group_size=2, compression="snappy")
    sg = load("agentic_sharegpt.jsonl")
    for r in sg:
        del r["problem_id"], r["candidate_id"]
    pq.write_table(pa.Table.from_pylist(sg), os.path.join(OUT, "sharegpt.parquet"), compression="snappy")
    pq.write_table(pa.table({"messages": pa.array([1, 2], pa.int64())}), os.path.join(OUT, "wrong_type.parquet"))
    pq.write_table(pa.table({"text": ["a", "b"]}), os.path.join(OUT, "no_messages.parquet"))
    pq.write_table(pa.Table.from_pylist(recs[:2], schema=schema), os.path.join(OUT, "zstd.parquet"),
                   compression="zstd")
    bad = [{"problem_id": 0, "candidate_id": c, "messages": [{"role": "user", "content": "q"},
                                                              {"role": "assistant", "content": a}]}
           for c, a in enumerate(["fine", None, "also fine"])]
    pq.write_table(pa.Table.from_pylist(bad), os.path.join(OUT, "bad_row.parquet"))


if __name__ == "__main__":
    main()
