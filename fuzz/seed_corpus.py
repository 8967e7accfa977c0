#!/usr/bin/env python3
"""Seeds fuzz/corpus/deframer from the reference vectors (proto/tests/vectors).

Each seed uses the `deframer` target's input layout: a mode byte, a shape byte, then the
payload. Raw-mode seeds hold the reference frames (valid and invalid) and the six-frame
stream; signed-mode seeds hold each valid frame's header JSON followed by its content,
with the shape byte at the JSON length, so the target rebuilds exactly that frame. The
`large_100k` vector is among them, so libFuzzer's default max_len (the largest seed, at
least 4096) becomes about 100 KB: large frames stay reachable, at some cost in exec/s.
Run from anywhere: python3 fuzz/seed_corpus.py
"""
import base64
import hashlib
import json
import pathlib

here = pathlib.Path(__file__).resolve().parent
vectors = json.loads((here.parent / "proto/tests/vectors/reference-frames.json").read_text())
out = here / "corpus" / "deframer"
out.mkdir(parents=True, exist_ok=True)


def seed(data: bytes) -> None:
    (out / hashlib.sha1(data).hexdigest()).write_bytes(data)


n = 0
for case in vectors["valid"] + vectors["invalid"]:
    frame = base64.b64decode(case["frame_b64"])
    if len(frame) > 4096:
        # The 100 KB frame goes in once, in signed mode below, not three times here.
        continue
    key_is_default = base64.b64decode(case["key_b64"]) == b"default-key"
    mode = 0 if key_is_default else 2  # mode bit 1: the vectors' custom key
    for shape in (0, 7, 200):
        seed(bytes([mode, shape]) + frame)
        n += 1
for case in vectors["valid"]:
    if base64.b64decode(case["key_b64"]) != b"default-key":
        continue
    frame = base64.b64decode(case["frame_b64"])
    header_len = int.from_bytes(frame[12:16], "big")
    if header_len > 255:
        continue
    json_and_content = frame[64:]
    seed(bytes([1, header_len]) + json_and_content)
    n += 1
stream = base64.b64decode(vectors["stream_b64"])
for shape in (0, 3, 31, 255):
    seed(bytes([0, shape]) + stream)
    n += 1
print(f"wrote {n} seeds to {out}")
