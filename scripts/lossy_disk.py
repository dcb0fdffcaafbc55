#!/usr/bin/env python3
"""A disk that loses what was not flushed when the power goes.

Serves IMAGE as an NBD export on a Unix socket, for QEMU's `-drive file=nbd+unix:...`. Writes
are held in a write cache (as a real eMMC or SD card holds them) and reach IMAGE only when the
guest flushes. When the connection drops without NBD_CMD_DISC (the emulator was killed: a
power cut), the cache is lost:

  --mode drop   every unflushed write is dropped
  --mode tear   a random subset of the unflushed 4 KiB blocks reaches the image, the rest is
                dropped: writes land out of order and requests tear at block boundaries

A clean disconnect (the emulator shut down; QEMU flushes first) keeps the cache. One line per
connection goes to --log: how much was unflushed at the cut and what became of it. The server
serves one connection at a time, for as many boots as the campaign makes, until SIGTERM.
`lossy_disk.py --self-test` checks on a scratch image what a cut leaves in each mode.

Protocol: the NBD fixed-newstyle handshake (NBD_OPT_GO / NBD_OPT_EXPORT_NAME) and simple
replies; it advertises flush but not FUA, so QEMU turns a FUA write into write + flush.
"""
import argparse
import os
import random
import signal
import socket
import struct
import sys

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_REPLY = 0x67446698
OPT_EXPORT_NAME, OPT_ABORT, OPT_INFO, OPT_GO = 1, 2, 6, 7
REP_ACK, REP_INFO, REP_ERR_UNSUP = 1, 3, 0x80000001
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_WRITE_ZEROES = 0, 1, 2, 3, 4, 6
FLAG_HAS_FLAGS, FLAG_SEND_FLUSH = 1, 4
EINVAL = 22
BLOCK = 4096


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


class Disk:
    """The image plus a write cache of whole 4 KiB blocks."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.cache = {}  # block number -> bytes (BLOCK long)

    def _block(self, b):
        if b in self.cache:
            return self.cache[b]
        data = os.pread(self.fd, BLOCK, b * BLOCK)
        return data + bytes(BLOCK - len(data))

    def read(self, off, n):
        out = bytearray()
        while n > 0:
            b, o = divmod(off, BLOCK)
            k = min(n, BLOCK - o)
            out += self._block(b)[o:o + k]
            off, n = off + k, n - k
        return bytes(out)

    def write(self, off, data):
        i = 0
        while i < len(data):
            b, o = divmod(off + i, BLOCK)
            k = min(len(data) - i, BLOCK - o)
            blk = self._block(b)
            self.cache[b] = blk[:o] + data[i:i + k] + blk[o + k:]
            i += k

    def flush(self):
        for b, data in self.cache.items():
            os.pwrite(self.fd, data[: max(0, min(BLOCK, self.size - b * BLOCK))], b * BLOCK)
        self.cache.clear()

    def cut(self, mode, rng):
        """Power lost: returns (unflushed blocks, blocks that reached the image)."""
        pending = len(self.cache)
        if mode == "tear":
            kept = {b: d for b, d in self.cache.items() if rng.random() < 0.5}
        else:
            kept = {}
        reached = len(kept)  # counted first: flush() empties the cache, which is `kept` now
        self.cache = kept
        self.flush()
        return pending, reached


def handshake(s, disk):
    s.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 1 | 2))  # fixed newstyle, no zeroes
    (cflags,) = struct.unpack(">I", recv_exact(s, 4))
    tflags = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH
    while True:
        magic, opt, length = struct.unpack(">QII", recv_exact(s, 16))
        data = recv_exact(s, length) if length else b""
        if magic != IHAVEOPT:
            raise EOFError
        if opt == OPT_EXPORT_NAME:
            s.sendall(struct.pack(">QH", disk.size, tflags) + (b"" if cflags & 2 else bytes(124)))
            return
        if opt in (OPT_GO, OPT_INFO):
            info = struct.pack(">HQH", 0, disk.size, tflags)
            s.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, REP_INFO, len(info)) + info)
            s.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, REP_ACK, 0))
            if opt == OPT_GO:
                return
        elif opt == OPT_ABORT:
            s.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, REP_ACK, 0))
            raise EOFError
        else:
            s.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, REP_ERR_UNSUP, 0))


def serve(conn, disk):
    """Returns True for a clean disconnect, False for a cut; counts flushes and writes."""
    stats = {"writes": 0, "flushes": 0}
    try:
        handshake(conn, disk)
        while True:
            magic, _flags, typ, handle, off, length = struct.unpack(">IHHQQI", recv_exact(conn, 28))
            if magic != REQ_MAGIC:
                return False, stats
            err, payload = 0, b""
            if typ == CMD_READ:
                if off + length > disk.size:
                    err = EINVAL
                else:
                    payload = disk.read(off, length)
            elif typ == CMD_WRITE:
                data = recv_exact(conn, length)
                if off + length > disk.size:
                    err = EINVAL
                else:
                    disk.write(off, data)
                    stats["writes"] += 1
            elif typ == CMD_WRITE_ZEROES:
                disk.write(off, bytes(length))
            elif typ == CMD_FLUSH:
                disk.flush()
                stats["flushes"] += 1
            elif typ == CMD_TRIM:
                pass
            elif typ == CMD_DISC:
                return True, stats
            else:
                err = EINVAL
            conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY, err, handle) + payload)
    except (EOFError, ConnectionError):
        return False, stats


def self_test():
    """What a cut does to the image, checked block by block on a scratch image."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "disk.img")
        for mode in ("drop", "tear"):
            with open(path, "wb") as f:
                f.truncate(256 * BLOCK)
            disk = Disk(path)
            disk.write(0, b"F" * (8 * BLOCK))  # flushed: must stay whatever the cut does
            disk.flush()
            disk.write(8 * BLOCK + 100, b"U" * (200 * BLOCK))  # unflushed, unaligned: 201 blocks
            assert disk.read(8 * BLOCK + 100, 3) == b"UUU", "the guest must read its own writes"
            pending, reached = disk.cut(mode, random.Random(7))
            os.close(disk.fd)
            with open(path, "rb") as f:
                image = f.read()
            blocks = [image[b * BLOCK:(b + 1) * BLOCK] for b in range(256)]
            assert all(b == b"F" * BLOCK for b in blocks[:8]), f"{mode}: a flushed block was lost"
            landed = sum(1 for b in blocks[8:] if b.strip(b"\0"))
            assert pending == 201, f"{mode}: {pending} unflushed blocks counted, 201 written"
            assert landed == reached, f"{mode}: {landed} blocks reached the image, {reached} reported"
            if mode == "drop":
                assert reached == 0, f"drop: {reached} unflushed blocks reached the image"
            else:
                assert 0 < reached < pending, f"tear: {reached} of {pending} reached (want some, not all)"
            print(f"lossy_disk self-test, {mode}: {pending} unflushed blocks, {reached} reached the image")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image")
    ap.add_argument("socket")
    ap.add_argument("--mode", choices=["drop", "tear"], default="tear")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--log", default=None)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    disk = Disk(a.image)
    if os.path.exists(a.socket):
        os.unlink(a.socket)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a.socket)
    srv.listen(1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log = open(a.log, "a", buffering=1) if a.log else sys.stderr
    n = 0
    while True:
        conn, _ = srv.accept()
        n += 1
        clean, st = serve(conn, disk)
        conn.close()
        if clean:
            disk.flush()
            print(f"connection {n}: clean shutdown, {st['writes']} writes, {st['flushes']} flushes", file=log)
        else:
            pending, kept = disk.cut(a.mode, rng)
            print(
                f"connection {n}: power cut, {st['writes']} writes, {st['flushes']} flushes; "
                f"{pending} unflushed blocks: {kept} reached the disk, {pending - kept} lost",
                file=log,
            )


if __name__ == "__main__":
    main()
