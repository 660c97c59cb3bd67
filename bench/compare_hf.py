#!/usr/bin/env python3
"""HF-transformers baselines for `lark bench`, on the GPU machine's own python3 (torch + transformers).

Two baselines of ../shared/GPU.md, on random weights of the preset's exact shape and the same lengths lark uses:
  authors : the LARK authors' scoring loop — batch 1, bf16 model, fp32 logits of the whole sequence,
            log-softmax NLL, top-50 renormalised Brier (their score_lark.py).
  batched : equal-length batches (B×T), sdpa attention, the loss computed over 4096-token chunks of the
            final hidden states (fp32 log-softmax + Σπ² per chunk).
Prints one JSON line per method: tokens/s, seconds per trajectory, peak GPU memory.
"""
import argparse, json, time
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

RSR_LENGTHS = [12078, 12571, 2552, 8798, 9070, 10887, 10993, 3823, 3643, 10474, 13146]

PRESETS = {
    "qwen2.5-1.5b": dict(cls=Qwen2Config, vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, rope_theta=1e6,
                         tie_word_embeddings=True),
    "qwen2.5-7b": dict(cls=Qwen2Config, vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                       num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, rope_theta=1e6,
                       tie_word_embeddings=False),
    "llama-3.2-3b": dict(cls=LlamaConfig, vocab_size=128256, hidden_size=3072, intermediate_size=8192,
                         num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8, head_dim=128,
                         rope_theta=5e5, tie_word_embeddings=True,
                         rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                           high_freq_factor=4.0, original_max_position_embeddings=8192)),
    "smollm2": dict(cls=LlamaConfig, vocab_size=49152, hidden_size=576, intermediate_size=1536,
                    num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, rope_theta=1e5,
                    tie_word_embeddings=True),
}


def lengths_for(spec, tokens):
    pattern = [l for l in RSR_LENGTHS for _ in range(3)] if spec == "rsr" else [int(spec.split(":")[1])]
    out, total = [], 0
    while total < tokens:
        for l in pattern:
            if total >= tokens:
                break
            l = max(2, min(l, tokens - total))
            out.append(l)
            total += l
    return out


def build(preset):
    p = dict(PRESETS[preset])
    cls = p.pop("cls")
    cfg = cls(**p, max_position_embeddings=32768, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    return model.eval()


@torch.no_grad()
def authors_loop(model, seqs):
    for ids in seqs:
        logits = model(ids[None]).logits[0, :-1].float()
        gold = ids[1:]
        lp = torch.log_softmax(logits, dim=-1)
        nll = -lp.gather(-1, gold[:, None]).mean()
        top, idx = logits.topk(50, dim=-1)
        p = torch.softmax(top, dim=-1)
        p_true = (p * (idx == gold[:, None])).sum(-1)
        brier = (1 - 2 * p_true + (p * p).sum(-1)).mean()
        (nll + brier).item()


@torch.no_grad()
def batched(model, seqs, chunk=4096):
    by_len = {}
    for s in seqs:
        by_len.setdefault(len(s), []).append(s)
    for length, group in by_len.items():
        bs = max(1, 16384 // length)
        for i in range(0, len(group), bs):
            ids = torch.stack(group[i:i + bs])
            h = model.model(ids).last_hidden_state[:, :-1].reshape(-1, model.config.hidden_size)
            gold = ids[:, 1:].reshape(-1)
            acc = 0.0
            for j in range(0, h.shape[0], chunk):
                logits = model.lm_head(h[j:j + chunk]).float()
                lp = torch.log_softmax(logits, -1)
                acc += (-lp.gather(-1, gold[j:j + chunk, None])).sum() + lp.exp().square().sum()
            float(acc)


def timed(fn, model, seqs):
    fn(model, seqs[:1])  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t = time.time()
    fn(model, seqs)
    torch.cuda.synchronize()
    return time.time() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="qwen2.5-1.5b")
    ap.add_argument("--lengths", default="rsr")
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--methods", default="authors,batched")
    a = ap.parse_args()
    model = build(a.preset)
    g = torch.Generator(device="cuda").manual_seed(42)
    seqs = [torch.randint(0, model.config.vocab_size, (l,), device="cuda", generator=g)
            for l in lengths_for(a.lengths, a.tokens)]
    tokens = sum(len(s) for s in seqs)
    for m in a.methods.split(","):
        dt = timed({"authors": authors_loop, "batched": batched}[m], model, seqs)
        print(json.dumps({"baseline": m, "preset": a.preset, "lengths": a.lengths, "sequences": len(seqs),
                          "tokens": tokens, "seconds": dt, "tokens_per_s": tokens / dt,
                          "s_per_trajectory": dt / len(seqs),
                          "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                          "device": torch.cuda.get_device_name()}), flush=True)


if __name__ == "__main__":
    main()
