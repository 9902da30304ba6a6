#!/usr/bin/env python3
"""Seed inputs for the fuzz targets, written to fuzz/seeds/<target>/ (then
minimised into fuzz/corpus/<target>/ with `cargo fuzz cmin`).

Sources:
  --spec FILE     byte vectors (Appendix A hex dumps) and JSON examples of the
                  spec documents (virtlockd-spec.md, observed-behaviour.md)
  --strace FILE   traffic recorded while the integration tests run, e.g.
                    strace -f -qq -e trace=write,writev,sendmsg,sendto -yy -xx \
                        -s 4194304 -o trace.txt cargo test --test it framing:: ...
                  every packet written on a Unix socket (calls and replies) and
                  every restart snapshot file written by a live upgrade
  --conf FILE     virtlockd.conf samples

Each target's input layout (see the target's source):
  frame            the byte stream of one connection (after a 2-byte cut point)
  lock_args        procedure - 1 (one byte), then the call's payload
  admin_args       procedure (one byte), then the call's payload
  inspect_replies  0 locks / 1 clients / 2 status (one byte), then the payload
  ctl_reply        0 locks / 1 who / 2 clients / 3 status (one byte), then the reply
  virconf          the file's text
  libvirt_json     the file's text
  snapshot         the file's bytes
"""

import argparse
import hashlib
import os
import re
import struct
import sys

LOCK, ADMIN, INSPECT, KEEPALIVE = 0x0EA7BEEF, 0x06900690, 0x564C4B49, 0x6B656570
CALL, REPLY, MESSAGE, CALL_WITH_FDS = 0, 1, 2, 4
# Larger seeds only slow the fuzzer down; the decoders' limits are unit-tested.
MAX_SEED = 16 * 1024


class Seeds:
    def __init__(self, out):
        self.out = out
        self.count = {}

    def add(self, target, data):
        if not data or len(data) > MAX_SEED:
            return
        d = os.path.join(self.out, target)
        os.makedirs(d, exist_ok=True)
        name = hashlib.sha1(data).hexdigest()
        path = os.path.join(d, name)
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)
            self.count[target] = self.count.get(target, 0) + 1


def packets(stream):
    """Complete packets at the start of a written buffer."""
    out = []
    while len(stream) >= 28:
        (length,) = struct.unpack(">I", stream[:4])
        if length < 28 or length > len(stream):
            break
        out.append(stream[:length])
        stream = stream[length:]
    return out


def add_packet(seeds, pkt):
    prog, vers, proc_, mtype, serial, status = struct.unpack(">IIiiIi", pkt[4:28])
    payload = pkt[28:]
    if mtype in (CALL, CALL_WITH_FDS, MESSAGE):
        seeds.add("frame", b"\x00\x10" + pkt)
        if prog == LOCK and 1 <= proc_ <= 8 and mtype == CALL:
            seeds.add("lock_args", bytes([proc_ - 1]) + payload)
        if prog == ADMIN and 0 <= proc_ <= 255 and mtype == CALL:
            seeds.add("admin_args", bytes([proc_]) + payload)
    elif mtype == REPLY:
        if prog == INSPECT and 1 <= proc_ <= 3:
            # virtlockctl's call is the first on its connection: serial 0.
            reply = pkt[:20] + b"\x00\x00\x00\x00" + pkt[24:]
            for sel in {1: (0, 1), 2: (2,), 3: (3,)}[proc_]:
                seeds.add("ctl_reply", bytes([sel]) + reply)
            if status == 0:
                seeds.add("inspect_replies", bytes([proc_ - 1]) + payload)
        elif status == 1:
            # An error reply as virtlockctl would get it (same remote_error).
            for proc_, sel in ((1, 0), (2, 2), (3, 3)):
                hdr = struct.pack(">IIiiIi", INSPECT, 1, proc_, REPLY, 0, 1)
                seeds.add("ctl_reply", bytes([sel]) + pkt[:4] + hdr + payload)


def from_spec(seeds, path):
    text = open(path, encoding="utf-8").read()
    # Hex dumps: "0000: 00000040 0ea7beef ..." lines inside code blocks.
    for block in re.findall(r"```\n(.*?)```", text, re.S):
        lines = [l for l in block.splitlines() if re.match(r"^[0-9a-f]{4}: ", l)]
        if not lines:
            continue
        data = bytes.fromhex("".join(l[6:].replace(" ", "") for l in lines))
        for pkt in packets(data):
            add_packet(seeds, pkt)
            # The daemon's replies are frames too, as any peer could send them.
            seeds.add("frame", b"\x00\x10" + pkt)
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        block = block.replace("<64 hex chars>", "ab" * 32)
        seeds.add("libvirt_json", block.encode())


def strace_strings(line):
    """The data of one traced write, as bytes (all quoted buffers concatenated)."""
    return b"".join(
        bytes.fromhex(s.replace("\\x", ""))
        for s in re.findall(r'"((?:\\x[0-9a-f]{2})*)"', line)
    )


def from_strace(seeds, path):
    call = re.compile(rb"^\d+ +(write|writev|sendmsg|sendto)\((\d+)<(.*?)>, ")
    with open(path, "rb") as f:
        for raw in f:
            m = call.match(raw)
            if not m:
                continue
            where = m.group(3).decode("ascii", "replace")
            if where.startswith("\\x"):
                hexed = re.sub(r"[^0-9a-f]", "", where.replace("\\x", ""))
                where = bytes.fromhex(hexed).decode("utf-8", "replace")
            line = raw.decode("ascii", "replace")
            if where.startswith("UNIX-STREAM"):
                for pkt in packets(strace_strings(line[m.end() - m.start():])):
                    add_packet(seeds, pkt)
            elif where.endswith("restart-exec.msgpack"):
                seeds.add("snapshot", strace_strings(line[m.end() - m.start():]))
            elif where.endswith("restart-exec.json"):
                seeds.add("libvirt_json", strace_strings(line[m.end() - m.start():]))
            elif where.endswith(".conf"):
                seeds.add("virconf", strace_strings(line[m.end() - m.start():]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "seeds"))
    ap.add_argument("--spec", action="append", default=[])
    ap.add_argument("--strace", action="append", default=[])
    ap.add_argument("--conf", action="append", default=[])
    args = ap.parse_args()
    seeds = Seeds(args.out)
    for p in args.spec:
        from_spec(seeds, p)
    for p in args.strace:
        from_strace(seeds, p)
    for p in args.conf:
        seeds.add("virconf", open(p, "rb").read())
    for target, n in sorted(seeds.count.items()):
        print(f"{target}: {n} new seeds", file=sys.stderr)


if __name__ == "__main__":
    main()
