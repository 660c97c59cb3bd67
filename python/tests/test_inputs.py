"""Inputs: HF datasets, iterables, chats; bad input raises the CLI's message as a Python exception."""

import json
import subprocess

import datasets
import pytest

import lark_select as lark

from conftest import REPO


def records(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def test_a_datasets_dataset_scores_as_its_records(tmp_path, student, pool_path, cli_run):
    recs = records(pool_path)[:8]
    ds = datasets.Dataset.from_list(recs)
    s = lark.Student(student, device="cpu")
    assert s.score(ds).jsonl() == s.score(iter(recs)).jsonl()
    # A whole job over a Dataset: written once as OUT/input.jsonl, then scored as a file.
    full = datasets.Dataset.from_list(records(pool_path))
    table = lark.score_pool(student, full, tmp_path / "out", device="cpu", progress=False)
    assert (tmp_path / "out/scores.jsonl").read_bytes() == (cli_run / "scores.jsonl").read_bytes()
    assert len(table) == 70
    # The TRL set as a Dataset with a train_weight column.
    sel = lark.select(table, budget=3)
    trl = lark.to_trl(sel, full, path=tmp_path / "train_trl.jsonl")
    assert isinstance(trl, datasets.Dataset)
    assert "train_weight" in trl.column_names and "messages" in trl.column_names
    assert len(trl) == sum(len(x["selected"]) for x in sel)
    assert abs(sum(trl["train_weight"]) - len(sel)) < 1e-9
    assert len((tmp_path / "train_trl.jsonl").read_text().splitlines()) == len(trl)


def test_chats_are_one_problems_candidates(student, pool_path):
    recs = [r for r in records(pool_path) if r["problem_id"] == records(pool_path)[0]["problem_id"]]
    s = lark.Student(student, device="cpu")
    by_chat = s.score([r["messages"] for r in recs])
    assert [r["problem_id"] for r in by_chat] == [0] * len(recs)
    assert [r["candidate_id"] for r in by_chat] == list(range(len(recs)))
    as_records = s.score(recs)
    for a, b in zip(by_chat, as_records):
        assert (a["nll_sum"], a["g_hat"]) == (b["nll_sum"], b["g_hat"])


def cli_error(lark_bin, *args) -> str:
    p = subprocess.run([str(lark_bin), *args], capture_output=True, text=True)
    assert p.returncode != 0
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), p.stderr
    return line[len("error: "):]


def test_bad_input_raises_the_cli_message(tmp_path, student, lark_bin):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"problem_id": 1, "candidate_id": 0, "messages": [{"role": "user", "content": "q"}, '
        '{"role": "assistant", "content": "a"}]}\n'
        '{"problem_id": 1, "candidate_id": 1, "messages": [{"role": "tool", "content": "r"}, '
        '{"role": "assistant", "content": "a"}]}\n'
    )
    want = cli_error(lark_bin, "score", "--model", str(student), "--pool", str(bad), "--out", str(tmp_path / "c"),
                     "--device", "cpu")
    assert "bad.jsonl:2" in want
    with pytest.raises(lark.InputError) as e:
        lark.score_pool(student, bad, tmp_path / "p", device="cpu", progress=False)
    assert str(e.value) == want
    assert not (tmp_path / "p/run.json").exists()
    # In memory, the same check names the element.
    with pytest.raises(lark.InputError, match=r"^records \(element 1\): field `messages\[0\].role`: a tool message before"):
        lark.Student(student, device="cpu").score(records(bad))
    # skip_invalid keeps the valid record and reports the other.
    t = lark.Student(student, device="cpu").score(records(bad), skip_invalid=True)
    assert len(t) == 1 and len(t.rejects) == 1


def test_errors_are_typed(tmp_path, student):
    with pytest.raises(lark.ModelError, match="/nonexistent"):
        lark.Student("/nonexistent/model")
    assert issubclass(lark.ModelError, lark.InputError) and issubclass(lark.InputError, lark.LarkError)
    with pytest.raises(lark.InputError, match="unknown device `gpu`"):
        lark.Student(student, device="gpu")
    with pytest.raises(lark.InputError, match="unknown span mode"):
        lark.Student(student, span="everything")
    with pytest.raises(lark.InputError, match="--colour"):
        lark.score_pool(student, REPO / "examples/pool.jsonl", tmp_path, colour="red")
    with pytest.raises(lark.InputError, match="invalid value 'many' for '--max-len"):
        lark.score_pool(student, REPO / "examples/pool.jsonl", tmp_path, max_len="many")
    with pytest.raises(lark.InputError, match="cannot pass a object"):
        lark.Student(student, device="cpu").score([{"messages": object()}])
    with pytest.raises(lark.BackendError):
        lark.Student(student, device="cuda:7")
