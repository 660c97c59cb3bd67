#!/usr/bin/env python3
"""Write tests/fixtures/conv_parity.json: what HF transformers renders, tokenises and (for SmolLM2) computes for
multi-turn and agentic conversations, checked by tests/conv_parity.rs.

Run by hand (not in CI) with the golden venv (transformers, torch, gguf):

    ~/.cache/lark/golden-venv/bin/python scripts/make_conv_parity.py \
        --tokenizer qwen3=DIR --tokenizer llama3=DIR --gguf smollm2=FILE.gguf

The directories are those scripts/fetch-fixtures.sh reports (QWEN3_TOKENIZER_DIR, LLAMA3_TOKENIZER_DIR,
SMOLLM2_GGUF). `llama31` is the Llama 3 tokenizer with tests/fixtures/templates/llama31_tools.jinja as its chat
template (a Llama 3.1-style tool-calling template written for the tests).

Per conversation and tokenizer the fixture records:
- `apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=False)` of the whole
  conversation (`full_text`) and, with the generation prompt, of everything before the last assistant turn
  (`prompt_text`);
- for each convention, the token ids and the scored ranges lark must find, from HF's ids with the definitions
  of the issue (README "Multi-turn and agentic trajectories"):
  * `turn`: ids = `tokenizer(full_text)`; every assistant turn but the last: from after its header to after its
    end marker; the last: [len(tokenizer(prompt_text)), len(ids)) (the LARK authors' span), dropped when shorter
    than 2 tokens;
  * `content`: ids = `apply_chat_template(tokenize=True)`; every turn strictly between header and end marker,
    empty ones dropped;
  * `--turns last`: the single-turn reference spans over the same ids (the last range);
  with `max_len` (tokenizer truncation), ranges cut at the truncated length;
- `smolgen`: SmolLM2's tokenizer with tests/fixtures/templates/chatml_generation.jinja, whose `{% generation %}`
  blocks define the turns: the expected ranges are the runs of HF's `return_assistant_tokens_mask`;
- for SmolLM2 (the real 135M model, from its GGUF file, float32, eager attention): log p(gold) at every scored
  position, so the test compares lark's CPU numbers position by position.
"""

import argparse
import hashlib
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MARKERS = {
    "chatml": ("<|im_start|>assistant\n", "<|im_end|>"),
    "llama3": ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_places",
            "description": "Search places (cafés, restaurants) by free text — unicode welcome: 東京, Zürich.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for"},
                    "filters": {
                        "type": "object",
                        "properties": {
                            "open_after": {"type": "string"},
                            "tags": {"type": "array", "items": {"type": "string"}},
                            "price": {"type": "object", "properties": {"max": {"type": "integer"}}},
                        },
                    },
                    "limit": {"type": "integer", "default": 5},
                },
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_table",
            "description": "Book a table.",
            "parameters": {
                "type": "object",
                "properties": {"place_id": {"type": "string"}, "time": {"type": "string"},
                               "party": {"type": "integer"}},
                "required": ["place_id", "time"],
            },
        },
    },
]

ARGS_1 = {"query": "café ☕ 東京", "filters": {"open_after": "22:00", "tags": ["wifi", "quiet"],
                                             "price": {"max": 3, "currency": "¥", "ratio": 0.5}}, "limit": 5}
ARGS_2 = {"place_id": "p-17", "time": "22:30", "party": 2, "notes": None, "flags": [True, False, 1e-05]}


def call(name, args):
    return {"type": "function", "function": {"name": name, "arguments": args}}


def agentic(content_for_calls):
    """user → assistant (thinking, tool call) → tool → assistant (tool call) → tool → assistant (answer)."""
    c = content_for_calls
    m = [
        {"role": "system", "content": "You are a travel agent. Réponds en français si possible."},
        {"role": "user", "content": "Find me a café in 東京 open after 22:00, then book it for two."},
        {"role": "assistant", "reasoning_content": "The user wants a late café; search first.",
         "tool_calls": [call("search_places", ARGS_1)]},
        {"role": "tool", "name": "search_places", "tool_call_id": "call_1",
         "content": '{"results": [{"name": "Kissa Yoru", "id": "p-17", "rating": 4.5}]}'},
        {"role": "assistant", "reasoning_content": "Found one; book it.", "tool_calls": [call("book_table", ARGS_2)]},
        {"role": "tool", "name": "book_table", "tool_call_id": "call_2", "content": '{"ok": true, "code": "Z9-ü"}'},
        {"role": "assistant", "reasoning_content": "Booked; answer in French.",
         "content": "C'est réservé ✅ : Kissa Yoru à 22h30 (confirmation Z9-ü)."},
    ]
    for x in m:
        if x["role"] == "assistant" and "tool_calls" in x and c is not None:
            x["content"] = c
    return m


MULTI_USER = [
    {"role": "user", "content": "What is 17*23?"},
    {"role": "assistant", "content": "<think>\n17*20=340, 17*3=51.\n</think>\n\n17 × 23 = 391."},
    {"role": "user", "content": "And divided by 7?"},
    {"role": "assistant", "reasoning_content": "391/7 = 55.857…", "content": "391 / 7 ≈ 55.857."},
    {"role": "user", "content": "Thanks! (a trailing message: not scored, dropped)"},
]

ALL_EMPTY = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": ""},
    {"role": "user", "content": "again"},
    {"role": "assistant", "content": ""},
]

SMOL_AGENT = [
    {"role": "system", "content": "You are a careful assistant with a calculator tool."},
    {"role": "user", "content": "What is 6 times 7, and why is it famous?"},
    {"role": "assistant", "content": "Let me compute it: calculator(\"6*7\")"},
    {"role": "tool", "content": "42"},
    {"role": "assistant", "content": "6 × 7 = 42."},
    {"role": "user", "content": "Why is 42 famous?"},
    {"role": "assistant", "content": "It is the Answer to the Ultimate Question in The Hitchhiker's Guide."},
]


def cases():
    return {
        "qwen3": [
            ("agentic_tools", agentic(""), TOOLS, None),
            ("agentic_tools_truncated", agentic(""), TOOLS, "cut_second_turn"),
            ("multi_user_thinking", MULTI_USER, None, None),
            ("all_assistant_turns_empty", ALL_EMPTY, None, None),
        ],
        "llama31": [
            ("agentic_tools", agentic(None), TOOLS, None),
            ("multi_user", [m for m in MULTI_USER if "reasoning_content" not in m] +
             [{"role": "assistant", "content": "You're welcome."}], None, None),
        ],
        "smolgen": [
            ("agent_and_followup", SMOL_AGENT, None, None),
        ],
        "smollm2": [
            ("agent_and_followup", SMOL_AGENT, None, None),
            ("multi_user", [{k: v for k, v in m.items() if k != "reasoning_content"} for m in MULTI_USER], None, None),
        ],
    }


def locate(ids, h, e):
    """Every header .. end-marker span, empty ones kept: (content_from, content_to, end_after_marker)."""
    out, i, n = [], 0, len(ids)
    while i + len(h) <= n:
        if ids[i:i + len(h)] != h:
            i += 1
            continue
        st = j = i + len(h)
        while j + len(e) <= n and ids[j:j + len(e)] != e:
            j += 1
        if j + len(e) <= n:
            out.append((st, j, j + len(e)))
            i = j + len(e)
        else:
            out.append((st, n, n))
            i = n
    return out


def render(tok, msgs, tools, agp):
    return tok.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=agp)


def expected(tok, family, msgs, tools, mode, turns, max_len):
    trunc = dict(truncation=True, max_length=max_len) if max_len else {}
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    msgs = msgs[: last + 1]
    n_asst = sum(m["role"] == "assistant" for m in msgs)
    full_text = render(tok, msgs, tools, False)
    if mode == "turn":
        ids = tok(full_text, **trunc)["input_ids"]
        whole = tok(full_text)["input_ids"]
        prompt_len = len(tok(render(tok, msgs[:last], tools, True), **trunc)["input_ids"])
    else:
        ids = tok.apply_chat_template(msgs, tools=tools, tokenize=True, return_dict=True, **trunc)["input_ids"]
        whole = tok.apply_chat_template(msgs, tools=tools, tokenize=True, return_dict=True)["input_ids"]
    h = tok(MARKERS[family][0], add_special_tokens=False)["input_ids"]
    e = tok(MARKERS[family][1], add_special_tokens=False)["input_ids"]
    n = len(ids)
    if n_asst == 1 or turns == "last":
        if mode == "turn":
            ranges = [] if prompt_len + 1 >= n else [(prompt_len, n)]
        else:
            spans = [(a, b) for a, b, _ in locate(ids, h, e) if b > a]
            ranges = spans[-1:]
    else:
        loc = locate(whole, h, e)
        # A template that always writes the assistant header at the end (Llama 3's) leaves an empty last one.
        if len(loc) == n_asst + 1 and loc[-1][0] == loc[-1][1] == len(whole):
            loc = loc[:-1]
        assert len(loc) == n_asst, (len(loc), n_asst)
        ranges = []
        for k, (a, b, c) in enumerate(loc):
            if mode == "content":
                r = (a, b)
            elif k + 1 < len(loc):
                r = (a, c)
            elif prompt_len + 1 >= n:
                break
            else:
                r = (prompt_len, n)
            r = (min(r[0], n), min(r[1], n))
            if 1 <= r[0] < r[1]:
                ranges.append(r)
    return {"ids": ids, "turns": [list(r) for r in ranges], "skipped": not ranges}


def from_generation_mask(tok, msgs, tools, mode, turns):
    """The turns HF's return_assistant_tokens_mask marks ({% generation %} blocks): its runs of 1s."""
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    msgs = msgs[: last + 1]
    out = tok.apply_chat_template(msgs, tools=tools, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
    mask = out["assistant_masks"]
    runs, i = [], 0
    while i < len(mask):
        if mask[i]:
            j = i
            while j < len(mask) and mask[j]:
                j += 1
            runs.append([i, j])
            i = j
        else:
            i += 1
    if turns == "last":
        runs = runs[-1:]
    ids = out["input_ids"] if mode == "content" else tok(render(tok, msgs, tools, False))["input_ids"]
    assert mode == "content" or ids == out["input_ids"], "SmolLM2 adds no special tokens"
    return {"ids": ids, "turns": runs, "skipped": not runs}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--gguf", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/conv_parity.json"))
    a = ap.parse_args()
    dirs = dict(x.split("=", 1) for x in a.tokenizer)
    ggufs = dict(x.split("=", 1) for x in a.gguf)
    torch.manual_seed(0)
    toks = {
        "qwen3": (AutoTokenizer.from_pretrained(dirs["qwen3"]), "chatml", None),
        "llama31": (AutoTokenizer.from_pretrained(dirs["llama3"]), "llama3", "tests/fixtures/templates/llama31_tools.jinja"),
    }
    g = ggufs["smollm2"]
    smol_tok = AutoTokenizer.from_pretrained(os.path.dirname(g), gguf_file=os.path.basename(g))
    toks["smollm2"] = (smol_tok, "chatml", None)
    gen_tok = AutoTokenizer.from_pretrained(os.path.dirname(g), gguf_file=os.path.basename(g))
    toks["smolgen"] = (gen_tok, "chatml", "tests/fixtures/templates/chatml_generation.jinja")
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(g), gguf_file=os.path.basename(g),
                                                 dtype=torch.float32, attn_implementation="eager")
    model.eval()
    out = {"meta": {"transformers": transformers.__version__, "torch": torch.__version__,
                    "generator": "scripts/make_conv_parity.py"}, "cases": []}
    for tname, items in cases().items():
        tok, family, tmpl = toks[tname]
        if tmpl:
            text = open(os.path.join(ROOT, tmpl), encoding="utf-8").read()
            tok.chat_template = text
            out["meta"][f"{tname}_template_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        for name, msgs, tools, cut in items:
            last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
            full_text = render(tok, msgs[: last + 1], tools, False)
            prompt_text = render(tok, msgs[:last], tools, True)
            max_len = None
            if cut == "cut_second_turn":
                e = expected(tok, family, msgs, tools, "content", "all", None)
                max_len = e["turns"][1][0] + 3
            case = {"tokenizer": tname, "name": name, "messages": msgs, "tools": tools, "max_len": max_len,
                    "full_text": full_text, "prompt_text": prompt_text, "expect": {}}
            for mode in ("turn", "content"):
                for turns in ("all", "last"):
                    if tname == "smolgen":
                        ex = from_generation_mask(tok, msgs, tools, mode, turns)
                    else:
                        ex = expected(tok, family, msgs, tools, mode, turns, max_len)
                    if tname in ("smollm2", "smolgen") and not ex["skipped"]:
                        with torch.no_grad():
                            logits = model(torch.tensor([ex["ids"]], dtype=torch.long)).logits[0].double()
                        lp = torch.log_softmax(logits, dim=-1)
                        ex["logprobs"] = [float(lp[t - 1, ex["ids"][t]]) for a_, b_ in ex["turns"]
                                          for t in range(a_, b_)]
                    case["expect"][f"{mode}/{turns}"] = ex
            out["cases"].append(case)
            print(f"{tname}/{name}: " + ", ".join(f"{k}: {v['turns']}" for k, v in case["expect"].items()),
                  file=sys.stderr)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
