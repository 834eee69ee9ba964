"""The grading sandbox around a worker, on Linux; each layer is used when the machine allows it.

Layers, applied in this order by the worker shim before the submission is
imported (every one is irrevocable for the process and its descendants):
- rlimits: processes, address space, file size, open files, CPU seconds;
- namespaces: a new PID namespace (the worker is its init: when it dies,
  every process the submission started dies with it) and a new network
  namespace (no network);
- Landlock: read the interpreter, its libraries and the submission's copy;
  write only the scratch directory; no signals or abstract sockets outside;
- an unprivileged uid of the submission's own when the grader is root and the
  interpreter is readable by it.
The private root (privateroot.py) and the limits on processes, CPU and memory
(cgroups.py) are their own modules.

`layers()` says which layers are active and why the others are not, for the
report. Standard library only (ctypes): the worker shim loads it by path.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys

# Linux ABI numbers (the same on x86-64 and arm64: the generic syscall table)
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
UID_BASE = 2_000_000_000  # + the keeper's pid (pid_max is at most 2**22): far from any real user's uid

# Landlock rights: filesystem (v1 has 13, later ABIs add refer, truncate, device ioctl), network, scopes
_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
_V1_ALL = (1 << 13) - 1  # execute ... make symlink
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1, 2
_NET_BIND, _NET_CONNECT = 1, 2


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _fail(what: str) -> str:
    return f"{what}: {os.strerror(ctypes.get_errno())}"


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when there is none."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        version = _libc().syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (OSError, AttributeError):
        return 0
    return max(0, int(version))


def set_rlimits(limits: dict[str, int]) -> list[str]:
    """Apply resource limits (name -> value, e.g. {"AS": bytes}); returns what was set."""
    import resource

    done = []
    for name, value in limits.items():
        if value is None:
            continue
        key = getattr(resource, f"RLIMIT_{name}", None)
        if key is None:
            continue
        try:
            _, hard = resource.getrlimit(key)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(key, (value, value))
            done.append(f"{name}={value}")
        except (ValueError, OSError):
            continue
    return done


def unshare_namespaces() -> tuple[bool, bool, str]:
    """New PID and network namespaces for the children of this process: (pid, net, why not)."""
    if not sys.platform.startswith("linux"):
        return False, False, "not Linux"
    libc = _libc()
    if libc.unshare(CLONE_NEWPID | CLONE_NEWNET) == 0:
        return True, True, ""
    why = _fail("unshare")
    if libc.unshare(CLONE_NEWPID) == 0:
        return True, False, why
    return False, False, why


def die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies."""
    return sys.platform.startswith("linux") and _libc().prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0) == 0


def _readable_by_others(path: str) -> bool:
    """Whether an unprivileged user can reach and read `path` (every ancestor searchable)."""
    path = os.path.realpath(path)
    try:
        mode = os.stat(path).st_mode
        if not mode & stat.S_IROTH:
            return False
        parent = os.path.dirname(path)
        while parent and parent != path:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
            path, parent = parent, os.path.dirname(parent)
    except OSError:
        return False
    return True


def can_drop_privileges(read_paths: list[str]) -> tuple[bool, str]:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False, "the grader is not root (it is already unprivileged)"
    blocked = [p for p in read_paths if os.path.exists(p) and not _readable_by_others(p)]
    if blocked:
        return False, f"{blocked[0]} is not readable by an unprivileged user"
    return True, ""


def submission_uid(keeper: int) -> int:
    """A uid of this submission's own: no user of the machine has it, and no other worker running now
    (the keeper's pid is unique among live processes). RLIMIT_NPROC then counts this submission alone."""
    return UID_BASE + keeper


def drop_to(uid: int, scratch: str) -> None:
    """Become `uid` (group too, no supplementary groups), the scratch dir handed over first."""
    os.chown(scratch, uid, uid)
    for root, directories, files in os.walk(scratch):
        for name in directories + files:
            os.lchown(os.path.join(root, name), uid, uid)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def landlock(read_paths: list[str], write_paths: list[str], hidden: list[str]) -> str:
    """Restrict this process (and its future children) to reading `read_paths` and writing
    `write_paths`; a directory in `read_paths` that contains one of `hidden` is opened entry by
    entry, leaving the hidden ones out. Returns '' on success, else why it is not active."""
    abi = landlock_abi()
    if abi < 1:
        return "the kernel has no Landlock"
    handled = _V1_ALL | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0) | (_IOCTL_DEV if abi >= 5 else 0)
    attr = _RulesetAttr(handled, (_NET_BIND | _NET_CONNECT) if abi >= 4 else 0,
                        (_SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL) if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    libc = _libc()
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return _fail("landlock_create_ruleset")
    hidden_real = {os.path.realpath(h) for h in hidden}
    try:
        for path in _expand(read_paths, hidden_real):
            _allow(libc, ruleset, path, _READ & handled)
        for path in write_paths:
            _allow(libc, ruleset, path, handled)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return _fail("no_new_privs")
        if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
            return _fail("landlock_restrict_self")
    finally:
        os.close(ruleset)
    return ""


def _expand(paths: list[str], hidden: set[str]) -> list[str]:
    """Paths to allow: a directory holding a hidden entry is replaced by its other entries."""
    result = []
    for path in dict.fromkeys(os.path.realpath(p) for p in paths if os.path.exists(p)):
        if path in hidden:
            continue
        inside = [h for h in hidden if h.startswith(path + os.sep)]
        if not inside or not os.path.isdir(path):
            result.append(path)
            continue
        for entry in os.listdir(path):
            result += _expand([os.path.join(path, entry)], hidden)
    return result


def _allow(libc: ctypes.CDLL, ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not os.path.isdir(path):  # files take only file rights
            access &= (1 << 0) | (1 << 1) | (1 << 2) | _TRUNCATE | _IOCTL_DEV
        rule = _PathBeneathAttr(access, fd)
        libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0))
    finally:
        os.close(fd)
