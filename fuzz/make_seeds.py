#!/usr/bin/env python3
"""Writes the seed corpus of the frame_decoder fuzz target.

Each seed is one control byte (see fuzz_targets/frame_decoder.rs), optional
chunk-size bytes, then a stream of tunnel frames. The frames are the fixed
byte vectors that src/frame.rs checks encode_frame against, so they are
known-good wire bytes for the schema. Run from the repository root:
    python3 fuzz/make_seeds.py
"""
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "frame_decoder")

# STREAM_START stream 1, service "SSH1", connection 1.
STREAM_START = bytes([0, 12, 0x08, 2, 0x10, 1, 0x2A, 4]) + b"SSH1" + bytes([0x38, 1])
# DATA stream 300, payload "hi", ignorable.
DATA = bytes([0, 11, 0x08, 1, 0x10, 0xAC, 0x02, 0x18, 1, 0x22, 2]) + b"hi"
# SERVICE_IDS "A", "BC".
SERVICE_IDS = bytes([0, 9, 0x08, 5, 0x32, 1]) + b"A" + bytes([0x32, 2]) + b"BC"
# CONNECTION_RESET stream 2, connection 2^32-1.
RESET = bytes([0, 10, 0x08, 7, 0x10, 2, 0x38, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
# Unknown type 9 marked ignorable (skipped), then not ignorable (refused).
IGNORABLE = bytes([0, 4, 0x08, 9, 0x18, 1])
STRICT = bytes([0, 2, 0x08, 9])
# DATA with a 40-byte payload: over the 16-byte limit of control bit 3.
BIG = bytes([0, 44, 0x08, 1, 0x10, 1, 0x22, 40]) + bytes(range(40))

SEEDS = {
    "one-chunk-session": bytes([0]) + STREAM_START + DATA + SERVICE_IDS + RESET,
    "byte-by-byte": bytes([1, 0]) + STREAM_START + DATA,
    "mixed-chunks": bytes([3, 2, 6, 0]) + SERVICE_IDS + IGNORABLE + RESET,
    "refused-unknown-type": bytes([2, 4, 1]) + IGNORABLE + STRICT + DATA,
    "payload-over-small-limit": bytes([0x08 | 1, 5]) + DATA + BIG,
    "truncated-frame": bytes([1, 3]) + STREAM_START + DATA[:7],
}

os.makedirs(OUT, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(SEEDS)} seeds to {OUT}")
