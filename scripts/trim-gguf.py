#!/usr/bin/env python3
"""Write a copy of a GGUF file that keeps only the first N transformer blocks (plain Python, no dependencies).

Why: the GPU machine can only receive 64 MiB with a call, and SmolLM2-135M's GGUF is 98 MB. Its first N blocks
with the full embedding, final norm and tokenizer metadata are a real trained model of the same architecture
(every kernel runs on trained weights, at the real vocabulary), small enough to carry; `lark convert-gguf` turns it
into a model directory there. Usage: trim-gguf.py IN.gguf OUT.gguf N

Only the `<arch>.block_count` value and the tensor list change; every other metadata entry is copied byte for byte
and every kept tensor's data is copied unchanged (re-aligned to the file's alignment).
"""
import struct
import sys

SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
INT_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 10: "<Q", 11: "<q"}


class Reader:
    def __init__(self, buf):
        self.b, self.p = buf, 0

    def take(self, n):
        if self.p + n > len(self.b):
            raise ValueError(f"truncated GGUF at byte {self.p}")
        v = self.b[self.p:self.p + n]
        self.p += n
        return v

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def string(self):
        return self.take(self.u64()).decode("utf-8")

    def skip_value(self, t):
        if t in SCALAR:
            self.take(SCALAR[t])
        elif t == 8:
            self.take(self.u64())
        elif t == 9:
            et, n = self.u32(), self.u64()
            if et in SCALAR:
                self.take(SCALAR[et] * n)
            else:
                for _ in range(n):
                    self.skip_value(et)
        else:
            raise ValueError(f"unknown GGUF value type {t}")


def gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    src, dst, keep = sys.argv[1], sys.argv[2], int(sys.argv[3])
    buf = open(src, "rb").read()
    r = Reader(buf)
    if r.take(4) != b"GGUF":
        sys.exit(f"{src}: not a GGUF file")
    version = r.u32()
    if version not in (2, 3):
        sys.exit(f"{src}: GGUF version {version} (2 or 3 supported)")
    n_tensors, n_kv = r.u64(), r.u64()

    kvs = []  # (key, raw bytes of the whole entry)
    arch, alignment, block_key = None, 32, None
    for _ in range(n_kv):
        start = r.p
        key = r.string()
        t = r.u32()
        vstart = r.p
        r.skip_value(t)
        raw = buf[start:r.p]
        if key == "general.architecture":
            arch = Reader(buf[vstart:r.p]).string()
        if key == "general.alignment":
            alignment = struct.unpack(INT_FMT[t], buf[vstart:r.p])[0]
        kvs.append((key, t, raw, buf[vstart:r.p]))
    if arch is None:
        sys.exit(f"{src}: no general.architecture")
    block_key = f"{arch}.block_count"

    tensors = []  # (name, dims, type, offset)
    for _ in range(n_tensors):
        name = r.string()
        nd = r.u32()
        dims = [r.u64() for _ in range(nd)]
        tt = r.u32()
        off = r.u64()
        tensors.append((name, dims, tt, off))
    data_start = (r.p + alignment - 1) // alignment * alignment
    # A tensor's bytes run to the next tensor's offset (or the end of the file); trailing padding included.
    by_off = sorted(tensors, key=lambda x: x[3])
    size = {}
    for i, (name, _, _, off) in enumerate(by_off):
        end = by_off[i + 1][3] if i + 1 < len(by_off) else len(buf) - data_start
        size[name] = end - off

    def kept(name):
        if name.startswith("blk."):
            return int(name.split(".")[1]) < keep
        return True

    out_tensors = [t for t in tensors if kept(t[0])]
    old_blocks = None
    out = bytearray()
    out += b"GGUF" + struct.pack("<I", version) + struct.pack("<QQ", len(out_tensors), len(kvs))
    for key, t, raw, value in kvs:
        if key == block_key:
            old_blocks = struct.unpack(INT_FMT[t], value)[0]
            if keep > old_blocks:
                sys.exit(f"{src}: has {old_blocks} blocks, cannot keep {keep}")
            out += gguf_string(key) + struct.pack("<I", t) + struct.pack(INT_FMT[t], keep)
        else:
            out += raw
    if old_blocks is None:
        sys.exit(f"{src}: no {block_key}")
    offset = 0
    placed = []
    for name, dims, tt, off in out_tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", tt, offset)
        placed.append((off, size[name]))
        offset += (size[name] + alignment - 1) // alignment * alignment
    out += b"\0" * ((-len(out)) % alignment)
    for off, n in placed:
        chunk = buf[data_start + off:data_start + off + n]
        out += chunk + b"\0" * ((-len(chunk)) % alignment)
    with open(dst, "wb") as f:
        f.write(out)
    print(f"{dst}: {keep} of {old_blocks} blocks, {len(out_tensors)} of {len(tensors)} tensors, {len(out)} bytes")


if __name__ == "__main__":
    main()
