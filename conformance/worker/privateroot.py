"""A private view of the machine for the worker: its own mount namespace and root.

Built by the inner process (init of the worker's PID namespace, still privileged) before it
loads the submission. The new root is an empty tmpfs holding only:
- read-only binds of what the worker must read (the interpreter, its libraries, /usr, /etc),
  with every folder of the suite, the class and the reports that falls inside one covered by an
  empty read-only tmpfs, and every such file (a rubric) by an empty read-only file;
- a fresh procfs for the worker's own PID namespace (no process outside the submission shows, nor
  the machine's sockets: /proc/net follows the worker's empty network namespace);
- /dev with the few harmless nodes (null, zero, full, random, urandom) and the GPU's, /sys read-only
  without its cgroup mounts;
- the scratch dir, at its own path, as a tmpfs of a fixed size (the submission's disk quota): what
  the submission writes there disappears with the namespace, however its run ended.
Then pivot_root into it and detach the old root: no path leads back to the machine's files.

Standard library only (ctypes): the worker shim loads it by path.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41}.get(platform.machine())
DEVICES = ("null", "zero", "full", "random", "urandom")
ROOT_SIZE = "4m"  # the skeleton: directories and mount points only


class RootError(OSError):
    """A step of building the private root failed; the message says which."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        raise RootError(f"{what}: {os.strerror(ctypes.get_errno())}")


def _mount(source: str | None, target: str, kind: str | None, flags: int, data: str | None = None) -> None:
    encode = (lambda s: None if s is None else s.encode())
    _check(_libc().mount(encode(source), encode(target), encode(kind), ctypes.c_ulong(flags), encode(data)),
           f"mount {kind or source or ''} on {target}")


def _bind(source: str, target: str, writable: bool = False) -> None:
    _mount(source, target, None, MS_BIND)
    if not writable:
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def plan(reads: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(folders and files to bind, outermost first; top-level symbolic links to recreate as (path, target))."""
    links, binds = [], []
    for path in reads:
        if not path or not os.path.isabs(path):
            continue
        path = os.path.normpath(path)
        if os.path.dirname(path) == "/" and os.path.islink(path):  # /bin -> usr/bin on a merged /usr
            links.append((path, os.readlink(path)))
        real = os.path.realpath(path)
        if os.path.exists(real) and real not in ("/", "/proc", "/sys", "/dev"):
            binds.append(real)
    binds = sorted(set(binds), key=lambda p: (p.count("/"), p))
    kept: list[str] = []
    for path in binds:
        if not any(_inside(path, outer) for outer in kept):
            kept.append(path)
    return kept, sorted(set(links))


def enter(reads: list[str], hidden: list[str], scratch: str, disk_bytes: int, uid: int | None,
          gpu_devices: list[str]) -> list[str]:
    """Build the private root and move this process into it (it must be alone in a new PID namespace
    and privileged). Returns the folders bound, for Landlock's rules. Raises RootError."""
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare(mount namespace)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here propagates back to the machine
    os.umask(0o022)
    new_root = os.path.join(scratch, ".root")
    os.makedirs(new_root, exist_ok=True)
    _mount("tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, f"size={ROOT_SIZE},mode=755")
    binds, links = plan(reads)
    for link, target in links:
        os.symlink(target, new_root + link)
    for path in binds:
        where = new_root + path
        if os.path.isdir(path):
            os.makedirs(where, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(where), exist_ok=True)
            open(where, "w").close()
        _bind(path, where)
    # the suite, the class, the reports and the rubric stay out even where they lie inside a bound folder:
    # an empty read-only tmpfs over a folder, an empty read-only file over a file
    empty = new_root + "/.empty"
    open(empty, "w").close()
    os.chmod(empty, 0o444)
    for path in sorted({os.path.realpath(h) for h in hidden}):
        if not any(_inside(path, b) for b in binds):
            continue
        if os.path.isdir(path):
            _mount("tmpfs", new_root + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=555")
        elif os.path.exists(path):
            _bind(empty, new_root + path)
    _devices(new_root, gpu_devices)
    os.makedirs(new_root + "/proc")
    _mount("proc", new_root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(new_root + "/sys")
    _bind("/sys", new_root + "/sys")  # not recursive: the cgroup and debug mounts under it stay out
    os.makedirs(new_root + "/tmp", mode=0o755, exist_ok=True)
    # the scratch dir, at its own path, sized: the submission's copy goes in, its writes stay in
    box = new_root + scratch
    os.makedirs(box, exist_ok=True)
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    _mount("tmpfs", box, "tmpfs", MS_NOSUID | MS_NODEV, f"size={disk_bytes},mode=700{owner}")
    submission = os.path.join(scratch, "submission")
    if os.path.isdir(submission):
        shutil.copytree(submission, box + "/submission", symlinks=True)
    if uid is not None:
        for folder, directories, files in os.walk(box):
            for name in [folder, *(os.path.join(folder, n) for n in directories + files)]:
                os.lchown(name, uid, uid)
    # into the new root; the old one detached, so that no path leads back
    os.makedirs(new_root + "/.old")
    if SYS_PIVOT_ROOT is None:
        raise RootError(f"pivot_root: unknown system call number on {platform.machine()}")
    _check(libc.syscall(SYS_PIVOT_ROOT, new_root.encode(), (new_root + "/.old").encode()), "pivot_root")
    try:
        os.chdir("/")
        _check(libc.umount2(b"/.old", MNT_DETACH), "umount the old root")
        os.rmdir("/.old")
        _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.chdir(scratch)
    except BaseException as error:  # noqa: BLE001 - the machine's root may still be reachable: never serve
        os.write(2, f"the private root could not be finished: {error}\n".encode())
        os._exit(71)
    return binds


def _devices(new_root: str, gpu_devices: list[str]) -> None:
    dev = new_root + "/dev"
    os.makedirs(dev)
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for name in [*DEVICES, *gpu_devices]:
        source = f"/dev/{name}"
        if os.path.exists(source):
            open(f"{dev}/{name}", "w").close()
            _bind(source, f"{dev}/{name}", writable=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    _mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


def gpu_devices() -> list[str]:
    """The GPU's device nodes on this machine (NVIDIA's), for a worker that may use CUDA."""
    try:
        return sorted(n for n in os.listdir("/dev") if n.startswith("nvidia") and not os.path.isdir(f"/dev/{n}"))
    except OSError:
        return []
