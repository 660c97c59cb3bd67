"""The package's numbers are the CLI's, byte for byte, and its per-token arrays the C ABI's."""

import json
import sys

import numpy as np
import pytest

import lark_select as lark

from conftest import REPO


def records(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def test_score_pool_writes_the_cli_bytes(tmp_path, student, pool_path, cli_run):
    table = lark.score_pool(student, pool_path, tmp_path / "out", device="cpu", progress=False)
    want = (cli_run / "scores.jsonl").read_bytes()
    assert (tmp_path / "out/scores.jsonl").read_bytes() == want
    assert (tmp_path / "out/scores.json").read_bytes() == (cli_run / "scores.json").read_bytes()
    assert table.jsonl().encode() == want
    run = json.loads((tmp_path / "out/run.json").read_text())
    assert run["counts"]["trajectories"] == len(table) == 70
    assert not (tmp_path / "out/partial").exists(), "the journal is removed after run.json"


def test_student_scores_records_in_memory_as_the_cli(student, pool_path, cli_run):
    s = lark.Student(student, device="cpu")
    assert s.device.startswith("cpu")
    table = s.score(records(pool_path))
    assert table.jsonl() == (cli_run / "scores.jsonl").read_text()
    # Missing numbers are None, as null in the file.
    assert all(r["skipped"] is None for r in table)


def test_selection_and_train_set_are_the_cli_files(tmp_path, pool_path, cli_run):
    rows = lark.read_scores(cli_run / "scores.jsonl")
    sel = lark.select(rows, by="g_hat", budget=3, weighting="chi2")
    want = [json.loads(l) for l in (cli_run / "selection.jsonl").read_text().splitlines()]
    assert sel == want
    n = lark.write_selection(sel, pool_path, tmp_path)
    assert (tmp_path / "selection.jsonl").read_bytes() == (cli_run / "selection.jsonl").read_bytes()
    assert (tmp_path / "train.jsonl").read_bytes() == (cli_run / "train.jsonl").read_bytes()
    # In memory: the same lines.
    lines = lark.train_records(sel, records(pool_path))
    assert lines == [json.loads(l) for l in (cli_run / "train.jsonl").read_text().splitlines()]
    assert n == len(lines)
    trl = lark.to_trl(sel, records(pool_path), as_dataset=False)
    assert [r["train_weight"] for r in trl] == [l["meta"]["train_weight"] for l in lines]
    assert trl[0]["messages"] == lines[0]["messages"]


def test_pure_functions_match_the_rows(cli_run):
    rows = lark.read_scores(cli_run / "scores.jsonl")
    by_problem = {}
    for r in rows:
        by_problem.setdefault(r["problem_id"], []).append(r)
    for pid, rs in by_problem.items():
        g = lark.g_hat([r["L"] for r in rs], [r["brier_mean"] for r in rs])
        assert g == [r["g_hat"] for r in rs], pid
    w = lark.weights([3.0, 1.0, 2.0, float("nan")], budget=2)
    # χ²-B: margins above the third key (1.0): 2 and 1, normalised.
    assert w == [2 / 3, 0.0, 1 / 3, 0.0]
    assert lark.weights([1.0, 2.0], budget=1, method="uniform") == [0.0, 1.0]
    with pytest.raises(lark.InputError, match="softmax weighting needs --temperature"):
        lark.weights([1.0], 1, "softmax")


def test_token_arrays_equal_the_c_abi(student, pool_path, lark_lib):
    sys.path.insert(0, str(REPO / "examples/python"))
    import lark_ctypes

    lib = lark_ctypes.load(str(lark_lib))
    recs = records(pool_path)[:5]
    s = lark.Student(student, device="cpu")
    ours = s.token_stats([r["messages"] for r in recs])
    with lark_ctypes.Model(lib, str(student), device="cpu") as m:
        for r, t in zip(recs, ours):
            theirs = m.token_stats(r["messages"])
            assert len(theirs) == len(t) > 0
            for field in ("logprob", "sum_p2", "entropy", "lse"):
                arr = getattr(t, field)
                assert arr.dtype == np.float32 and not arr.flags.writeable
                np.testing.assert_array_equal(arr, np.array([x[field] for x in theirs], dtype=np.float32))
            np.testing.assert_array_equal(t.rank, np.array([x["rank"] for x in theirs], dtype=np.uint32))
    # The arrays sum to the row's numbers.
    rows = s.score(recs[:1] + recs[1:2], per_token=True)
    for row in rows:
        tok = row["tokens"]
        assert len(tok) == row["n_tokens"]
        assert abs(-float(np.sum(tok.logprob, dtype=np.float64)) - row["nll_sum"]) < 1e-9 * max(1.0, row["nll_sum"])


def test_multi_turn_records_score_every_turn(student):
    recs = records(REPO / "examples/agentic_pool.jsonl")
    s = lark.Student(student, device="cpu")
    table = s.score(recs)
    # scores.jsonl writes n_turns where a trajectory has more than one scored turn.
    assert any(r.get("n_turns", 1) > 1 for r in table)
    stats = dict(zip([(r["problem_id"], r["candidate_id"]) for r in recs], s.token_stats(recs)))
    for r in table:
        t = stats[(r["problem_id"], r["candidate_id"])]
        assert t is not None and len(t) == r["n_tokens"] and t.n_turns == r.get("n_turns", 1)


def test_the_trl_example_writes_the_cli_selection(tmp_path, student, pool_path, cli_run):
    import datasets
    import subprocess

    out = tmp_path / "trl-run"
    p = subprocess.run(
        [sys.executable, str(REPO / "examples/python/select_for_trl.py"), "--model", str(student),
         "--pool", str(pool_path), "--out", str(out), "--device", "cpu"],
        capture_output=True, text=True,
    )
    assert p.returncode == 0, p.stderr
    # `lark run` used B = 3 and χ²-B too: the same selection and train.jsonl.
    for f in ["scores.jsonl", "selection.jsonl", "train.jsonl"]:
        assert (out / f).read_bytes() == (cli_run / f).read_bytes(), f
    sft = datasets.load_from_disk(str(out / "trl"))
    want = [json.loads(l)["meta"]["train_weight"] for l in (cli_run / "train.jsonl").read_text().splitlines()]
    assert sft["train_weight"] == want
