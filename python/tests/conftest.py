"""Fixtures of the Python package's tests (run by scripts/test.sh against the installed wheel).

Everything read comes from the repository or from scripts/fetch-fixtures.sh (as tests/common/ does for the
Rust tests): the student is a random-weight Llama with SmolLM2's tokenizer, written into a temporary directory.
The `lark` binary (LARK_BIN) and the C library (LARK_LIB) are those scripts/test.sh built; without them the
tests that compare against them fail, saying what to set.
"""

import os
import subprocess
from pathlib import Path

import pytest

import lark_select

REPO = Path(__file__).resolve().parents[2]


def _need_env(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run these tests through scripts/test.sh (or set it to the built file)")
    p = Path(value)
    if not p.exists():
        pytest.fail(f"{name}={p} does not exist")
    return p


@pytest.fixture(scope="session")
def lark_bin() -> Path:
    return _need_env("LARK_BIN")


@pytest.fixture(scope="session")
def lark_lib() -> Path:
    return _need_env("LARK_LIB")


@pytest.fixture(scope="session")
def fixtures(lark_bin) -> dict:
    out = subprocess.run(
        ["bash", str(REPO / "scripts/fetch-fixtures.sh")],
        env={**os.environ, "LARK_BIN": str(lark_bin)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        check=True,
        text=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="session")
def student(tmp_path_factory, fixtures) -> Path:
    d = tmp_path_factory.mktemp("student")
    lark_select._native._write_test_student(str(d), fixtures["SMOLLM2_DIR"])
    return d


@pytest.fixture(scope="session")
def pool_path() -> Path:
    return REPO / "examples/pool.jsonl"


@pytest.fixture(scope="session")
def small_pool(tmp_path_factory, pool_path) -> Path:
    """The example pool cut to its first two candidates per problem (12 problems)."""
    import json

    keep = [l for l in pool_path.read_text().splitlines() if l.strip() and json.loads(l)["candidate_id"] < 2]
    p = tmp_path_factory.mktemp("small") / "pool.jsonl"
    p.write_text("\n".join(keep) + "\n")
    return p


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory, lark_bin, student, pool_path) -> Path:
    """`lark run --device cpu` on the example pool: the reference every number here is compared with."""
    out = tmp_path_factory.mktemp("cli-run")
    subprocess.run(
        [str(lark_bin), "run", "--model", str(student), "--pool", str(pool_path), "--out", str(out),
         "--device", "cpu", "--no-report"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return out
