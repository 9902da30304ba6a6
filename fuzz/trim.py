#!/usr/bin/env python3
"""Caps a corpus already minimised with `cargo fuzz cmin` at MAX files: keeps
the inputs that together cover the most edges (greedy: each next input adds
the most edges not yet covered), deletes the others, and prints how much of
the corpus' edge coverage is kept.

Usage: fuzz/trim.py BINARY CORPUS_DIR MAX
  BINARY  e.g. fuzz/target/x86_64-unknown-linux-gnu/release/frame

A libFuzzer merge with -use_counters=0 reports each input's edges; the long
runs' corpora need hundreds of inputs for their last rare edges, while a few
dozen carry most of it, which is what a short CI run needs to start from.
"""

import os
import subprocess
import sys
import tempfile


def main():
    binary, corpus, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with tempfile.TemporaryDirectory() as tmp:
        control = os.path.join(tmp, "control")
        out = os.path.join(tmp, "out")
        os.mkdir(out)
        subprocess.run(
            [binary, "-merge=1", "-use_counters=0", f"-merge_control_file={control}", out, corpus],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        lines = open(control).read().splitlines()
    n = int(lines[0])
    files = lines[2 : 2 + n]
    edges = {}
    for line in lines[2 + n :]:
        if line.startswith("FT "):
            parts = line.split()
            edges[int(parts[1])] = set(map(int, parts[2:]))
    total = set().union(*edges.values()) if edges else set()
    covered, chosen = set(), []
    while len(chosen) < limit and covered != total:
        best = max(edges, key=lambda i: (len(edges[i] - covered), -os.path.getsize(files[i])))
        if not edges[best] - covered:
            break
        chosen.append(best)
        covered |= edges[best]
    keep = {os.path.basename(files[i]) for i in chosen}
    for name in os.listdir(corpus):
        if name not in keep:
            os.remove(os.path.join(corpus, name))
    print(
        f"{corpus}: kept {len(keep)} of {n} inputs, "
        f"{len(covered)} of {len(total)} edges ({100 * len(covered) / max(len(total), 1):.1f}%)"
    )


if __name__ == "__main__":
    main()
