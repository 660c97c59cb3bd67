"""Long calls: the GIL is released, Ctrl-C stops a job within a second and leaves a journal that resumes to
the same bytes, progress callbacks see the job and can stop it."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import lark_select as lark

# Small batches make many journal chunks (one per problem): the options crash_resume.rs uses.
CHUNKY = {"device": "cpu", "batch_tokens": 64, "max_len": 384}

# The child's progress callback sleeps 0.1 s per call (it runs on the scoring thread, so the job waits for it): the
# tiny student can score the whole small pool in well under a second, and slowed so the job lasts seconds, so the
# signal lands mid-pool on any machine.
# The child also installs Python's SIGINT handler itself. A child that inherits an ignored SIGINT gets no handler
# from Python, and the signal never reaches the job. The parent may have been started with `nohup … &`, or
# something in the pytest process may have ignored SIGINT. That is the likely cause, not a confirmed one, of the
# 'ran to its end' failures in CI of 6cdee4c and 184568f (the second with the sleep already in place). The test
# alone passed in the foreground and under `nohup … &`.
CHILD = r"""
import signal, sys, time, lark_select as lark
signal.signal(signal.SIGINT, signal.default_int_handler)
student, pool, out = sys.argv[1:4]
def tick(p):
    print("progress", p["trajectories_done"], flush=True)
    time.sleep(0.1)
lark.score_pool(student, pool, out, progress=tick, device="cpu", batch_tokens=64, max_len=384)
print("finished", flush=True)
"""


def journal_lines(out: Path) -> int:
    try:
        return len((out / "partial/journal.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_ctrl_c_raises_keyboard_interrupt_and_the_job_resumes_byte_identical(tmp_path, student, small_pool):
    ref = tmp_path / "ref"
    lark.score_pool(student, small_pool, ref, progress=False, **CHUNKY)
    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(student), str(small_pool), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while journal_lines(out) < 1:
        assert child.poll() is None, "the job ended before a chunk was journaled"
        assert time.monotonic() < deadline, "no chunk journaled in 120 s"
        time.sleep(0.02)
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=30)
    stopped_after = time.monotonic() - sent
    assert "finished" not in stdout, "the job ran to its end instead of stopping"
    assert "KeyboardInterrupt" in stderr and "rerun with resume=True" in stderr, stderr
    assert stopped_after < 1.5, f"Ctrl-C took {stopped_after:.2f} s"
    assert not (out / "run.json").exists() and not (out / "scores.jsonl").exists(), "nothing final after Ctrl-C"
    kept = journal_lines(out)
    assert kept >= 1
    table = lark.score_pool(student, small_pool, out, resume=True, progress=False, **CHUNKY)
    assert (out / "scores.jsonl").read_bytes() == (ref / "scores.jsonl").read_bytes()
    assert table.jsonl().encode() == (ref / "scores.jsonl").read_bytes()
    run = json.loads((out / "run.json").read_text())
    assert run["resume"]["chunks_resumed"] == kept


def test_the_gil_is_released_while_scoring(student, pool_path):
    s = lark.Student(student, device="cpu")
    recs = [json.loads(l) for l in pool_path.read_text().splitlines()][:20]
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.005)

    t = threading.Thread(target=count)
    start = time.monotonic()
    t.start()
    s.score(recs)
    end = time.monotonic()
    stop.set()
    t.join()
    during = [x for x in ticks if start + 0.2 < x < end - 0.05]
    # A thread that held the GIL for the call would leave no tick in it; the counter runs every 5 ms.
    assert end - start > 0.5, "the call is too short to tell"
    assert len(during) > (end - start - 0.25) / 0.005 * 0.3, (len(during), end - start)


def test_progress_callbacks_see_the_job_and_can_stop_it(tmp_path, student, small_pool):
    seen = []
    lark.score_pool(student, small_pool, tmp_path / "a", progress=seen.append, **CHUNKY)
    assert seen and seen[-1]["trajectories_done"] == seen[-1]["trajectories_total"] == 24
    assert all(set(p) >= {"problems_done", "tokens_done", "tokens_per_s", "totals_exact"} for p in seen)

    class Enough(Exception):
        pass

    def stop_after_three(p):
        if p["trajectories_done"] >= 3:
            raise Enough("stop")

    with pytest.raises(Enough):
        lark.score_pool(student, small_pool, tmp_path / "b", progress=stop_after_three, **CHUNKY)
    assert not (tmp_path / "b/run.json").exists()
    lark.score_pool(student, small_pool, tmp_path / "b", resume=True, progress=False, **CHUNKY)
    assert (tmp_path / "b/scores.jsonl").read_bytes() == (tmp_path / "a/scores.jsonl").read_bytes()
