#!/usr/bin/env python3
"""cross/e2e.py: the two ends of cross-test.sh's transfer check (stdlib only).

  e2e.py echo LOG          TCP echo server on 127.0.0.1:0. Prints "PORT n" on
                           stdout, then for every connection echoes all bytes
                           back and appends "conn=<n> bytes=<len> sha256=<hex>"
                           (what it received) to LOG when the peer closes.
  e2e.py transfer PORT MIB SEED
                           Connects to 127.0.0.1:PORT, sends MIB MiB of
                           pseudo-random bytes while reading the echo, and
                           prints "sent=<len> sha256=<hex>" and
                           "received=<len> sha256=<hex>". Exits 1 if the echo
                           differs from what was sent or does not arrive in time.

Every socket has a timeout, so a stalled tunnel fails the check instead of
hanging it (cross-test.sh also runs each step under `timeout`).
"""
import hashlib
import random
import socket
import sys
import threading

IO_TIMEOUT = 60.0
CHUNK = 64 * 1024


def echo(log_path):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    print("PORT %d" % server.getsockname()[1], flush=True)
    lock = threading.Lock()
    count = 0

    def serve(conn, n):
        digest = hashlib.sha256()
        total = 0
        conn.settimeout(IO_TIMEOUT * 4)
        try:
            while True:
                data = conn.recv(CHUNK)
                if not data:
                    break
                digest.update(data)
                total += len(data)
                conn.sendall(data)
        except OSError as e:
            print("echo: connection %d: %s" % (n, e), file=sys.stderr, flush=True)
        finally:
            conn.close()
            with lock, open(log_path, "a") as log:
                log.write("conn=%d bytes=%d sha256=%s\n" % (n, total, digest.hexdigest()))

    while True:
        conn, _ = server.accept()
        count += 1
        threading.Thread(target=serve, args=(conn, count), daemon=True).start()


def transfer(port, mib, seed):
    size = mib * 1024 * 1024
    data = random.Random(seed).randbytes(size)
    sent_hash = hashlib.sha256(data).hexdigest()
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    sock.settimeout(IO_TIMEOUT)
    send_error = []

    def sender():
        try:
            view = memoryview(data)
            for off in range(0, size, CHUNK):
                sock.sendall(view[off:off + CHUNK])
        except OSError as e:
            send_error.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    digest = hashlib.sha256()
    got = 0
    try:
        while got < size:
            chunk = sock.recv(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            got += len(chunk)
    except OSError as e:
        print("transfer: receive failed after %d bytes: %s" % (got, e), file=sys.stderr)
    t.join(IO_TIMEOUT)
    sock.close()
    received_hash = digest.hexdigest()
    print("sent=%d sha256=%s" % (size, sent_hash))
    print("received=%d sha256=%s" % (got, received_hash))
    if send_error:
        print("transfer: send failed: %s" % send_error[0], file=sys.stderr)
        return 1
    if got != size or received_hash != sent_hash:
        print("transfer: echo differs from what was sent", file=sys.stderr)
        return 1
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "echo":
        echo(argv[2])
        return 0
    if len(argv) == 5 and argv[1] == "transfer":
        return transfer(int(argv[2]), int(argv[3]), int(argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
