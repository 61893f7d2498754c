#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Writes the seed corpus of the parse_cow fuzz target (corpus/parse_cow/).

Each seed is a control byte (see fuzz_targets/parse_cow.rs) followed by a
small COW image. Run from anywhere; it rewrites the seeds in place.
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "parse_cow")
MAGIC = 0x70416E53


def ctl(shift, supplied, whole_block=False, commits=0):
    return bytes([shift | (4 if supplied else 0) | (8 if whole_block else 0) | (commits << 4)])


def header(chunk_sectors, valid=1, version=1, magic=MAGIC):
    return struct.pack("<IIII", magic, valid, version, chunk_sectors)


def image(chunk_sectors, chunks, areas, hdr=None, fill=0):
    cb = chunk_sectors * 512
    epa = cb // 16
    img = bytearray([fill]) * (cb * chunks)
    h = hdr if hdr is not None else header(chunk_sectors)
    img[0 : len(h)] = h
    for i, exs in enumerate(areas):
        loc = 1 + i * (epa + 1)
        base = loc * cb
        img[base : base + cb] = bytes(cb)
        for j, (old, new) in enumerate(exs):
            img[base + 16 * j : base + 16 * j + 16] = struct.pack("<QQ", old, new)
    return bytes(img)


def in_order(chunk_sectors, n, old=lambda k: k + 100):
    epa = chunk_sectors * 512 // 16
    areas, nxt = [[]], 2
    for k in range(n):
        if len(areas[-1]) == epa:
            areas.append([])
        areas[-1].append((old(k), nxt))
        nxt += 1
        if nxt % (epa + 1) == 1:
            nxt += 1
    if len(areas[-1]) == epa:
        areas.append([])
    return areas


seeds = {
    # Fresh device: magic 0, new store, then 3 commits and a merge.
    "new_store": ctl(0, True, commits=3) + bytes(512 * 8),
    # Valid store, area 0 full, area 1 partial, then 2 more commits.
    "valid_two_areas": ctl(0, True, commits=2) + image(1, 40, in_order(1, 36)),
    # Consecutive runs for the merge path, 1 KiB chunks, whole-chunk writes.
    "valid_runs_1k": ctl(1, True, True, 1) + image(2, 12, in_order(2, 8, lambda k: 500 + k)),
    # Table default (32 sectors) overridden by a 1-sector header.
    "override_default": ctl(0, False, commits=1) + image(1, 10, in_order(1, 5)),
    # Table 2 sectors, header 1 sector: override warning.
    "override_supplied": ctl(1, True) + image(1, 10, in_order(1, 5)),
    "bad_magic": ctl(0, True) + image(1, 4, [[]], hdr=header(1, magic=0x12345678)),
    "invalid_flag": ctl(0, True) + image(1, 4, [[(1, 2)]], hdr=header(1, valid=0)),
    "version_2": ctl(0, True) + image(1, 4, [[]], hdr=header(1, version=2)),
    "bad_chunk_size": ctl(0, True) + image(1, 4, [[]], hdr=header(3)),
    "metadata_new_chunk": ctl(0, True) + image(1, 8, [[(1, 2), (2, 1)]]),
    "beyond_end": ctl(0, True) + image(1, 8, [[(1, 2), (2, 9)]]),
    "area_beyond_end": ctl(0, True) + image(1, 34, in_order(1, 32)[:1]),
    "garbage_after_end": ctl(0, True, commits=1)
    + image(1, 8, [[(1, 2), (2, 3), (0, 0), (7, 5)]]),
    # Old data everywhere except the header and the areas.
    "leftover_data": ctl(2, True, commits=15) + image(4, 6, in_order(4, 3), fill=0xA5),
}

os.makedirs(OUT, exist_ok=True)
for name in os.listdir(OUT):
    os.remove(os.path.join(OUT, name))
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes in {OUT}")
