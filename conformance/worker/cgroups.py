"""Limits per submission on processes, CPU and memory: cgroups (v1 or v2) where the grader can make
groups, else a watchdog. Used by the keeper (the worker's outer process, which runs no submission code).

The keeper makes one group per worker, for each controller it can use, under the group the grader
itself is in (so a grader confined by its own container or service stays confined), writes the
limits, moves the inner process in before it runs anything of the submission, and removes the groups
once the worker has ended. Groups are named after the keeper's pid; a group whose keeper is gone (a
keeper killed outright) is removed by the next keeper that starts.

Where a controller is missing, the watchdog stands in: the keeper counts the worker's processes and
their CPU time from /proc every poll and ends the worker above the limit. RLIMIT_NPROC cannot (the
kernel exempts root from it, and a grader is often root), RLIMIT_CPU counts one process at a time.

Standard library only: the worker shim loads it by path.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

PREFIX = "attention-worker-"
PERIOD_US = 100_000  # the CFS period the cpu quota is a share of


@dataclass
class Request:
    """The limits one worker gets; None leaves a limit out."""

    processes: int | None = None
    cpus: float | None = None  # a share of the machine's CPUs (1.0: one CPU's worth)
    memory_bytes: int | None = None
    cpu_seconds: float | None = None  # CPU time of all the worker's processes together


@dataclass
class Groups:
    """The worker's groups (controller -> directory) and what each limit is enforced by."""

    request: Request
    paths: dict[str, str] = field(default_factory=dict)
    version: int = 0
    why_not: str = ""
    hit: str = ""  # the limit the watchdog or a group enforced by ending the worker, in words

    # ------------------------------------------------------------------ creation
    @classmethod
    def make(cls, request: Request, keeper: int) -> Groups:
        groups = cls(request)
        try:
            hierarchies = _hierarchies()
        except OSError as error:
            groups.why_not = f"cannot read the cgroup hierarchies: {error.strerror}"
            return groups
        wanted = {"pids": request.processes, "cpu": request.cpus, "memory": request.memory_bytes,
                  "cpuacct": request.cpu_seconds}
        missing = [c for c, value in wanted.items() if value is not None and c not in hierarchies and c != "cpuacct"]
        wanted = [c for c, value in wanted.items() if value is not None and c in hierarchies]
        problems = [f"{c}: the grader's cgroup offers no {c} controller" for c in missing]
        unified = [c for c in wanted if hierarchies[c][0] == 2]
        if unified:
            problems += groups._make_unified(unified, hierarchies[unified[0]][1], keeper)
        for controller in (c for c in wanted if hierarchies[c][0] == 1):
            parent = hierarchies[controller][1]
            _sweep_stale(parent)
            path = os.path.join(parent, f"{PREFIX}{keeper}")
            try:
                if path not in groups.paths.values():  # controllers mounted together share a group
                    os.mkdir(path)
                groups._limit(controller, 1, path)
            except OSError as error:
                problems.append(f"{controller}: {error.strerror}")
                _remove(path)
                continue
            groups.paths[controller] = path
            groups.version = 1
        groups.why_not = "; ".join(problems) if problems or groups.paths else \
            "no cgroup controller (pids, cpu, memory) the grader may use"
        return groups

    def _make_unified(self, controllers: list[str], own: str, keeper: int) -> list[str]:
        """v2: one group for every controller. Under the grader's own group where its controllers can be
        enabled; where that group holds processes itself (v2 lets a group with processes give controllers to
        none of its children), beside it: its parent enables them already."""
        problems = []
        for parent in (own, os.path.dirname(own)):
            _sweep_stale(parent)
            path = os.path.join(parent, f"{PREFIX}{keeper}")
            try:
                os.mkdir(path)
                for controller in controllers:
                    if parent == own:
                        _enable(parent, controller)
                    self._limit(controller, 2, path)
            except OSError as error:
                problems.append(f"{', '.join(controllers)} in {parent}: {error.strerror}")
                _remove(path)
                continue
            self.paths = {controller: path for controller in controllers}
            self.version = 2
            return []
        return problems

    def _limit(self, controller: str, version: int, path: str) -> None:
        request = self.request
        if controller == "pids":
            _write(path, "pids.max", str(request.processes))
        elif controller == "cpu":
            quota = max(1000, int(request.cpus * PERIOD_US))
            if version == 2:
                _write(path, "cpu.max", f"{quota} {PERIOD_US}")
            else:
                _write(path, "cpu.cfs_period_us", str(PERIOD_US))
                _write(path, "cpu.cfs_quota_us", str(quota))
        elif controller == "memory":
            if version == 2:
                _write(path, "memory.max", str(request.memory_bytes))
                _write(path, "memory.swap.max", "0", missing_ok=True)
            else:
                _write(path, "memory.limit_in_bytes", str(request.memory_bytes))

    def add(self, pid: int) -> None:
        """Move a process (the inner one, before it runs submission code) into every group."""
        for controller, path in list(self.paths.items()):
            try:
                _write(path, "cgroup.procs", str(pid))
            except OSError as error:
                self.paths.pop(controller)
                _remove(path)
                self.why_not = f"{controller}: {error.strerror}"

    # ------------------------------------------------------------------ reading
    def cpu_seconds(self) -> float | None:
        """CPU time the group's processes have used, where a controller counts it."""
        for controller, name, scale in (("cpuacct", "cpuacct.usage", 1e-9), ("cpu", "cpuacct.usage", 1e-9)):
            path = self.paths.get(controller)
            if path and os.path.exists(os.path.join(path, name)):
                try:
                    return int(_read(path, name)) * scale
                except (OSError, ValueError):
                    return None
        path = self.paths.get("cpu") if self.version == 2 else None
        if path:
            try:
                for line in _read(path, "cpu.stat").splitlines():
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) * 1e-6
            except (OSError, ValueError):
                return None
        return None

    def events(self) -> list[str]:
        """Limits the kernel enforced (a fork refused, an out-of-memory kill), in words."""
        said = []
        request = self.request
        try:
            if "pids" in self.paths:
                for line in _read(self.paths["pids"], "pids.events").splitlines():
                    key, _, value = line.partition(" ")
                    if key == "max" and int(value) > 0:
                        said.append(f"{value} process starts refused at the limit of {request.processes} processes")
            if "memory" in self.paths:
                name = "memory.events" if self.version == 2 else "memory.oom_control"
                for line in _read(self.paths["memory"], name).splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        said.append(f"killed for memory above {request.memory_bytes // 2**20} MB")
        except (OSError, ValueError):
            pass
        return said

    # ------------------------------------------------------------------ ending
    def remove(self) -> None:
        """Kill whatever is left in the groups and remove them."""
        for path in self.paths.values():
            for _ in range(50):
                try:
                    pids = [int(p) for p in _read(path, "cgroup.procs").split()]
                except (OSError, ValueError):
                    pids = []
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                if _remove(path):
                    break
                time.sleep(0.01)
        self.paths = {}

    def describe(self) -> dict[str, str]:
        """The sandbox report's lines for the limits cgroups enforce; the watchdog's are the keeper's."""
        request, lines = self.request, {}
        kind = f"cgroup v{self.version}" if self.version else ""
        if request.processes is not None:
            lines["processes"] = (f"active: at most {request.processes} (pids {kind})" if "pids" in self.paths
                                  else f"active: at most {request.processes} (watchdog; no pids cgroup: {self.why_not})")
        if request.cpus is not None:
            lines["cpu"] = (f"active: {request.cpus:g} CPU (cpu {kind})" if "cpu" in self.paths
                            else f"inactive (no cpu cgroup: {self.why_not})")
        if request.cpu_seconds is not None:
            counted = "cpuacct" in self.paths or ("cpu" in self.paths and self.version == 2)
            lines["cpu time"] = f"active: {request.cpu_seconds:g} s for all processes together " \
                                f"({'counted by the cgroup' if counted else 'watchdog, from /proc'})"
        if request.memory_bytes is not None:
            lines["memory"] = (f"active: {request.memory_bytes // 2**20} MB for all processes together (memory {kind})"
                               if "memory" in self.paths else f"inactive (no memory cgroup: {self.why_not}); "
                                                              f"RLIMIT_AS still caps each process")
        return lines


# ------------------------------------------------------------------------------ the watchdog
def descendants(pid: int) -> list[int]:
    """pid and every process below it, from /proc/<pid>/task/<tid>/children."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo += [int(child) for child in handle.read().split()]
        except (OSError, ValueError):
            continue
    return found


def cpu_seconds_of(pids: list[int], root: int) -> float:
    """CPU time of the live processes, plus what the root's reaped children used."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue
        # after the command: state is field 3, utime 14, stime 15, cutime 16, cstime 17 (1-based, man 5 proc)
        used = int(fields[11]) + int(fields[12])
        if pid == root:
            used += int(fields[13]) + int(fields[14])
        total += used / ticks
    return total


class Watchdog:
    """Checks the worker's processes and CPU time at each poll of the keeper."""

    def __init__(self, groups: Groups, inner: int) -> None:
        self.groups, self.inner = groups, inner

    def over(self) -> str:
        """'' while within the limits; else which limit the worker broke, in words."""
        request = self.groups.request
        pids: list[int] | None = None
        if request.processes is not None and "pids" not in self.groups.paths:
            pids = descendants(self.inner)
            if len(pids) > request.processes:
                return f"more than {request.processes} processes"
        if request.cpu_seconds is not None:
            used = self.groups.cpu_seconds()
            if used is None:
                used = cpu_seconds_of(pids if pids is not None else descendants(self.inner), self.inner)
            if used > request.cpu_seconds:
                return f"more than {request.cpu_seconds:g} CPU seconds"
        return ""


# ------------------------------------------------------------------------------ helpers
def _hierarchies() -> dict[str, tuple[int, str]]:
    """controller -> (version, the grader's own group directory) for the controllers this machine has."""
    mounts: dict[str, tuple[int, str, str]] = {}  # controller -> (version, mount point, mount root)
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) < 5 or len(tail) < 3:
                continue
            kind, options = tail[0], tail[2].split(",")
            if kind == "cgroup":
                for controller in ("pids", "cpu", "cpuacct", "memory"):
                    if controller in options:
                        mounts.setdefault(controller, (1, fields[4], fields[3]))
            elif kind == "cgroup2":
                mounts.setdefault("unified", (2, fields[4], fields[3]))
    membership: dict[str, str] = {}
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else ["unified"]:
                membership[controller] = path
    found: dict[str, tuple[int, str]] = {}
    for controller, (version, point, root) in mounts.items():
        path = membership.get(controller)
        if path is None:
            continue
        relative = path[len(root):] if root != "/" and path.startswith(root) else path
        found[controller] = (version, os.path.normpath(point + "/" + relative.lstrip("/")))
    if "unified" in found:  # v2 serves every controller its group offers that v1 does not
        version, parent = found.pop("unified")
        try:
            offered = _read(parent, "cgroup.controllers").split()
        except OSError:
            offered = []
        for controller in ("pids", "cpu", "memory"):
            if controller in offered and controller not in found:
                found[controller] = (version, parent)
    return found


def _enable(parent: str, controller: str) -> None:
    """v2: a group's controllers must be enabled in its parent's subtree_control."""
    if controller not in _read(parent, "cgroup.subtree_control").split():
        _write(parent, "cgroup.subtree_control", f"+{controller}")


def _sweep_stale(parent: str) -> None:
    """Remove groups left by keepers that were killed before they could clean up."""
    try:
        names = [n for n in os.listdir(parent) if n.startswith(PREFIX)]
    except OSError:
        return
    for name in names:
        keeper = name[len(PREFIX):]
        if keeper.isdigit() and not os.path.exists(f"/proc/{keeper}"):
            _remove(os.path.join(parent, name))


def _remove(path: str) -> bool:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def _read(path: str, name: str) -> str:
    with open(os.path.join(path, name)) as handle:
        return handle.read()


def _write(path: str, name: str, value: str, missing_ok: bool = False) -> None:
    try:
        with open(os.path.join(path, name), "w") as handle:
            handle.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise
