#!/usr/bin/env python3
"""Writes src/usage/bpe/<encoding>.bpe.z: a tiktoken encoding in the compact form LLMux embeds.

tiktoken's files (one `base64(token) rank` line per token, ranks 0, 1, 2, ... in order) are
5.3 MB for o200k_base and cl100k_base together, as text in the binary. The compact form is
every token in rank order as one length byte and its bytes, zlib-compressed: 1.5 MB. LLMux
inflates it once, on the tokenizer thread (src/usage/tokens.rs), and the unit tests there check
that it counts exactly as tiktoken-rs's own tables do.

Usage: tools/compact_bpe.py [DIR]   DIR holds the .tiktoken files (default: tiktoken-rs's
assets in the cargo registry, the version Cargo.lock names).
"""
import base64
import glob
import os
import re
import sys
import zlib

ENCODINGS = ["cl100k_base", "o200k_base"]


def assets_dir():
    lock = open(os.path.join(os.path.dirname(__file__), "..", "Cargo.lock")).read()
    m = re.search(r'name = "tiktoken-rs"\nversion = "([^"]+)"', lock)
    if not m:
        sys.exit("tiktoken-rs is not in Cargo.lock")
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    found = glob.glob(os.path.join(home, "registry/src/*/tiktoken-rs-%s/assets" % m.group(1)))
    if not found:
        sys.exit("tiktoken-rs %s is not in the cargo registry: run `cargo fetch` first" % m.group(1))
    return found[0]


def compact(path):
    out = bytearray()
    expected = 0
    for line in open(path, encoding="ascii"):
        line = line.strip()
        if not line:
            continue
        token, rank = line.split(" ")
        if int(rank) != expected:
            sys.exit("%s: rank %s where %d was expected" % (path, rank, expected))
        expected += 1
        raw = base64.b64decode(token)
        if not 0 < len(raw) < 256:
            sys.exit("%s: a token of %d bytes" % (path, len(raw)))
        out.append(len(raw))
        out += raw
    return zlib.compress(bytes(out), 9), expected


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else assets_dir()
    dest = os.path.join(os.path.dirname(__file__), "..", "src", "usage", "bpe")
    os.makedirs(dest, exist_ok=True)
    for name in ENCODINGS:
        data, count = compact(os.path.join(src, name + ".tiktoken"))
        with open(os.path.join(dest, name + ".bpe.z"), "wb") as f:
            f.write(data)
        print("%s: %d tokens, %d bytes" % (name, count, len(data)))


if __name__ == "__main__":
    main()
