#!/usr/bin/env python3
"""Check the example pools in examples/ (pool.jsonl, judge_scores.json, rsr_pool/) for the properties the README and
the tests rely on: record shape, ids, one system prompt, ≥ 5 candidates per problem from distinct teachers, every
trajectory correct (its last \\boxed{} answer equals the problem's answer), well-formed <think> blocks, judge
scores in [1, 10] for every record, and an RSR layout that mirrors the pool. Reads only the repository.

The reference answer of a problem is the boxed answer its candidates give: they must all agree (the pool holds
correct trajectories only), so a candidate with another answer fails the check.

  python3 scripts/validate_example_pool.py [EXAMPLES_DIR]     # default: the examples/ beside this script
"""
import json, os, sys, collections
EX = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")

def last_boxed(s):
    i = s.rfind("\\boxed{")
    assert i >= 0, "no boxed"
    j = i + len("\\boxed{"); depth = 1; k = j
    while depth:
        if s[k] == "{": depth += 1
        elif s[k] == "}": depth -= 1
        k += 1
    return s[j:k-1]

recs = []
with open(f"{EX}/pool.jsonl", encoding="utf-8") as f:
    for ln, line in enumerate(f, 1):
        r = json.loads(line)
        assert set(r) == {"problem_id", "candidate_id", "teacher", "messages"}, (ln, r.keys())
        assert isinstance(r["problem_id"], int) and isinstance(r["candidate_id"], int) and isinstance(r["teacher"], str)
        m = r["messages"]
        assert [x["role"] for x in m] == ["system", "user", "assistant"], ln
        assert all(isinstance(x["content"], str) and x["content"].strip() for x in m), ln
        recs.append(r)
systems = {r["messages"][0]["content"] for r in recs}
assert len(systems) == 1, systems
by = collections.defaultdict(list)
for r in recs: by[r["problem_id"]].append(r)
answers = {}
for pid, rs in by.items():
    given = {last_boxed(r["messages"][2]["content"]) for r in rs}
    assert len(given) == 1, (pid, given)
    answers[pid] = given.pop()
for pid, rs in by.items():
    ids = [r["candidate_id"] for r in rs]
    assert ids == list(range(len(rs))), (pid, ids)
    assert len(rs) >= 5, pid
    assert len({r["teacher"] for r in rs}) == len(rs), pid
    assert [r["teacher"] for r in rs] == sorted(r["teacher"] for r in rs), pid
    assert len({r["messages"][1]["content"] for r in rs}) == 1, pid
    for r in rs:
        a = r["messages"][2]["content"]
        assert last_boxed(a) == answers[pid], (pid, r["teacher"], last_boxed(a))
        assert "\\boxed{" + answers[pid] + "}" in a
        if "<think>" in a: assert a.count("<think>") == 1 and a.count("</think>") == 1 and a.index("<think>") < a.index("</think>")
print(f"pool: {len(recs)} trajectories, {len(by)} problems, sizes", sorted(collections.Counter(len(v) for v in by.values()).items()))
print("bytes", os.path.getsize(f"{EX}/pool.jsonl"))
# per-teacher word stats and LIMO indicator words (exact lower-cased whitespace tokens)
W = {"selfver": {"check", "verify"}, "explore": {"perhaps", "might"}, "gran": {"therefore", "since"}}
st = collections.defaultdict(lambda: collections.defaultdict(list))
for r in recs:
    w = r["messages"][2]["content"].lower().split()
    st[r["teacher"]]["words"].append(len(w))
    for k, v in W.items(): st[r["teacher"]][k].append(sum(x in v for x in w))
for t in sorted(st):
    d = st[t]
    print(f"{t:18s} words min/mean/max {min(d['words']):5d} {sum(d['words'])/len(d['words']):7.1f} {max(d['words']):5d}  "
          + "  ".join(f"{k}={sum(d[k])/len(d[k]):.1f}" for k in W))
# judge scores
j = json.load(open(f"{EX}/judge_scores.json"))
for r in recs:
    s = j[str(r["problem_id"])][str(r["candidate_id"])]["overall_score"]
    assert isinstance(s, float) and 1 <= s <= 10
assert sum(len(v) for v in j.values()) == len(recs)
print("judge ok")
# rsr layout
teachers = sorted(os.listdir(f"{EX}/rsr_pool"))
n = 0
for t in teachers:
    for g in (1, 2, 3):
        lst = json.load(open(f"{EX}/rsr_pool/{t}/lark_example_gen{g}.json"))
        assert isinstance(lst, list) and len(lst) == 3
        for pid, e in enumerate(lst):
            if "id" in e: assert e["id"] == pid
            m = e["messages"]
            assert [x["role"] for x in m] == ["system", "user", "assistant"]
            assert m[1]["content"] == by[pid][0]["messages"][1]["content"]
            assert last_boxed(m[2]["content"]) == answers[pid]
            n += 1
print("rsr ok", teachers, n, "records")
for pid in sorted(by): print(pid, answers[pid], "|", by[pid][0]["messages"][1]["content"][:70].replace("\n", " "))
