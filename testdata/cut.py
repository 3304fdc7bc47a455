#!/usr/bin/env python3
"""Writes a classic pcap without its first N packets: a capture that starts mid-stream, the way
a capture started after a connection opened (or after a gateway restart) sees it.

Usage: cut.py IN OUT N
"""
import sys

src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(src, "rb").read()
order = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
out = bytearray(data[:24])
off, i = 24, 0
while off + 16 <= len(data):
    caplen = int.from_bytes(data[off + 8 : off + 12], "little" if order == "<" else "big")
    if i >= n:
        out += data[off : off + 16 + caplen]
    off += 16 + caplen
    i += 1
open(dst, "wb").write(bytes(out))
