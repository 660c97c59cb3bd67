#!/usr/bin/env python3
"""Score and weight a LARK pool in-process through liblark's C ABI, with nothing but the standard library.

    cargo build --release        # builds target/release/liblark.so next to the CLI
    python3 examples/python/lark_ctypes.py --model MODEL_DIR --pool examples/pool.jsonl --budget 3

Prints one JSON object per trajectory (pool order within each problem): the model-pass fields of
`scores.jsonl`, ĝ, and the χ²-B weight at the budget (0 when not selected); NaN is written as null.
`--tokens N` also prints the first N per-token statistics of the first chat to stderr.

The structs below mirror include/lark.h; tests/c_abi.rs runs this script and checks its numbers against
`lark run`.
"""
import argparse
import ctypes as C
import json
import math
import os
import sys
from pathlib import Path

LARK_OK = 0
LARK_ERR_BUFFER_TOO_SMALL = 3
LARK_SPAN = {"turn": 0, "content": 1}
LARK_WEIGHT = {"chi2": 0, "uniform": 1, "proportional": 2, "softmax": 3}
LARK_SKIP_REASON_LEN = 128


class Options(C.Structure):
    _fields_ = [("max_len", C.c_size_t), ("span_mode", C.c_int32), ("brier_topk", C.c_uint32),
                ("rank_clip", C.c_uint32), ("reserved", C.c_uint32)]


STAT_FIELDS = ["nll_sum", "L", "brier_sum", "brier_mean", "rho_hat", "grape", "inverse_loss", "rsr",
               "mean_rank_clip", "mean_p_gold", "wrong_conc", "entropy_mean"]


class TrajectoryStats(C.Structure):
    _fields_ = ([("skipped", C.c_int32), ("truncated", C.c_int32), ("brier_topk", C.c_uint32),
                 ("reserved", C.c_uint32), ("n_tokens", C.c_uint64)]
                + [(f, C.c_double) for f in STAT_FIELDS]
                + [("skip_reason", C.c_char * LARK_SKIP_REASON_LEN)])


class TokenStats(C.Structure):
    _fields_ = [("logprob", C.c_float), ("sum_p2", C.c_float), ("entropy", C.c_float), ("rank", C.c_uint32),
                ("lse", C.c_float), ("topk_brier", C.c_float)]


class Span(C.Structure):
    _fields_ = [("len", C.c_size_t), ("score_from", C.c_size_t), ("score_to", C.c_size_t),
                ("skipped", C.c_int32), ("truncated", C.c_int32)]


class LarkError(RuntimeError):
    def __init__(self, code, message):
        super().__init__(f"lark error {code}: {message}")
        self.code = code


def load(path=None):
    """Load liblark and declare every function's types (ctypes would otherwise guess them)."""
    if path is None:
        path = os.environ.get("LARK_LIB")
    if path is None:
        root = Path(__file__).resolve().parents[2]
        path = next((str(p) for p in (root / "target/release/liblark.so", root / "target/debug/liblark.so")
                     if p.exists()), "liblark.so")
    lib = C.CDLL(path)
    P = C.POINTER
    sig = {
        "lark_version": (C.c_char_p, []),
        "lark_last_error": (C.c_char_p, []),
        "lark_options_default": (C.c_int, [P(Options)]),
        "lark_model_open": (C.c_int, [C.c_char_p, C.c_char_p, P(Options), P(C.c_void_p)]),
        "lark_model_free": (C.c_int, [C.c_void_p]),
        "lark_model_device": (C.c_int, [C.c_void_p, P(C.c_char_p)]),
        "lark_tokenize_chat": (C.c_int, [C.c_void_p, C.c_char_p, P(C.c_uint32), C.c_size_t, P(Span)]),
        "lark_score_chats": (C.c_int, [C.c_void_p, P(C.c_char_p), C.c_size_t, P(TrajectoryStats)]),
        "lark_score_ids": (C.c_int, [C.c_void_p, P(C.c_uint32), C.c_size_t, C.c_size_t, P(TrajectoryStats),
                                     P(TokenStats), C.c_size_t]),
        "lark_problem_weights": (C.c_int, [P(TrajectoryStats), C.c_size_t, C.c_size_t, C.c_int, C.c_double,
                                           P(C.c_double), P(C.c_double)]),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


class Model:
    """A lark_model handle; use as a context manager (or call close) to free it."""

    def __init__(self, lib, model_dir, device="auto", max_len=0, span="turn", brier_topk=0, rank_clip=0):
        self.lib = lib
        opts = Options()
        self._check(lib.lark_options_default(C.byref(opts)))
        opts.max_len, opts.span_mode, opts.brier_topk = max_len, LARK_SPAN[span], brier_topk
        if rank_clip:
            opts.rank_clip = rank_clip
        self.handle = C.c_void_p()
        self._check(lib.lark_model_open(str(model_dir).encode(), device.encode(), C.byref(opts),
                                        C.byref(self.handle)))

    def _check(self, rc):
        if rc != LARK_OK:
            raise LarkError(rc, self.lib.lark_last_error().decode())

    def close(self):
        if self.handle:
            self.lib.lark_model_free(self.handle)
            self.handle = C.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def device(self):
        s = C.c_char_p()
        self._check(self.lib.lark_model_device(self.handle, C.byref(s)))
        return s.value.decode()

    def score_chats(self, chats):
        """Statistics for each chat (a list of {"role", "content"} dicts)."""
        n = len(chats)
        jsons = (C.c_char_p * n)(*[json.dumps(c).encode() for c in chats])
        out = (TrajectoryStats * n)()
        self._check(self.lib.lark_score_chats(self.handle, jsons, n, out))
        return list(out)

    def token_stats(self, chat):
        """Per-token statistics of one chat's scored span ([] when it is skipped)."""
        span = Span()
        js = json.dumps(chat).encode()
        rc = self.lib.lark_tokenize_chat(self.handle, js, None, 0, C.byref(span))
        if rc == LARK_OK and span.skipped:
            return []
        if rc != LARK_ERR_BUFFER_TOO_SMALL:
            self._check(rc)
        ids = (C.c_uint32 * span.len)()
        self._check(self.lib.lark_tokenize_chat(self.handle, js, ids, span.len, C.byref(span)))
        n = span.score_to - span.score_from
        per = (TokenStats * n)()
        stats = TrajectoryStats()
        self._check(self.lib.lark_score_ids(self.handle, ids, span.score_to, span.score_from, C.byref(stats),
                                            per, n))
        return [{f: num(getattr(t, f)) for f, _ in TokenStats._fields_} for t in per]


def problem_weights(lib, stats, budget, weighting="chi2", temperature=0.0):
    """(ĝ, weights) for one problem's statistics."""
    k = len(stats)
    arr = (TrajectoryStats * k)(*stats)
    g, w = (C.c_double * k)(), (C.c_double * k)()
    rc = lib.lark_problem_weights(arr, k, budget, LARK_WEIGHT[weighting], temperature, g, w)
    if rc != LARK_OK:
        raise LarkError(rc, lib.lark_last_error().decode())
    return list(g), list(w)


def num(x):
    return None if math.isnan(x) or math.isinf(x) else x


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", help="path to liblark.so (default: $LARK_LIB, then target/{release,debug})")
    ap.add_argument("--model", required=True)
    ap.add_argument("--pool", required=True, help="LARK pool JSONL (problem_id, candidate_id, messages)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--budget", type=int, default=3)
    ap.add_argument("--max-len", type=int, default=0)
    ap.add_argument("--weighting", default="chi2", choices=sorted(LARK_WEIGHT))
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--tokens", type=int, default=0, help="print this many per-token stats of the first chat")
    a = ap.parse_args()

    lib = load(a.lib)
    records = [json.loads(line) for line in open(a.pool, encoding="utf-8") if line.strip()]
    order, groups = [], {}
    for r in records:
        if r["problem_id"] not in groups:
            order.append(r["problem_id"])
            groups[r["problem_id"]] = []
        groups[r["problem_id"]].append(r)
    records = [r for pid in order for r in groups[pid]]

    with Model(lib, a.model, a.device, max_len=a.max_len) as model:
        print(f"liblark {lib.lark_version().decode()} on {model.device()}", file=sys.stderr)
        stats = model.score_chats([r["messages"] for r in records])
        if a.tokens:
            for t in model.token_stats(records[0]["messages"])[: a.tokens]:
                print(json.dumps(t), file=sys.stderr)
    at = 0
    for pid in order:
        k = len(groups[pid])
        g, w = problem_weights(lib, stats[at:at + k], a.budget, a.weighting, a.temperature)
        for r, s, gi, wi in zip(groups[pid], stats[at:at + k], g, w):
            row = {"problem_id": r["problem_id"], "candidate_id": r["candidate_id"],
                   "skipped": s.skip_reason.decode() if s.skipped else None,
                   "n_tokens": s.n_tokens if not s.skipped else None, "truncated": bool(s.truncated)}
            row.update({f: num(getattr(s, f)) for f in STAT_FIELDS})
            row.update({"g_hat": num(gi), "weight": wi})
            print(json.dumps(row))
        at += k


if __name__ == "__main__":
    main()
