#!/usr/bin/env python3
"""Write tests/fixtures/gguf_smollm2.json: what HF transformers and gguf-py make of the SmolLM2 GGUF.

Run by hand (not in CI) with a Python that has torch, transformers, gguf and numpy (the golden venv):

    /root/.cache/lark-golden-venv/bin/python scripts/make_gguf_fixtures.py \
        --gguf ~/.cache/lark/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --out tests/fixtures/gguf_smollm2.json

The Rust test (tests/gguf.rs) checks `lark convert-gguf`'s output against it:
- `tokens`: ChatML-formatted math conversations rendered by transformers' `apply_chat_template` and tokenised by
  `AutoTokenizer.from_pretrained(dir, gguf_file=...)` (`tokenizer(text)["input_ids"]`), plus a few raw strings;
- `dequant`: gguf-py's `dequantize` of some GGUF tensors, in file element order (before any permutation);
- `hf_weights`: the tensors transformers' GGUF loader produces (`load_gguf_checkpoint`, which dequantises and
  reverse-permutes Q/K), for the HF names our converter writes.
Each tensor is summarised by its shape, the float64 sum, a position-weighted float64 sum
(sum of x[i] * ((i % 1009) + 1) / 1009, which catches permuted rows) and 16 sampled values (exact float32).
"""

import argparse
import importlib.metadata
import json
import os

import numpy as np

CONVERSATIONS = [
    [
        {"role": "system", "content": "You are a careful math tutor. Reason step by step."},
        {"role": "user", "content": "Find all real x with x^2 - 5x + 6 = 0."},
        {
            "role": "assistant",
            "content": "We factor the quadratic: x^2 - 5x + 6 = (x - 2)(x - 3).\n\n"
            "A product is zero exactly when one factor is zero, so x = 2 or x = 3.\n\n"
            "Check: 2^2 - 5*2 + 6 = 4 - 10 + 6 = 0 ✓ and 3^2 - 15 + 6 = 0 ✓.\n\n**Answer:** x ∈ {2, 3}.",
        },
    ],
    [
        {"role": "user", "content": "What is the sum of the first 100 positive integers?"},
        {
            "role": "assistant",
            "content": "Pair the terms: (1 + 100) + (2 + 99) + … + (50 + 51).\n"
            "There are 50 pairs, each summing to 101, so the total is 50 × 101 = 5050.\n\n"
            "Equivalently, $\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}$ with $n = 100$ gives $\\frac{100 \\cdot 101}{2} = 5050$.",
        },
    ],
    [
        {"role": "system", "content": "Solve the problem. Put the final answer in \\boxed{}."},
        {
            "role": "user",
            "content": "Let $f(x) = 3x^3 - 2x + 1$. Compute $f'(2)$ and $\\int_0^1 f(x)\\,dx$.",
        },
        {
            "role": "assistant",
            "content": "<think>\nDifferentiate term by term: f'(x) = 9x^2 - 2, so f'(2) = 36 - 2 = 34.\n"
            "For the integral: ∫₀¹ (3x³ − 2x + 1) dx = [3x⁴/4 − x² + x]₀¹ = 3/4 − 1 + 1 = 0.75.\n</think>\n\n"
            "$f'(2) = 34$ and $\\int_0^1 f(x)\\,dx = \\tfrac{3}{4}$, so the answers are \\boxed{34} and \\boxed{0.75}.\n"
            "    (indented line)\n\n\n\ttab-indented, then trailing spaces   ",
        },
    ],
    [
        {"role": "user", "content": "Is 2^31 - 1 = 2147483647 prime? Answer briefly.\n\n"},
        {
            "role": "assistant",
            "content": "Yes. 2147483647 is the Mersenne prime M31, proven prime by Euler in 1772; "
            "trial division by primes p ≡ 1 (mod 62) up to √2147483647 ≈ 46341 finds no factor.",
        },
    ],
]

RAW_TEXTS = [
    "Hello world",
    "  leading spaces and    runs of spaces\n\n\nnewlines\r\nCRLF\ttab",
    "x<|im_end|>y<|endoftext|>z<|im_start|>",
    "Ünïcödé — “quotes” 数学 🙂 ½ ≤ ∞",
    "don't I'LL we've 1234567890 3.14159 -1e-5",
    "",
]


def summarise(x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    flat = x.reshape(-1).astype(np.float64)
    n = flat.size
    weights = ((np.arange(n) % 1009) + 1) / 1009.0
    idx = [(k * 2654435761) % n for k in range(16)]
    return {
        "shape": list(x.shape),
        "sum": float(flat.sum()),
        "weighted_sum": float((flat * weights).sum()),
        "samples": [[int(i), float(x.reshape(-1)[i])] for i in idx],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import gguf
    import torch  # noqa: F401  (transformers' GGUF loader needs it)
    import transformers
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    gguf_dir, gguf_name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    tokens = []
    for conv in CONVERSATIONS:
        for messages, gen in [(conv, False), (conv[:-1], True)]:
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            tokens.append({"text": text, "ids": tok(text)["input_ids"]})
    for text in RAW_TEXTS:
        tokens.append({"text": text, "ids": tok(text)["input_ids"]})

    reader = gguf.GGUFReader(args.gguf)
    dequant = {}
    for t in reader.tensors:
        if t.name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_norm.weight",
                      "blk.7.ffn_down.weight"):
            values = gguf.dequantize(t.data, t.tensor_type)
            dequant[t.name] = {"type": t.tensor_type.name, **summarise(values)}

    # Without accelerate, from_pretrained refuses GGUF; load_gguf_checkpoint is the loader it calls.
    config = load_gguf_checkpoint(args.gguf, return_tensors=False)["config"]
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items() if k != "model_type"}))
    loaded = load_gguf_checkpoint(args.gguf, return_tensors=True, model_to_load=model)["tensors"]
    hf_weights = {}
    for name in [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.29.self_attn.q_proj.weight",
        "model.layers.29.self_attn.k_proj.weight",
    ]:
        value = loaded[name]
        value = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        hf_weights[name] = summarise(value)

    out = {
        "generator": "scripts/make_gguf_fixtures.py",
        "versions": {m: importlib.metadata.version(m) for m in ("transformers", "tokenizers", "gguf", "torch", "numpy")},
        "gguf_file": gguf_name,
        "tokens": tokens,
        "dequant": dequant,
        "hf_weights": hf_weights,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {args.out}: {len(tokens)} token cases, {len(dequant)} dequantised, {len(hf_weights)} HF tensors")


if __name__ == "__main__":
    main()
