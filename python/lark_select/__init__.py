"""lark from Python: score teacher trajectories with a student, select and weight them, export for TRL.

The numbers are the CLI's: every call below runs the same library code as ``lark score`` / ``lark select``
(the native module ``lark_select._native`` is a thin face over it), so a row here is byte for byte a line of
the ``scores.jsonl`` that ``lark score`` writes for the same pool and options.

Two ways to score:

- :class:`Student` keeps a model open and scores records in memory (a list of dicts, a ``datasets.Dataset``,
  a list of chats), returning the ``scores.jsonl`` rows; :meth:`Student.token_stats` gives per-token arrays.
- :func:`score_pool` runs a whole ``lark score`` job into an output directory: progress, a journal of
  finished chunks, ``resume=True`` after a crash or Ctrl-C, shards.

The package is named ``lark_select`` (distribution ``lark-select``) because ``lark`` on PyPI is an unrelated
parser that vLLM and others depend on.

While scoring, the GIL is released. Ctrl-C stops a job within a batch and raises ``KeyboardInterrupt``; a
:func:`score_pool` job then keeps its journal and never leaves a ``run.json`` (what marks a run complete).
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from . import _native
from ._native import BackendError, InputError, LarkError, ModelError, UnsupportedError

__version__: str = _native.__version__

__all__ = [
    "Student",
    "TokenStats",
    "Table",
    "score_pool",
    "read_scores",
    "g_hat",
    "weights",
    "select",
    "train_records",
    "write_selection",
    "to_trl",
    "LarkError",
    "InputError",
    "ModelError",
    "UnsupportedError",
    "BackendError",
]

PathLike = Union[str, "os.PathLike[str]"]
Progress = Union[bool, None, Callable[[Dict[str, Any]], Any]]


# ---- JSON across the boundary ---------------------------------------------------------------------------


def _plain(x: Any) -> Any:
    """A JSON-ready copy: NaN and ±inf become None (lark writes missing numbers as null), numpy scalars and
    arrays become Python numbers and lists, tuples become lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    tolist = getattr(x, "tolist", None)  # numpy scalars and arrays, pyarrow scalars
    if callable(tolist):
        return _plain(tolist())
    as_py = getattr(x, "as_py", None)
    if callable(as_py):
        return _plain(as_py())
    raise InputError(f"cannot pass a {type(x).__name__} to lark (expected JSON-like data)")


def _dumps(x: Any) -> str:
    return json.dumps(_plain(x), ensure_ascii=False)


def _is_chat(x: Any) -> bool:
    """A chat: a list of message dicts (rather than a record with `messages`)."""
    return isinstance(x, (list, tuple)) and all(isinstance(m, Mapping) for m in x)


def _record_texts(records: Any) -> List[str]:
    """Records as JSON texts, one pool record each. A bare chat (a list of messages) becomes a record of
    problem 0 with its position as candidate_id; a record without ids gets the same (so a list of chats is one
    problem's candidates, which is what ĝ compares)."""
    if isinstance(records, (str, os.PathLike)):
        raise InputError(
            f"{os.fspath(records)}: Student.score takes records in memory; score a pool file or directory with "
            "lark_select.score_pool(model, pool, out)"
        )
    out = []
    for i, r in enumerate(records):
        if _is_chat(r):
            r = {"problem_id": 0, "candidate_id": i, "messages": list(r)}
        elif isinstance(r, Mapping):
            if "problem_id" not in r and "candidate_id" not in r:
                r = {"problem_id": 0, "candidate_id": i, **r}
        else:
            raise InputError(f"records (element {i}): expected a record (dict) or a chat (list of messages), "
                             f"got {type(r).__name__}")
        out.append(_dumps(r))
    return out


# ---- Results ---------------------------------------------------------------------------------------------


class Table(list):
    """Rows of ``scores.jsonl`` as dicts (missing numbers are None), in the file's order. ``jsonl()`` gives
    the exact text ``lark score`` writes; ``to_pandas()`` / ``to_arrow()`` convert when those are installed."""

    def __init__(self, texts: Sequence[str], rejects: Sequence[Dict[str, Any]] = ()):
        super().__init__(json.loads(t) for t in texts)
        self._texts = list(texts)
        #: Records of the input that were invalid and skipped (``skip_invalid=True``), as ``rejects.jsonl``.
        self.rejects: List[Dict[str, Any]] = list(rejects)

    def jsonl(self) -> str:
        """The rows as ``scores.jsonl`` holds them, one JSON object a line."""
        return "".join(t + "\n" for t in self._texts)

    def to_pandas(self):  # -> pandas.DataFrame
        import pandas as pd

        return pd.DataFrame(list(self))

    def to_arrow(self):  # -> pyarrow.Table
        import pyarrow as pa

        return pa.Table.from_pylist(list(self))


@dataclass(frozen=True)
class TokenStats:
    """One chat's scored tokens (every scored assistant turn, in order). Arrays are numpy arrays over the
    native buffers (read-only, no copy) when numpy is installed, else ``array.array``."""

    logprob: Any  # float32: log π(y_t)
    sum_p2: Any  # float32: Σ_v π_t(v)²
    entropy: Any  # float32: H(π_t)
    rank: Any  # uint32: 1 + #{v : z_v > z_y}
    lse: Any  # float32: log Σ_v exp z_v
    truncated: bool
    n_turns: int

    def __len__(self) -> int:
        return len(self.logprob)


def _array(buf: bytes, kind: str):
    try:
        import numpy as np

        return np.frombuffer(buf, dtype="<f4" if kind == "f" else "<u4")
    except ImportError:
        import array

        a = array.array("f" if kind == "f" else "I")
        a.frombytes(buf)
        if sys.byteorder != "little":
            a.byteswap()
        return a


# ---- Scoring ---------------------------------------------------------------------------------------------


class Student:
    """A student model opened for scoring.

    Args:
        model: model directory (config.json, safetensors, tokenizer.json, chat template), as ``lark --model``.
        device: ``"auto"`` (CUDA when usable, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``None`` (default): each device's own, bf16 activations on a GPU and the f32 reference on the
            CPU; ``"fp32"``; or ``"bf16"``, which on the CPU opts into bf16 linear layers (AMX where available).
        max_len: truncate token sequences from the right at this length.
        span: ``"turn"`` (whole assistant turn, LARK authors) or ``"content"`` (RSR authors).
        turns: ``"all"`` assistant turns of a conversation, or the ``"last"`` one.
        brier: ``"exact"`` (Σπ² over the vocabulary) or ``"topk:K"``.
        rank_clip: RSR's rank clip r_max.

    Raises:
        ModelError: the directory cannot be opened as a model; InputError: a bad option.
    """

    def __init__(
        self,
        model: PathLike,
        *,
        device: str = "auto",
        precision: Optional[str] = None,
        max_len: int = 32768,
        span: str = "turn",
        turns: str = "all",
        brier: str = "exact",
        rank_clip: int = 100,
    ):
        self._native = _native.NativeStudent(
            os.fspath(model), device, precision, int(max_len), span, turns, brier, int(rank_clip)
        )

    @property
    def device(self) -> str:
        """The device it runs on, e.g. ``"cpu (16 threads)"``."""
        return self._native.device

    @property
    def settings(self) -> Dict[str, Any]:
        """The model directory, device and scoring settings."""
        return json.loads(self._native.settings)

    def __repr__(self) -> str:
        s = self.settings
        return f"Student({s['model']!r}, device={s['device']!r}, span={s['span']!r}, turns={s['turns']!r})"

    def score(
        self,
        records: Iterable[Any],
        *,
        format: str = "auto",
        skip_invalid: bool = False,
        scorers: str = "default",
        local_m: int = 4,
        seed: int = 42,
        per_token: bool = False,
        progress: Progress = None,
    ) -> Table:
        """Score records as ``lark score`` scores a pool: the rows of ``scores.jsonl`` (ĝ and every baseline
        per problem).

        ``records``: pool records (dicts with ``problem_id``, ``candidate_id``, ``teacher``, ``messages`` or
        ShareGPT ``conversations``, ``tools``), a ``datasets.Dataset`` of them, or chats (lists of messages:
        one problem's candidates). ``per_token=True`` adds each row's :class:`TokenStats` as ``row["tokens"]``
        (a second pass over the scored rows). ``progress``: True draws the CLI's progress on stderr, a callable
        receives a dict after every batch.
        """
        texts = _record_texts(records)
        rows, rejects = self._native.score_records(
            texts, "records", format, bool(skip_invalid), scorers, int(local_m), int(seed), progress
        )
        table = Table(rows, [json.loads(r) for r in rejects])
        if per_token:
            by_id = {}
            for t in texts:
                r = json.loads(t)
                by_id[(r.get("problem_id"), r.get("candidate_id"))] = r
            keys = [(row["problem_id"], row["candidate_id"]) for row in table]
            stats = self.token_stats([by_id[k] for k in keys])
            for row, st in zip(table, stats):
                row["tokens"] = st
        return table

    def token_stats(self, chats: Iterable[Any]) -> List[Optional[TokenStats]]:
        """Per-token statistics of each chat (a list of messages, or a record) over its scored turns; None for
        a chat with nothing to score. The numbers are those ``lark_score_ids`` returns for the same tokens."""
        items = []
        for c in chats:
            items.append(_dumps(list(c) if _is_chat(c) else c))
        out: List[Optional[TokenStats]] = []
        for d in self._native.token_stats(items):
            if d["skipped"] is not None:
                out.append(None)
                continue
            out.append(
                TokenStats(
                    logprob=_array(d["logprob"], "f"),
                    sum_p2=_array(d["sum_p2"], "f"),
                    entropy=_array(d["entropy"], "f"),
                    rank=_array(d["rank"], "u"),
                    lse=_array(d["lse"], "f"),
                    truncated=bool(d["truncated"]),
                    n_turns=int(d["n_turns"]),
                )
            )
        return out


def _pool_paths(pool: Any, out: Path) -> List[str]:
    """Paths of a pool: as given, or records in memory (a Dataset, an iterable of dicts) written once to
    OUT/input.jsonl (deterministically, so that the same records resume)."""
    if isinstance(pool, (str, os.PathLike)):
        return [os.fspath(pool)]
    if isinstance(pool, (list, tuple)) and pool and all(isinstance(p, (str, os.PathLike)) for p in pool):
        return [os.fspath(p) for p in pool]
    texts = _record_texts(pool)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "input.jsonl"
    data = "".join(t + "\n" for t in texts).encode()
    if not path.exists() or path.read_bytes() != data:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return [str(path)]


def score_pool(
    model: PathLike,
    pool: Any,
    out: PathLike,
    *,
    resume: bool = False,
    progress: Progress = True,
    **options: Any,
) -> Table:
    """Run ``lark score`` on a pool into ``out`` and return its rows.

    ``pool``: a JSONL / ShareGPT file, a Parquet file or directory of shards, an RSR_data directory, a list of
    such paths (one pool), or records in memory (a ``datasets.Dataset``, an iterable of dicts), which are
    written to ``OUT/input.jsonl`` first. ``options`` are ``lark score``'s, by their long names with ``_``:
    ``device="cpu"``, ``max_len=8192``, ``span="content"``, ``turns="last"``, ``brier="topk:50"``,
    ``scorers="all"``, ``shard="0/4"``, ``skip_invalid=True``, ``threads=8``, ... The files are the CLI's
    (``scores.jsonl``, ``scores.json``, ``run.json`` last); ``resume=True`` continues an interrupted job.

    Raises KeyboardInterrupt on Ctrl-C (the journal is kept: rerun with ``resume=True``), InputError for bad
    input (the CLI's message, naming file, line and field), ModelError, BackendError.
    """
    out_path = Path(out)
    job = {"model": os.fspath(model), "pool": _pool_paths(pool, out_path), "out": str(out_path), "resume": resume}
    for k, v in options.items():
        if k in job:
            raise InputError(f"job: {k} given twice")
        job[k] = _plain(v)
    _native.score_job(json.dumps(job), progress)
    return read_scores(out_path / "scores.jsonl")


def read_scores(path: PathLike) -> Table:
    """A ``scores.jsonl`` (or ``gstar.jsonl``) read back as a :class:`Table`."""
    with open(path, encoding="utf-8") as f:
        return Table([line.rstrip("\n") for line in f if line.strip()])


# ---- Pure functions --------------------------------------------------------------------------------------


def g_hat(l: Sequence[float], brier_mean: Sequence[float]) -> List[float]:
    """LARK's ĝ_k for one problem (paper Eq. 7, exact form) from each candidate's mean NLL ℓ_k (``L``) and mean
    Brier (``brier_mean``): NaN for all when Σℓ is 0."""
    return _native.g_hat([float(x) for x in l], [float(x) for x in brier_mean])


def weights(keys: Sequence[float], budget: int = 3, method: str = "chi2",
            temperature: Optional[float] = None) -> List[float]:
    """One problem's training weights from its keys (higher is better; NaN never selected): ``chi2`` (LARK's
    χ²-B), ``uniform``, ``proportional`` or ``softmax`` (with ``temperature``). 0 for the unselected."""
    return _native.weights([float("nan") if k is None else float(k) for k in keys], int(budget), method,
                           temperature)


def select(rows: Iterable[Mapping[str, Any]], *, by: str = "g_hat", budget: int = 3, weighting: str = "chi2",
           temperature: Optional[float] = None) -> List[Dict[str, Any]]:
    """``lark select`` over ``scores.jsonl`` rows (a :class:`Table`, or dicts): per problem, every candidate
    ranked by ``by`` and the top ``budget`` weighted; the lines of ``selection.jsonl`` as dicts."""
    texts = [_dumps({k: v for k, v in r.items() if k != "tokens"}) for r in rows]
    return [json.loads(s) for s in _native.select(texts, by, int(budget), weighting, temperature)]


def train_records(selections: Sequence[Mapping[str, Any]], records: Iterable[Any], *, format: str = "auto",
                  drop_zero_weight: bool = False) -> List[Dict[str, Any]]:
    """The lines of ``train.jsonl`` for selections over records in memory: each selected trajectory's whole
    conversation (``messages``, ``tools``) and ``meta`` with its ``train_weight``."""
    sel = [_dumps(s) for s in selections]
    lines = _native.train_lines(sel, _record_texts(records), format, bool(drop_zero_weight))
    return [json.loads(t) for t in lines]


def write_selection(selections: Sequence[Mapping[str, Any]], pool: Any, out: PathLike, *, format: str = "auto",
                    drop_zero_weight: bool = False) -> int:
    """Write ``selection.jsonl`` and ``train.jsonl`` into ``out`` as ``lark select`` does, reading the
    selected records from the pool at ``pool`` (a path or a list of paths); returns the training lines."""
    paths = [os.fspath(pool)] if isinstance(pool, (str, os.PathLike)) else [os.fspath(p) for p in pool]
    return _native.write_selection([_dumps(s) for s in selections], paths, format, os.fspath(out),
                                   bool(drop_zero_weight))


def to_trl(selections: Sequence[Mapping[str, Any]], records: Any, *, path: Optional[PathLike] = None,
           drop_zero_weight: bool = False, as_dataset: Optional[bool] = None):
    """The weighted SFT set for TRL: one example per selected trajectory with ``messages`` (and ``tools``),
    a ``train_weight`` column and the selection's metadata (``problem_id``, ``candidate_id``, ``teacher``,
    ``score``). ``records``: the scored records in memory, or the pool's path(s). Returns a
    ``datasets.Dataset`` when datasets is installed (``as_dataset=False``: a list of dicts); ``path`` also
    writes it as JSONL (TRL's ``load_dataset("json", ...)`` reads it)."""
    if isinstance(records, (str, os.PathLike)) or (
        isinstance(records, (list, tuple)) and records and all(isinstance(p, (str, os.PathLike)) for p in records)
    ):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            write_selection(selections, records, d, drop_zero_weight=drop_zero_weight)
            with open(os.path.join(d, "train.jsonl"), encoding="utf-8") as f:
                lines = [json.loads(x) for x in f if x.strip()]
    else:
        lines = train_records(selections, records, drop_zero_weight=drop_zero_weight)
    rows = []
    for line in lines:
        meta = line["meta"]
        row = {"messages": line["messages"]}
        if "tools" in line:
            row["tools"] = line["tools"]
        row.update(
            train_weight=meta["train_weight"],
            problem_id=meta["problem_id"],
            candidate_id=meta["candidate_id"],
            teacher=meta["teacher"],
            score=meta["score"],
            method=meta["method"],
            by=meta["by"],
        )
        rows.append(row)
    if path is not None:
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    if as_dataset is False:
        return rows
    try:
        import datasets
    except ImportError:
        if as_dataset:
            raise
        return rows
    return datasets.Dataset.from_list(rows)
