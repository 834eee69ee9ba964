"""Start, talk to and end the worker processes that run the implementation under test.

The judge never imports the implementation. It starts a worker (a fresh
interpreter running conformance/worker/shim.py, or a fork of a template that
has imported torch and numpy), sends plain-data requests over a socket and
reads the replies, while it counts what the worker writes to its stdout and
stderr pipes. A call that runs past its time limit gets the worker killed
from outside; a worker that dies is described from its status pipe ("exit
status 3", "signal SIGKILL"). Either way the next request starts a fresh one.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from conformance.judge.secret import ENV_SEED
from conformance.worker import wire

SHIM = Path(__file__).resolve().parents[1] / "worker" / "shim.py"
KEEP_OUTPUT = 16 * 1024  # bytes of the worker's stdout/stderr kept to show (all of it is counted)
START_TIMEOUT = 120.0  # seconds for a worker to import torch and the implementation
# seconds a started frame may pause while the judge waits for the rest: wire.send encodes first, then writes
# the whole frame in one loop of os.write, so an honest worker's bytes pause only while it is not scheduled
# (a loaded machine, a CPU quota's period: milliseconds) or one of its own threads holds the GIL; 2 s is far
# beyond those, and short enough that half a frame written to the socket by a submission costs little
FRAME_STALL = 2.0
ENV_SPIN = "CONFORMANCE_SPIN"


def spin_seconds() -> float:
    """Seconds judge and worker poll for each other before sleeping: 2 ms for a lone run (nothing else
    wants the CPUs meanwhile); 0 where runs share the CPUs ($CONFORMANCE_SPIN=0: batch, matrix)."""
    try:
        return max(0.0, float(os.environ.get(ENV_SPIN, "0.002")))
    except ValueError:
        return 0.0
# environment a sandboxed worker gets (no secrets of the grader's)
# (LD_LIBRARY_PATH: where a GPU's driver library lies outside the system's folders, as in NVIDIA's containers)
GRADING_ENV = ("PATH", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "SYSTEMROOT", "LD_LIBRARY_PATH")


class WorkerDied(RuntimeError):
    """The worker process ended while the judge waited for it; the message says how."""


class WorkerTimeout(RuntimeError):
    """The worker did not answer in time and was killed."""


def signal_name(number: int) -> str:
    """SIGKILL for 9; 'signal 40' for numbers with no name (real-time signals)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass
class WorkerConfig:
    """What a worker needs to start: plain data only, sent as its first message."""

    target: str
    functions: list[str]
    path: list[str] = field(default_factory=list)  # prepended to the worker's sys.path
    cwd: str = "."
    sandbox: dict | None = None  # scratch, rlimits, protected_paths, protected_modules (grading)
    forbid: list[str] = field(default_factory=list)
    threads: int | None = None
    warm_up: bool = True  # a fresh interpreter warms autograd up in the background (a template did already)
    spin: float = 0.0  # seconds the judge polls for a reply, and the worker for a request, before sleeping

    def message(self) -> dict:
        return {"target": self.target, "functions": self.functions, "path": self.path, "cwd": self.cwd,
                "sandbox": self.sandbox,
                "forbid": self.forbid, "threads": self.threads, "warm_up": self.warm_up, "spin": self.spin}

    def environment(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k in GRADING_ENV} if self.sandbox else dict(os.environ)
        # a coverage run of the suite measures the judge, not the code under test (tracing it would double
        # the cost of every call)
        base = {k: v for k, v in base.items() if not k.startswith("COVERAGE_") and k != ENV_SEED}
        if self.threads:
            base["OMP_NUM_THREADS"] = str(self.threads)
        return base


class WorkerLink:
    """One running worker: its socket, output pipes and status pipe."""

    def __init__(self, config: WorkerConfig, template: str | None = None) -> None:
        judge_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        status_r, status_w = os.pipe()
        given = [worker_end.fileno(), out_w, err_w, status_w]
        self.process: subprocess.Popen | None = None
        try:
            if template:
                config = replace(config, warm_up=False)
                self.pid = _ask_template(template, given)
            else:
                # isolated mode (-I) when grading; otherwise only without the script's folder on sys.path
                # (-P), so a user's PYTHONPATH and user site-packages still reach their implementation
                mode = "-I" if config.sandbox else "-P"
                self.process = subprocess.Popen(
                    [sys.executable, mode, str(SHIM), "--serve", str(given[0]), str(status_w)],
                    pass_fds=(given[0], status_w), stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w,
                    cwd=config.cwd, env=config.environment(),
                )
                self.pid = self.process.pid
        finally:
            worker_end.close()
            for fd in (out_w, err_w, status_w):
                os.close(fd)
        self.sock = judge_end
        self.outputs = {out_r: bytearray(), err_r: bytearray()}
        self.printed = 0  # bytes written to stdout and stderr, in all
        self.status_fd = status_r
        self.reader = wire.Reader()
        self.alive = True
        self.spin = config.spin
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
        wire.send(self.sock.fileno(), config.message())

    # ------------------------------------------------------------------ exchange
    def request(self, document: dict, buffers: list[bytes], timeout: float | None) -> tuple[dict, list[bytes]]:
        wire.send(self.sock.fileno(), document, buffers)
        return self.receive(timeout)

    def receive(self, timeout: float | None) -> tuple[dict, list[bytes]]:
        """The worker's next message. A malformed one (see wire.Reader; also bytes beyond the one reply
        asked for, or a frame that stops arriving for FRAME_STALL seconds) ends the worker at once and
        raises wire.FrameError: the submission can write to this socket, and must not hold the judge
        until the timeout by starting a frame it never finishes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        sock = self.sock.fileno()
        spin_until = time.monotonic() + self.spin
        pending, progress = self.reader.pending, time.monotonic()
        try:
            while True:
                frame = self.reader.frame()
                if frame is not None:
                    if self.reader.pending:
                        raise wire.FrameError(f"{self.reader.pending} bytes beyond its reply")
                    self._drain()
                    return frame
                if self.reader.pending != pending:
                    pending, progress = self.reader.pending, time.monotonic()
                elif pending and time.monotonic() - progress > FRAME_STALL:
                    raise wire.FrameError(f"a frame stopped after {pending} bytes; none came for {FRAME_STALL:g} s")
                if time.monotonic() < spin_until and self._poll_socket():
                    continue
                watched = [sock, *(fd for fd in self.outputs)]
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if pending:  # wake up to see whether the frame stalled
                    stall = max(0.0, progress + FRAME_STALL - time.monotonic()) + 0.01
                    left = stall if left is None else min(left, stall)
                ready, _, _ = select.select(watched, [], [], left)
                if not ready and deadline is not None and time.monotonic() >= deadline:
                    self.kill()
                    raise WorkerTimeout(f"no answer within {timeout:g} s")
                for fd in ready:
                    if fd == sock:
                        chunk = self.sock.recv(1 << 16)
                        if not chunk:
                            self._drain()
                            raise WorkerDied(self.ending())
                        self.reader.feed(chunk)
                    else:
                        self._read_output(fd)
        except wire.FrameError as error:
            self.kill()
            raise wire.FrameError(f"the worker sent a malformed message ({error}); it was ended") from None

    def _poll_socket(self) -> bool:
        """One non-blocking look at the socket. Most replies come within a millisecond: looking
        instead of sleeping in select() saves the wake-up, which costs more than the call on a VM."""
        try:
            chunk = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        if not chunk:
            return False  # the end: select() and recv() below report it
        self.reader.feed(chunk)
        return True

    def _read_output(self, fd: int) -> bool:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return False
        if not chunk:
            self.outputs.pop(fd)
            os.close(fd)
            return False
        self.printed += len(chunk)
        kept = self.outputs[fd]
        if len(kept) < KEEP_OUTPUT:
            kept += chunk[: KEEP_OUTPUT - len(kept)]
        return True

    def _drain(self) -> None:
        """Read what the worker wrote before its reply (it is in the pipes by now)."""
        for fd in list(self.outputs):
            while fd in self.outputs and self._read_output(fd):
                pass

    def output_head(self) -> str:
        return "".join(bytes(kept).decode("utf-8", "replace") for kept in self.outputs.values())

    # ------------------------------------------------------------------ ending
    def ending(self, wait: float = 5.0) -> str:
        """How the worker ended, from its status pipe: 'exit status 3', 'killed by SIGKILL'."""
        self.alive = False
        ready, _, _ = select.select([self.status_fd], [], [], wait)
        text = os.read(self.status_fd, 1024).decode("ascii", "replace") if ready else ""
        kind, _, rest = text.partition(" ")
        number, _, said = rest.partition(" ")  # what the sandbox enforced, in the keeper's words
        said = f" ({''.join(c for c in said if c.isprintable())[:300]})" if said else ""
        if kind == "exit" and number.isdigit():
            return f"exit status {number}{said}"
        if kind == "signal" and number.isdigit():
            return f"killed by {signal_name(int(number))}{said}"
        return "ended without a status"

    def kill(self) -> None:
        """End the worker and everything it started: its keeper kills the inner process (its PID namespace
        goes with it), removes its groups and exits."""
        if self.alive:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.alive = False
        self.close()

    def close(self) -> None:
        """End the worker (nothing more will be asked of it) and release the socket and pipes."""
        if self.alive:
            self.kill()
            return
        if self.sock.fileno() >= 0:
            self.sock.close()
        if self.process is not None:
            self.process.wait()
        for fd in [*self.outputs, self.status_fd]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.outputs, self.status_fd = {}, -1


def plain_config(target: str, functions: list[str]) -> WorkerConfig:
    """A worker for a trusted run: the current directory importable (as `python -m` does), one thread
    (judge and worker take turns; torch's spinning threads would only get in each other's way)."""
    return WorkerConfig(target, functions, path=[os.getcwd()], cwd=os.getcwd(), threads=1, spin=spin_seconds())


_prestarted: dict[str, WorkerLink] = {}


def _key(config: WorkerConfig) -> str:
    import json

    return json.dumps([config.message(), config.cwd], sort_keys=True)


def prestart(config: WorkerConfig) -> None:
    """Start a worker now; the first backend asking for the same configuration takes it over."""
    _prestarted[_key(config)] = WorkerLink(config)


def adopt(config: WorkerConfig) -> WorkerLink | None:
    return _prestarted.pop(_key(config), None)


def _ask_template(handle: str, fds: list[int]) -> int:
    """Ask the template behind the inherited descriptor `handle` for a worker; its pid comes back."""
    reply_here, reply_there = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with socket.socket(fileno=os.dup(int(handle))) as requests:
            socket.send_fds(requests, [b"w"], [*fds, reply_there.fileno()])
        reply_there.close()
        reply_here.settimeout(30)
        answer = reply_here.recv(32)
    except (OSError, ValueError) as error:
        raise WorkerDied(f"the worker template did not start a worker ({error})") from None
    finally:
        reply_here.close()
        reply_there.close()
    if not answer.isdigit():
        raise WorkerDied("the worker template did not start a worker")
    return int(answer)


class Template:
    """A process that has imported torch and numpy (nothing of the suite) and forks workers on request.

    Used by batch grading and the mutation matrix: a worker then starts in milliseconds, not seconds.
    It is reached through a descriptor this process holds (`handle`; processes forked from this one
    inherit it, a child started with `pass_fds` too), never through a path: a submission has no name
    to connect to. Given `limits`, it is a grading template: it forks only sandboxed workers, on those
    limits, whatever a start message asks.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        try:  # one request, one message, whichever judge sends it; the template sees the end when all have gone
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except (AttributeError, OSError):  # macOS has no unix SOCK_SEQPACKET: datagrams (the template watches its parent)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        command = [sys.executable, "-I", str(SHIM), "--template", str(theirs.fileno())]
        if limits is not None:
            command += ["--grading", json.dumps(limits.enforced())]
        self.process = subprocess.Popen(
            command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if k in GRADING_ENV},
        )
        theirs.close()
        self.socket = ours
        self.handle = str(ours.fileno())

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.socket.close()


# ------------------------------------------------------------------------------------ grading
PROTECTED_MODULES = ("impl", "golden", "spec", "conformance", "tests")
MAX_SUBMISSION_BYTES = 64 * 2**20


def protected_paths() -> list[str]:
    """The suite's own folders: the golden files, the reference, the spec, the suite and its tests."""
    import conformance
    import golden
    import spec

    root = Path(conformance.__file__).resolve().parents[1]
    paths = [Path(m.__file__).resolve().parent for m in (conformance, golden, spec)]
    paths += [root / name for name in ("impl", "tests") if (root / name / "__init__.py").is_file()]
    return [str(p) for p in dict.fromkeys(paths)]


def copy_submission(target: str, scratch: Path) -> str:
    """Copy a file or package target into scratch/submission/ and return the target for the copy.

    Only the submission itself is copied (not its neighbours: in a class folder those are
    classmates); symbolic links are copied as links, so they lead nowhere readable.
    """
    from conformance.worker.loader import LoadError, parse_target

    parsed = parse_target(target)
    if parsed.path is None:
        raise LoadError(f"grading needs a file or a package directory, not the module name {target!r}")
    source = parsed.path.expanduser().resolve()
    if not source.exists():
        raise LoadError(f"no such file or directory: {source}")
    destination = scratch / "submission" / source.name
    destination.parent.mkdir(parents=True)
    if source.is_dir():
        size = sum(p.stat().st_size for p in source.rglob("*") if p.is_file() and not p.is_symlink())
        if size > MAX_SUBMISSION_BYTES:
            raise LoadError(f"{source} holds {size:,} bytes; a submission may hold at most {MAX_SUBMISSION_BYTES:,}")
        shutil.copytree(source, destination, symlinks=True)
    else:
        if source.stat().st_size > MAX_SUBMISSION_BYTES:
            raise LoadError(f"{source} is larger than {MAX_SUBMISSION_BYTES:,} bytes")
        shutil.copyfile(source, destination)
    return str(destination) + (f":{parsed.attribute}" if parsed.attribute else "")


@dataclass
class Limits:
    """Resource limits of a sandboxed worker (all of its processes together, where the machine allows)."""

    memory_mb: int = 8192  # the memory cgroup; RLIMIT_AS caps each process too
    output_mb: int = 16  # the largest file (RLIMIT_FSIZE)
    disk_mb: int = 256  # all files of the scratch dir together (a tmpfs of that size)
    cpus: float = 1.0  # a share of the CPUs (the cpu cgroup), so that classmates graded beside keep theirs
    cpu_seconds: int = 1800  # CPU time of all processes together
    processes: int = 256  # processes and threads (the pids cgroup; RLIMIT_NPROC for the submission's uid)
    open_files: int = 1024

    def rlimits(self) -> dict[str, int]:
        return {"AS": self.memory_mb * 2**20, "FSIZE": self.output_mb * 2**20, "CPU": self.cpu_seconds,
                "NPROC": self.processes, "NOFILE": self.open_files}

    def enforced(self) -> dict:
        """What a worker's sandbox takes from these limits (the start message's and a grading template's)."""
        return {"rlimits": self.rlimits(), "disk_mb": self.disk_mb, "cpus": self.cpus, "cpu_seconds": self.cpu_seconds,
                "processes": self.processes, "memory_mb": self.memory_mb}


def grading_config(target: str, functions: list[str], limits: Limits, forbid: list[str] = (),
                   threads: int | None = 1, hidden: list[str] = ()) -> tuple[WorkerConfig, Path]:
    """A sandboxed worker's configuration, with its scratch directory (the caller removes it).

    `hidden`: folders the worker must not see even where they lie inside what it reads (the reports);
    the suite's folders and the submission's own folder (its classmates) are always hidden."""
    scratch = Path(tempfile.mkdtemp(prefix="attention-scratch-"))
    try:
        copied = copy_submission(target, scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    from conformance.worker.loader import parse_target

    folder = str(parse_target(target).path.expanduser().resolve().parent)
    box = {"scratch": str(scratch), **limits.enforced(), "protected_paths": protected_paths(),
           "protected_modules": list(PROTECTED_MODULES), "hidden": [folder, *hidden]}
    config = WorkerConfig(copied, functions, cwd=str(scratch), sandbox=box, forbid=list(forbid), threads=threads,
                          spin=spin_seconds())
    return config, scratch
