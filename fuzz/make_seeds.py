#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/corpus/<target>/ (a few small valid and near-valid inputs per
target; libFuzzer mutates from there). Deterministic: rerunning rewrites the same bytes. Standard library only."""
import json
import os
import random
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
rng = random.Random(7)


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def chat(pid, answer, system=True):
    m = [{"role": "user", "content": f"What is {pid} + {pid}?"}, {"role": "assistant", "content": answer}]
    return ([{"role": "system", "content": "Reason step by step."}] if system else []) + m


# ---- pool_jsonl -----------------------------------------------------------------------------------------
lines = [
    {"problem_id": 0, "candidate_id": 0, "teacher": "a", "messages": chat(0, "<think>0+0</think> It is 0.")},
    {"problem_id": 0, "candidate_id": 1, "teacher": "b", "messages": chat(0, "0", system=False)},
    {"problem_id": 7, "candidate_id": 0, "messages": chat(7, "14")},
]
put("pool_jsonl", "valid.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
extra = {"problem_id": 3, "candidate_id": 2, "teacher": "t",
         "messages": [{"role": "user", "content": "q", "name": None},
                      {"role": "assistant", "content": "a", "reasoning_content": "think"}]}
put("pool_jsonl", "bom_blank_extra.jsonl", "\ufeff" + json.dumps(extra) + "\n\n  \n" + json.dumps(lines[0]) + "\n")
put("pool_jsonl", "invalid.jsonl", "\n".join([
    json.dumps(lines[0]),
    '{"problem_id": 1, "candidate_id": ',
    '{"problem_id": "1", "candidate_id": 0, "messages": []}',
    json.dumps({"problem_id": 1, "candidate_id": 0, "messages": [{"role": "user", "content": 3}]}),
    json.dumps(lines[0]),
    "[1, 2]",
]) + "\n")

# ---- pool_rsr (byte 0: bit 0 .jsonl, bit 1 two teachers, bit 2 a stray file) -------------------------------
elems = [{"messages": chat(i, f"answer {i}")} for i in range(3)]
put("pool_rsr", "list.json", bytes([0]) + json.dumps(elems, indent=1).encode())
put("pool_rsr", "ids.json", bytes([4]) + json.dumps([{"id": "5", **elems[0]}, {"_id": 9, **elems[1]}]).encode())
put("pool_rsr", "lines.jsonl", bytes([1]) + "\n".join(json.dumps(e) for e in elems).encode() + b"\n")
half = json.dumps(elems[:1]).encode()
put("pool_rsr", "two_teachers.json", bytes([2]) + half + half)

# ---- model_config -----------------------------------------------------------------------------------------
put("model_config", "qwen2.json", json.dumps({
    "architectures": ["Qwen2ForCausalLM"], "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
    "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0, "tie_word_embeddings": True, "max_position_embeddings": 32768}))
put("model_config", "llama3_nested_rope.json", json.dumps({
    "architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 3072, "intermediate_size": 8192,
    "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128,
    "attention_bias": False, "mlp_bias": False,
    "rope_parameters": {"rope_theta": 500000.0, "factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                        "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": True}))
put("model_config", "minimal.json", json.dumps({
    "model_type": "llama", "vocab_size": 8, "hidden_size": 4, "intermediate_size": 4, "num_hidden_layers": 1,
    "num_attention_heads": 2}))

# ---- safetensors: the micro Llama of fuzz_targets/safetensors.rs ------------------------------------------
V, H, I, Q, KV = 8, 4, 4, 4, 2
specs = [("model.embed_tokens.weight", [V, H]), ("model.layers.0.input_layernorm.weight", [H]),
         ("model.layers.0.self_attn.q_proj.weight", [Q, H]), ("model.layers.0.self_attn.k_proj.weight", [KV, H]),
         ("model.layers.0.self_attn.v_proj.weight", [KV, H]), ("model.layers.0.self_attn.o_proj.weight", [H, Q]),
         ("model.layers.0.post_attention_layernorm.weight", [H]), ("model.layers.0.mlp.gate_proj.weight", [I, H]),
         ("model.layers.0.mlp.up_proj.weight", [I, H]), ("model.layers.0.mlp.down_proj.weight", [H, I]),
         ("model.norm.weight", [H])]


def f32(x):
    return struct.pack("<f", x)


def f16(x):
    return struct.pack("<e", x)


def bf16(x):
    return struct.pack("<f", x)[2:]


def safetensors(dtype, enc, size):
    header, data = {}, b""
    for name, shape in specs:
        n = 1
        for d in shape:
            n *= d
        blob = b"".join(enc(rng.uniform(-1, 1)) for _ in range(n))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


put("safetensors", "micro_f32.safetensors", safetensors("F32", f32, 4))
put("safetensors", "micro_f16.safetensors", safetensors("F16", f16, 2))
put("safetensors", "micro_bf16.safetensors", safetensors("BF16", bf16, 2))
bad = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                  "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
put("safetensors", "overlap.safetensors", struct.pack("<Q", len(bad)) + bad + bytes(16))

# ---- gguf (v3, little-endian) --------------------------------------------------------------------------------
T_U32, T_F32, T_BOOL, T_STRING, T_ARRAY, T_I32 = 4, 6, 7, 8, 9, 5
GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(kvs, tensors, alignment=32):
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, ty, val in kvs:
        out += gstr(key) + struct.pack("<I", ty)
        if ty == T_U32:
            out += struct.pack("<I", val)
        elif ty == T_F32:
            out += struct.pack("<f", val)
        elif ty == T_BOOL:
            out += bytes([val])
        elif ty == T_STRING:
            out += gstr(val)
        elif ty == T_ARRAY:
            ety, items = val
            out += struct.pack("<IQ", ety, len(items))
            for it in items:
                out += gstr(it) if ety == T_STRING else struct.pack("<i", it)
    offsets, off = [], 0
    for name, ne, ty, data in tensors:
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", ty, off)
        offsets.append(off)
        off += len(data) + (-len(data) % alignment)
    out += bytes(-len(out) % alignment)
    start = len(out)
    for (_, _, _, data), o in zip(tensors, offsets):
        out += bytes(start + o - len(out)) + data
    return out


def rand_f32(n):
    return b"".join(f32(rng.uniform(-1, 1)) for _ in range(n))


put("gguf", "small.gguf", gguf(
    [("general.architecture", T_STRING, "llama"), ("list", T_ARRAY, (T_STRING, ["x", "yy"]))],
    [("a", [4, 2], GGML_F32, rand_f32(8)), ("b", [32], GGML_Q8_0, f16(0.5) + bytes(rng.randrange(256) for _ in range(32)))]))

tokens = ["a", "b", "ab", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
llama_kv = [
    ("general.architecture", T_STRING, "llama"), ("llama.block_count", T_U32, 1), ("llama.context_length", T_U32, 64),
    ("llama.embedding_length", T_U32, 4), ("llama.feed_forward_length", T_U32, 4),
    ("llama.attention.head_count", T_U32, 2), ("llama.attention.head_count_kv", T_U32, 1),
    ("llama.rope.freq_base", T_F32, 10000.0), ("llama.attention.layer_norm_rms_epsilon", T_F32, 1e-5),
    ("tokenizer.ggml.model", T_STRING, "gpt2"), ("tokenizer.ggml.pre", T_STRING, "smollm"),
    ("tokenizer.ggml.tokens", T_ARRAY, (T_STRING, tokens)),
    ("tokenizer.ggml.token_type", T_ARRAY, (T_I32, [1, 1, 1, 3, 3, 3])),
    ("tokenizer.ggml.merges", T_ARRAY, (T_STRING, ["a b"])),
    ("tokenizer.ggml.bos_token_id", T_U32, 4), ("tokenizer.ggml.eos_token_id", T_U32, 5),
    ("tokenizer.ggml.add_bos_token", T_BOOL, 0),
    ("tokenizer.chat_template", T_STRING,
     "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"),
]
llama_tensors = [
    ("token_embd.weight", [4, 6], GGML_F32, rand_f32(24)),
    ("blk.0.attn_norm.weight", [4], GGML_F32, rand_f32(4)),
    ("blk.0.attn_q.weight", [4, 4], GGML_F32, rand_f32(16)),
    ("blk.0.attn_k.weight", [4, 2], GGML_F32, rand_f32(8)),
    ("blk.0.attn_v.weight", [4, 2], GGML_F16, b"".join(f16(rng.uniform(-1, 1)) for _ in range(8))),
    ("blk.0.attn_output.weight", [4, 4], GGML_F32, rand_f32(16)),
    ("blk.0.ffn_norm.weight", [4], GGML_F32, rand_f32(4)),
    ("blk.0.ffn_gate.weight", [4, 4], GGML_F32, rand_f32(16)),
    ("blk.0.ffn_up.weight", [4, 4], GGML_F32, rand_f32(16)),
    ("blk.0.ffn_down.weight", [4, 4], GGML_F32, rand_f32(16)),
    ("output_norm.weight", [4], GGML_F32, rand_f32(4)),
]
put("gguf", "tiny_llama.gguf", gguf(llama_kv, llama_tensors))

# ---- chat_template (byte 0: template = b % 3, bit 2 content span, bit 3 raw NUL-separated text, bit 4
# generation prompt, bit 7 compile the rest as a template; byte 1: max_len - 2) --------------------------------
msgs = json.dumps(chat(1, "<think>\nx is 42\n</think>\n\nthe answer is 42"))
for t in range(3):
    put("chat_template", f"json_t{t}_turn", bytes([t, 60]) + msgs.encode())
    put("chat_template", f"json_t{t}_content", bytes([t | 4, 60]) + msgs.encode())
put("chat_template", "raw_t1_truncated", bytes([1 | 8, 6]) + b"sys\x00the answer\x00<think>x</think> 42\x00why")
put("chat_template", "tool_calls_t0", bytes([0, 100]) + json.dumps(
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [{"name": "f"}]}]).encode())
put("chat_template", "source", bytes([0x80, 0]) + b"{% for m in messages %}{{ m.content | trim }}{% endfor %}")
