#!/usr/bin/env bash
# Validate the Kubernetes manifests of examples/cluster/ against the Kubernetes API's JSON schemas, strictly
# (an unknown or misspelt field is an error), with kubernetes-validate from PyPI (pinned, with its dependencies,
# in a virtualenv cached under ${LARK_CACHE:-~/.cache/lark}). Checked against two API versions: the oldest that
# has every field the manifests use (backoffLimitPerIndex: 1.29) and the validator's newest.
# A self-check first: a copy with a misspelt field must be rejected, so a validator that checks nothing fails here.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${LARK_CACHE:-$HOME/.cache/lark}"
venv="$cache/k8s-validate-venv"
pins=(kubernetes-validate==1.34.1 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
      rpds-py==2026.9.1 attrs==26.1.0 PyYAML==6.0.4 packaging==26.4 importlib_resources==7.1.0
      typing_extensions==4.16.0)
versions=(1.29 1.34)
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q '1\.34\.1'; then
    echo "validate-k8s: installing ${pins[0]} into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "${pins[@]}"
fi
kv="$venv/bin/kubernetes-validate"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
manifests=("$repo"/examples/cluster/*.yaml)
sed 's/completionMode:/completionMod:/' "${manifests[0]}" >"$tmp/misspelt.yaml"
if "$kv" --strict --quiet "$tmp/misspelt.yaml" >/dev/null 2>&1; then
    echo "validate-k8s: FAILED: the validator accepted a manifest with a misspelt field" >&2
    exit 1
fi
for v in "${versions[@]}"; do
    "$kv" --strict --kubernetes-version "$v" "${manifests[@]}" >&2 || {
        echo "validate-k8s: FAILED against Kubernetes $v" >&2
        exit 1
    }
done
echo "validate-k8s: ${#manifests[@]} manifest(s) valid against Kubernetes ${versions[*]} (strict)" >&2
