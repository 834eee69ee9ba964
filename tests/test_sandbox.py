"""What a sandboxed worker can see and use of the machine, asked from inside by a probe submission.

The probe's functions return what they find (processes, mounts, sockets, the suite's folders, its
uid, how much it could write or fork); the test reads it through the same socket the judge uses and
checks it against the machine seen from outside. The workers are forked from a grading template, as
in batch grading.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest

from conformance.judge.workers import Limits, Template, WorkerConfig, WorkerLink, grading_config, protected_paths
from conformance.worker import cgroups, wire

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="unavailable: a private root, cgroups and a uid of the submission's own need a root grader on Linux",
)

LIMITS = Limits(disk_mb=32, processes=48, cpus=0.5)
PROBE = '''
import os


def look(what):
    try:
        return what()
    except OSError as error:
        return ["error: " + error.strerror]


def build_vocab(sentence):
    """What the worker sees of the machine; `sentence` lists paths to try."""
    return {
        "pids": look(lambda: sorted(p for p in os.listdir("/proc") if p.isdigit())),
        "mounts": look(lambda: [line.split()[1] for line in open("/proc/self/mounts")]),
        "unix": look(lambda: open("/proc/net/unix").read().splitlines()[1:]),
        "tcp": look(lambda: open("/proc/net/tcp").read().splitlines()[1:]),
        "uid": [str(os.getuid()), str(os.getgid())],
        "reachable": [p for p in sentence.split("|") if os.path.exists(p)],
        "cwd": [os.getcwd()],
    }


def token_ids(sentence, vocab):
    """Bytes written to the working directory, 1 MB files, until a write fails."""
    written = 0
    for number in range(1000):
        try:
            with open(f"f{number}", "wb") as handle:
                handle.write(b"x" * 2**20)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            return [written, error.strerror]
        written += 2**20
    return [written, ""]


def embed(ids, table):
    """Children forked (they sleep) until fork fails."""
    import time
    started = 0
    while started < 1000:
        try:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
        except OSError as error:
            return [started, error.strerror]
        started += 1
    return [started, ""]
'''


@pytest.fixture(scope="module")
def template():
    started = Template(LIMITS)
    yield started
    started.close()


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("class")
    (folder / "probe.py").write_text(PROBE)
    (folder / "classmate.py").write_text("SECRET = 1\n")
    return folder / "probe.py"


class Worker:
    """A worker for the probe, forked from the grading template, and its sandbox report."""

    def __init__(self, probe: Path, template: Template) -> None:
        self.config, self.scratch = grading_config(str(probe), ["build_vocab", "token_ids", "embed"], LIMITS)
        self.link = WorkerLink(self.config, template=template.handle)
        self.hello = self.link.receive(60)[0]
        assert self.hello.get("ok"), self.hello

    def call(self, function: str, *args):
        sent, buffers = wire.encode([list(args), {}])
        reply, replied = self.link.request({"op": "call", "function": function, "args": sent[0], "kwargs": sent[1]},
                                           buffers, 60)
        assert reply.get("ok"), reply
        return wire.decode(reply["result"], replied)

    def close(self) -> None:
        self.link.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def workers(probe, template):
    made = [Worker(probe, template), Worker(probe, template)]
    yield made
    for worker in made:
        worker.close()


def test_the_worker_sees_only_its_own_processes_mounts_and_sockets(workers, probe):
    worker = workers[0]
    # the suite, the class, the grader's home and working directory, the machine's sockets and temporary files
    outside = [*protected_paths(), str(probe.parent), str(probe.parent / "classmate.py"), "/home", "/var/run", "/run",
               str(Path.home() / ".bashrc"), str(Path.home() / ".profile"), os.getcwd(), "/tmp/pytest-of-root"]
    seen = worker.call("build_vocab", "|".join(outside))
    assert seen["pids"] == ["1"]  # itself, init of its own PID namespace; nothing of the machine
    assert seen["unix"] == [] and seen["tcp"] == []  # its own empty network namespace
    # only the skeleton's empty folders on the way to what it reads (a venv inside the repository: /work/main)
    bound = [sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(os.__file__))]
    assert [p for p in seen["reachable"] if not any(b.startswith(p.rstrip("/") + "/") for b in bound)] == []
    scratch = str(worker.scratch)
    assert seen["cwd"] == [scratch]
    # the mounts: the skeleton, what it reads (read-only binds), its devices, its own proc and sys, its scratch
    assert "/" in seen["mounts"] and "/proc" in seen["mounts"] and scratch in seen["mounts"]
    allowed = ("/", "/proc", "/sys", "/dev", scratch, "/usr", "/etc", sys.base_prefix, sys.prefix)
    unexpected = [m for m in seen["mounts"] if not m.startswith("/dev/") and m not in allowed
                  and not any(m.startswith(p.rstrip("/") + "/") for p in (sys.base_prefix, sys.prefix, "/usr"))]
    assert unexpected == []


def test_every_layer_is_active_and_the_uid_is_the_submissions_own(workers):
    offered = set(cgroups._hierarchies())
    for worker in workers:
        # every layer, where the grader's cgroups offer the controllers (CI's do); 'cuda' says whether the
        # GPU, where there is one, is usable inside: a capability, not a layer
        inactive = {k: v for k, v in worker.hello["sandbox"].items() if not v.startswith("active") and k != "cuda"
                    and (offered >= {"pids", "cpu", "memory"} or k not in ("cpu", "memory"))}
        assert inactive == {}
    uids = [worker.call("build_vocab", "")["uid"] for worker in workers]
    assert all(uid[0] != "0" and uid[0] == uid[1] for uid in uids)
    assert uids[0] != uids[1]  # two submissions graded at once never share an identity


def test_the_disk_quota_counts_all_files_together(workers):
    written, why = workers[0].call("token_ids", "x", {})
    assert why == "No space left on device"
    assert written <= LIMITS.disk_mb * 2**20 < 2 * written  # the quota, all of it, and no more


def test_processes_stop_at_the_limit_and_the_groups_hold_the_worker(workers):
    worker = workers[1]
    hierarchies = cgroups._hierarchies()
    started, why = worker.call("embed", [0], None)
    assert why and started < LIMITS.processes
    if "pids" not in hierarchies or "cpu" not in hierarchies:  # the watchdog and RLIMIT_NPROC stand in
        assert "watchdog" in worker.hello["sandbox"]["processes"]
        return
    name = f"{cgroups.PREFIX}{worker.link.pid}"

    def group(controller: str) -> Path:  # v2 puts it beside the grader's own group where that holds processes
        own = Path(hierarchies[controller][1])
        return own / name if (own / name).exists() else own.parent / name

    pids = group("pids")
    assert int((pids / "pids.max").read_text()) == LIMITS.processes
    assert int((pids / "pids.current").read_text()) > started  # the children, in the worker's own group
    cpu = group("cpu")
    if (cpu / "cpu.cfs_quota_us").exists():
        share = int((cpu / "cpu.cfs_quota_us").read_text()) / int((cpu / "cpu.cfs_period_us").read_text())
    else:
        quota, period = (cpu / "cpu.max").read_text().split()
        share = int(quota) / int(period)
    assert share == LIMITS.cpus
    worker.link.kill()
    for _ in range(100):  # the keeper removes the groups once the worker has ended
        if not pids.exists():
            break
        time.sleep(0.05)
    assert not pids.exists() and not cpu.exists()


def test_a_grading_template_refuses_a_worker_without_a_sandbox(template, probe):
    link = WorkerLink(WorkerConfig(str(probe), ["build_vocab"]), template=template.handle)
    try:
        hello = link.receive(30)[0]
    finally:
        link.close()
    assert hello == {"ok": False, "error": "this worker template grades: it starts only sandboxed workers"}


def test_the_template_is_reached_by_no_path(template):
    """Its socket has no name on the machine: nothing in /proc/net/unix leads to it."""
    ours = os.fstat(template.socket.fileno()).st_ino
    with open("/proc/net/unix") as handle:
        rows = [line.split() for line in handle.read().splitlines()[1:]]
    named = [row for row in rows if len(row) >= 8 and row[6] == str(ours)]
    assert all(len(row) == 7 for row in named)  # the inode is listed without a path
    assert template.socket.type == socket.SOCK_SEQPACKET
