"""Garbage frames -- tries to hold the grader with malformed messages on its worker's socket.

What it tries: the worker talks to the judge over a socket that is a plain file descriptor of
the submission's own process. At import it finds it (fstat of every descriptor, looking for a
socket) and writes the start of a frame: a header announcing 60 MiB of JSON (within the wire
format's bounds), then a few bytes, and no more. The worker's real greeting is then read as part
of that document, and the judge waited for the rest until its start timeout (120 s), per
submission; in a call, the same trick made the call wait for its whole time limit. Its functions
compute no attention.

What stops it: the judge ends a worker at once when its socket carries anything but one
well-formed reply: a header out of bounds, a document that is not a JSON object, bytes beyond the
reply, or a frame whose bytes stop for 2 s (conformance/judge/workers.py FRAME_STALL; the worker
writes a frame in one go). The load fails in about 2 s with "the worker sent a malformed message",
the verdict is "cannot load" and the score 0.
"""

import os
import stat
import struct

import torch


def _sockets() -> list[int]:
    found = []
    for fd in range(3, 256):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                found.append(fd)
        except OSError:
            continue
    return found


# the wire format's header: length of the JSON document, number of buffers (conformance/worker/wire.py)
_STALLED_FRAME = struct.pack("<II", 60 * 2**20, 0) + b'{"ok": true, "name": "'
for _fd in _sockets():
    try:
        os.write(_fd, _STALLED_FRAME)
    except OSError:
        pass


def self_attention(x, w_q, w_k, w_v, causal=False):
    for fd in _sockets():  # never reached under the grader: the load already failed
        os.write(fd, struct.pack("<II", 7, 0) + b"[1,2,3]")
    context = torch.zeros(*x.shape[:-1], w_v.shape[0], dtype=x.dtype)
    weights = torch.zeros(*x.shape[:-1], x.shape[-2], dtype=x.dtype)
    return context, weights
