# The audit benchmark's load: many processes, each holding listening sockets
# and established loopback connections, the shape of a busy application host.
#
# Run it inside the network namespace bench/audit.sh creates (lab addresses on
# `lo`); it binds only to the addresses given and connects only to its own
# listeners, so every packet stays on that namespace's loopback.
#
# Adapted from the earlier helper's /tmp/h1_load.py: it adds lab (198.18.0.0/15
# and fd00:198:18::/64) listeners so the audit has exposed sockets to judge, IPv6
# and UDP listeners, a mix of owners (half the processes drop to `nobody`, so
# account lookups are not all uid 0), and children that die with their parent.
#
# Usage: load.py N_PROCS N_TCP_LOOPBACK N_CONNS LAB_V4_TCP LAB_V4_UDP LAB_V6_TCP [accept]
# Per process: N_TCP_LOOPBACK TCP listeners on 127.0.0.1 and ::1 (one in eight
# on ::1), one TCP listener on LAB_V4_TCP, one on LAB_V6_TCP, one UDP socket on
# 127.0.0.1 and one on LAB_V4_UDP; and N_CONNS connections to its own loopback
# listeners, each accepted, so two established sockets per connection.
# Prints "ready LISTENERS CONNECTIONS" once every process holds its sockets.
# With `accept`, each process also accepts every further connection to its TCP
# listeners and never answers (a service that waits for its own protocol): what
# the audit's Redis questions meet on a host of hand-built services.
import ctypes
import os
import selectors
import signal
import socket
import sys
import traceback

NOBODY = 65534
PR_SET_PDEATHSIG = 1


def die_with_parent():
    # If the driver is killed without a chance to clean up, the kernel ends the
    # children too, so no load outlives the benchmark.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def child(idx, n_tcp_loopback, n_conns, lab_v4_tcp, lab_v4_udp, lab_v6_tcp, ready_fd, accept):
    die_with_parent()
    if idx % 2 == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    held = []
    loopback = []
    for j in range(n_tcp_loopback):
        family, host = (
            (socket.AF_INET6, "::1") if j % 8 == 7 else (socket.AF_INET, "127.0.0.1")
        )
        s = socket.socket(family, socket.SOCK_STREAM)
        s.bind((host, 0))
        s.listen(128)
        loopback.append(s)
    held += loopback
    tcp_listeners = list(loopback)
    for family, kind, host in (
        (socket.AF_INET, socket.SOCK_STREAM, lab_v4_tcp),
        (socket.AF_INET6, socket.SOCK_STREAM, lab_v6_tcp),
        (socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1"),
        (socket.AF_INET, socket.SOCK_DGRAM, lab_v4_udp),
    ):
        s = socket.socket(family, kind)
        s.bind((host, 0))
        if kind == socket.SOCK_STREAM:
            s.listen(128)
            tcp_listeners.append(s)
        held.append(s)
    for k in range(n_conns):
        server = loopback[k % len(loopback)]
        client = socket.create_connection(server.getsockname()[:2])
        accepted, _ = server.accept()
        held += [client, accepted]
    os.write(ready_fd, b"x")
    if not accept:
        while True:
            signal.pause()
    # Accept, read and never answer; close what the peer closed, so the
    # descriptors (and the audit's /proc walk) do not grow from run to run.
    selector = selectors.DefaultSelector()
    for s in tcp_listeners:
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ, "listener")
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            if key.data == "listener":
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                selector.register(conn, selectors.EVENT_READ, "connection")
                continue
            try:
                gone = not sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                gone = True
            if gone:
                selector.unregister(sock)
                sock.close()


def main():
    n_procs, n_tcp_loopback, n_conns = (int(a) for a in sys.argv[1:4])
    lab_v4_tcp, lab_v4_udp, lab_v6_tcp = sys.argv[4:7]
    accept = sys.argv[7:8] == ["accept"]
    r, w = os.pipe()
    kids = []

    def stop(*_):
        for pid in kids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        os._exit(0)

    def child_died(*_):
        # A child that could not get its sockets (file limit, address missing)
        # exits; the benchmark must not wait for a ready line that never comes.
        print("load: a load process exited early", file=sys.stderr, flush=True)
        stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGCHLD, child_died)
    for idx in range(n_procs):
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                child(idx, n_tcp_loopback, n_conns, lab_v4_tcp, lab_v4_udp, lab_v6_tcp, w, accept)
            except BaseException:
                traceback.print_exc()
            os._exit(1)
        kids.append(pid)
    os.close(w)
    got = 0
    while got < n_procs:
        chunk = os.read(r, 4096)
        if not chunk:
            print(f"load: only {got} of {n_procs} processes got ready", file=sys.stderr)
            stop()
        got += len(chunk)
    # From here on the children only wait; one ending is the driver stopping us.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    n_listeners = n_procs * (n_tcp_loopback + 4)
    print(f"ready {n_listeners} {n_procs * n_conns}", flush=True)
    while True:
        signal.pause()


main()
