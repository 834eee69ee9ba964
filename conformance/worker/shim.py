"""The worker: the only process in which the implementation under test runs.

Started by the judge as `python -I shim.py --serve SOCKET STATUS` (a fresh
interpreter) or forked from a template (`--template LISTEN`) that has imported
torch and numpy and nothing else. It imports nothing of the suite: its
siblings wire.py, loader.py and sandbox.py are standard-library modules it
loads by path. It knows no expected value, tolerance or score.

Life of a worker:
1. read the start message (target, sys.path, scratch dir, sandbox, forbidden
   helpers, function names to look for);
2. split in two: an outer process that waits and reports how the inner one
   ended on the status pipe, and the inner one (init of a new PID namespace
   when the machine allows), which applies the sandbox, imports the target and
   serves calls until the judge closes the socket.

Requests (plain data, see wire.py): call (function, args, kwargs) -> result,
the inputs as they are after the call, whether the outputs carry gradients;
vjp (the same call plus cotangents) -> gradients of the inputs;
bench (a measurement plan, see bench.py) -> times and peak memory, measured here.

The implementation gets and returns the arrays its CAPABILITIES['array']
names: torch tensors, numpy arrays or jax arrays. jax is never imported by
the worker itself before the target is (a template stays torch and numpy
only): only a worker whose implementation declares jax sets it up.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import select
import signal
import socket
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MESSAGE_LIMIT = 600  # characters of an exception message sent back


def _sibling(name: str):
    """Load wire/loader/sandbox from this folder without importing the suite's packages."""
    qualified = f"_attention_worker_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


wire = _sibling("wire")
loader = _sibling("loader")
sandbox = _sibling("sandbox")
cgroups = _sibling("cgroups")
privateroot = _sibling("privateroot")


# ------------------------------------------------------------------------------ the served namespace
class Worker:
    def __init__(self, sock: int, config: dict) -> None:
        self.sock = sock
        self.connection = socket.socket(fileno=os.dup(sock))
        self.config = config
        self.reader = wire.Reader()
        self.array = "torch"
        self.functions: dict[str, object] = {}
        self.violations: list[str] = []
        self.forbidden_used: list[str] = []

    # -------------------------------------------------------------- messages
    def receive(self) -> tuple[object, list[bytes]] | None:
        # the next request usually follows within a few milliseconds: polling for it first saves a
        # wake-up from sleep, which costs more than a small call on a virtual machine
        spin_until = time.monotonic() + self.config.get("spin", 0.0)
        while True:
            frame = self.reader.frame()
            if frame is not None:
                return frame
            flags = socket.MSG_DONTWAIT if time.monotonic() < spin_until else 0
            try:
                chunk = self.connection.recv(1 << 16, flags)
            except BlockingIOError:
                continue
            if not chunk:
                return None
            self.reader.feed(chunk)

    def reply(self, document: dict, buffers: list[bytes] = ()) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        document["violations"], self.violations = self.violations, []
        document["forbidden"], self.forbidden_used = self.forbidden_used, []
        wire.send(self.sock, document, list(buffers))

    # -------------------------------------------------------------- loading
    def load(self) -> dict:
        try:
            namespace, name = loader.load_target(self.config["target"])
        except loader.LoadError as error:
            return {"ok": False, "error": wire.explain_load_error(str(error))[:2000]}
        declared = getattr(namespace, "CAPABILITIES", None)
        document, buffers = wire.encode(declared)
        if buffers:
            document = {"$other": "CAPABILITIES holding arrays"}
        if isinstance(declared, dict) and declared.get("array") in ("numpy", "jax"):
            self.array = declared["array"]
        if self.array == "jax":
            # imported here, never before: only a worker whose implementation declares jax pays for it
            why = wire.start_jax()
            if why:
                return {"ok": False, "error": f"{name}: {why}"}
        functions = {}
        notebook = str(getattr(namespace, "__file__", "") or "").endswith(".ipynb")
        for function in self.config["functions"]:
            candidate = getattr(namespace, function, None)
            # a package's submodule of that name (dave/attention.py) is not the function
            if candidate is None or inspect.ismodule(candidate):
                continue
            if notebook and not inspect.isfunction(candidate):
                # a notebook's globals are its variables too: the seed's own `embed = nn.Embedding(6, 16)`
                loader.notes.append(f"{function} is a {type(candidate).__name__} in the notebook, not a function "
                                    f"defined with def: not checked")
                continue
            if not callable(candidate):
                functions[function] = {"callable": False, "type": type(candidate).__name__}
                continue
            self.functions[function] = candidate
            functions[function] = {"callable": True, **_signature(candidate)}
        notes = [str(note)[:300] for note in loader.notes[:50]]  # what loading set aside (notebook cells)
        return {"ok": True, "name": name, "capabilities": document, "functions": functions, "notes": notes}

    # -------------------------------------------------------------- calls
    def arguments(self, document: dict, buffers: list[bytes]) -> tuple[list, dict]:
        devices = ("cpu", "cuda")
        args = wire.decode(document["args"], buffers, self.array, devices, grad=True)
        kwargs = wire.decode(document["kwargs"], buffers, self.array, devices, grad=True)
        return args, kwargs

    def call(self, document: dict, buffers: list[bytes]) -> None:
        function = self.functions[document["function"]]
        args, kwargs = self.arguments(document, buffers)
        reply: dict = {"ok": True}
        try:
            with loader.discarded_output(document.get("quiet") is True):  # the judge saw this function flood
                seed_generator(self.array, document.get("seed"))
                result = function(*args, **kwargs)
            encoded, out_buffers = wire.encode(result)
            reply["result"] = encoded
        except BaseException as error:  # noqa: BLE001 - exit() and friends are results here
            reply, out_buffers = {"ok": False, "error": _error(error)}, []
        # the inputs as they are now, whether the call returned or not: the judge compares them
        after, after_buffers = wire.encode([args, kwargs])
        self.reply({**reply, "after": after, "after_offset": len(out_buffers)}, out_buffers + after_buffers)

    def vjp(self, document: dict, buffers: list[bytes]) -> None:
        import torch

        function = self.functions[document["function"]]
        args, kwargs = self.arguments(document, buffers)
        cotangents = wire.decode(document["cotangents"], buffers, "torch", ("cpu", "cuda"))
        inputs = [t for t in wire.tensors([args, kwargs]) if t.requires_grad]
        try:
            with torch.enable_grad(), loader.discarded_output(document.get("quiet") is True):
                seed_generator(self.array, document.get("seed"))  # the same draws as the call differentiated
                outputs = wire.tensors(function(*args, **kwargs))
                pairs = [(o, c) for o, c in zip(outputs, cotangents) if c is not None and o.requires_grad]
                # backward() into the fresh leaves, as training code takes gradients: modules built on reentrant
                # checkpointing refuse torch.autograd.grad(), and their gradients are judged all the same
                if pairs:
                    torch.autograd.backward([o for o, _ in pairs], [c.to(o) for o, c in pairs])
                grads = [t.grad for t in inputs]
        except BaseException as error:  # noqa: BLE001
            self.reply({"ok": False, "error": _error(error)})
            return
        encoded, out_buffers = wire.encode(list(grads))
        self.reply({"ok": True, "grads": encoded}, out_buffers)

    def serve(self) -> None:
        hello = self.load()
        self.reply({**hello, "sandbox": self.config.get("layers", {})})
        if not hello["ok"]:
            return
        while True:
            frame = self.receive()
            if frame is None:
                return
            document, buffers = frame
            if not isinstance(document, dict):
                return
            op = document.get("op")
            if op == "call":
                self.call(document, buffers)
            elif op == "vjp":
                self.vjp(document, buffers)
            elif op == "bench":  # issue 20: timed and weighed here, in the implementation's process (bench.py)
                self.reply(_sibling("bench").serve(self.functions, self.array, document, wire))
            else:
                return


def seed_generator(array: str, seed: object) -> None:
    """Seed the global generator the implementation's array library draws from, right before a call
    (QKV-DROPOUT: a kernel's dropout must be reproducible from the seed): torch.manual_seed, which seeds every
    device, for torch; numpy.random.seed (the legacy global generator) for numpy. jax has no global generator
    (jax.random takes its key as an argument), so a jax implementation cannot claim dropout: nothing to seed.
    Imported here, not at module level: the worker stays standard-library only until it serves."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        return
    if array == "torch":
        import torch

        torch.manual_seed(seed)
    elif array == "numpy":
        import numpy

        numpy.random.seed(seed % 2**32)


def _signature(function) -> dict:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # builtins and C functions: their docstring, else any keyword is assumed taken
        return _documented_signature(function) or {"parameters": None, "varkw": True}
    # required: the parameters without a default (a kernel that requires cu_seqlens_q takes packs only)
    required = [name for name, p in parameters.items()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return {"parameters": list(parameters), "varkw": any(p.kind is p.VAR_KEYWORD for p in parameters.values()),
            "required": required}


def _documented_signature(function) -> dict | None:
    """Parameter names from a builtin's docstring, where torch's C functions state them
    ("scaled_dot_product_attention(query, key, value, attn_mask=None, ...) -> Tensor")."""
    name, doc = getattr(function, "__name__", ""), getattr(function, "__doc__", None)
    if not isinstance(name, str) or not isinstance(doc, str) or not name:
        return None
    match = re.match(rf"\s*{re.escape(name)}\(([^)]*)\)", doc)
    if not match:
        return None
    names, varkw = [], False
    for part in match.group(1).split(","):
        part = part.split("=")[0].split(":")[0].strip()
        varkw = varkw or part.startswith("**")
        part = part.lstrip("*")
        if part in ("", "/"):
            continue
        if not part.isidentifier():
            return None
        names.append(part)
    return {"parameters": names, "varkw": varkw}


def _error(error: BaseException) -> dict:
    frames = loader.submission_frames(error)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    try:
        message = str(error)
    except BaseException:  # noqa: BLE001 - a __str__ that raises is the submission's business
        message = "<unprintable>"
    code = error.code if isinstance(error, SystemExit) and isinstance(error.code, (int, str, type(None))) else None
    return {"type": type(error).__name__[:80], "message": message[:MESSAGE_LIMIT], "where": where[:200],
            "exit": isinstance(error, SystemExit), "code": code if not isinstance(code, str) else code[:80],
            "lineage": [c.__name__[:80] for c in type(error).__mro__][:12]}


# ------------------------------------------------------------------------------ grading-time guards
def record_violations(worker: Worker, protected_paths: list[str], protected_modules: list[str]) -> None:
    """Name reads of the answer (Landlock refuses them; this only says what was tried)."""
    paths = tuple(os.path.realpath(p) for p in protected_paths)
    modules = set(protected_modules)
    own = str(HERE)  # the shim's own files (tracebacks read their lines) are not the answer

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], (str, bytes)):
            raw = args[0].decode(errors="replace") if isinstance(args[0], bytes) else args[0]
            path = os.path.realpath(raw)
            if path.startswith(paths) and not path.startswith(own):
                _note(worker, f"opened {path}: reading the golden files, the suite or the course's files is not allowed while grading")
        elif event == "import" and args and isinstance(args[0], str) and args[0].split(".")[0] in modules:
            _note(worker, f"imported {args[0]}: importing the reference or the suite is not allowed while grading")

    sys.addaudithook(hook)


def _note(worker: Worker, message: str) -> None:
    if message not in worker.violations:
        worker.violations.append(message)


def forbid(worker: Worker, names: list[str]) -> list[str]:
    """Make each listed callable raise when submission code calls it (a course rule)."""
    done = []
    for name in names:
        module_name, _, attribute = name.rpartition(".")
        try:
            module = importlib.import_module(module_name)
            original = getattr(module, attribute)
        except (ImportError, AttributeError, ValueError):
            continue
        setattr(module, attribute, _forbidden(worker, name, original))
        done.append(name)
    return done


def _forbidden(worker: Worker, name: str, original):
    message = f"{name} is not allowed in this course (rubric: forbid); write the computation yourself"
    library = os.path.dirname(sys.modules[name.split(".")[0]].__file__)

    def from_library() -> bool:  # the library's own internals may still use it
        return sys._getframe(2).f_code.co_filename.startswith(library)

    if isinstance(original, type):
        class Forbidden(original):
            def __init__(self, *args, **kwargs):
                if not from_library():
                    worker.forbidden_used.append(name)
                    raise PermissionError(message)
                super().__init__(*args, **kwargs)

        Forbidden.__name__ = Forbidden.__qualname__ = original.__name__
        return Forbidden

    def forbidden(*args, **kwargs):
        if not from_library():
            worker.forbidden_used.append(name)
            raise PermissionError(message)
        return original(*args, **kwargs)

    return forbidden


# ------------------------------------------------------------------------------ process setup
def _refuse(sock: int, message: str) -> None:
    """Answer the start message with an error instead of a worker, and end."""
    try:
        wire.send(sock, {"ok": False, "error": message})
    finally:
        os._exit(2)


def start(sock: int, status: int, enforced: dict | None = None) -> None:
    """Read the start message, split into keeper (outer) and inner process, sandbox the inner one and serve.

    `enforced` comes from a grading template's own command line (its trusted parent): such a template
    forks only sandboxed workers, on those limits, whatever the start message asks."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # a notebook graded here may call conformance.check() in a cell: it sees this and does nothing
    os.environ["CONFORMANCE_IN_WORKER"] = "1"
    reader = wire.Reader()
    frame = None
    while frame is None:
        chunk = os.read(sock, 1 << 16)
        if not chunk:
            os._exit(0)
        reader.feed(chunk)
        frame = reader.frame()
    config = frame[0]
    if not isinstance(config, dict):
        _refuse(sock, "the start message is not a configuration")
    box = config.get("sandbox") or {}
    if enforced is not None:
        if not isinstance(box, dict) or not isinstance(box.get("scratch"), str):
            _refuse(sock, "this worker template grades: it starts only sandboxed workers")
        box.update(enforced)
        config["sandbox"] = box
    layers: dict[str, str] = {}
    groups = None
    keeper = os.getpid()
    if box:
        groups = cgroups.Groups.make(_request(box), keeper)
        layers.update(groups.describe())
        rlimits = dict(box.get("rlimits", {}))
        if "memory" in groups.paths and privateroot.gpu_devices():
            # a GPU's driver reserves far more address space than the memory it uses (CUDA's unified
            # addressing), which RLIMIT_AS would count; the memory cgroup counts what is used, and bounds it here
            rlimits.pop("AS", None)
        done = sandbox.set_rlimits(rlimits)
        layers["rlimits"] = "active: " + ", ".join(done) if done else "inactive"
        pid_ns, net_ns, why = sandbox.unshare_namespaces()
        layers["pid namespace"] = "active" if pid_ns else f"inactive ({why}); a child subreaper stands in"
        layers["network namespace"] = "active (no network)" if net_ns else f"inactive ({why})"
        if not pid_ns and sys.platform.startswith("linux"):
            import ctypes

            ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come back to the outer
    go_read, go_write = os.pipe()
    inner = os.fork()
    if inner:
        os.close(go_read)
        if groups is not None:
            groups.add(inner)  # before the inner process runs anything of the submission
            layers.update(groups.describe())
        os.write(go_write, json.dumps(layers).encode())
        os.close(go_write)
        _outer(inner, status, sock, groups)
    os.close(go_write)
    os.close(status)
    sandbox.die_with_parent()
    if os.getppid() != keeper and os.getpid() != 1:
        os._exit(1)
    received = b""
    while chunk := os.read(go_read, 1 << 16):
        received += chunk
    os.close(go_read)
    layers = json.loads(received or b"{}")
    worker = Worker(sock, config)
    if box:
        _enter_sandbox(worker, config, box, layers, keeper)
        if privateroot.gpu_devices():
            layers["cuda"] = _cuda_in_sandbox()
    elif config.get("cwd"):
        os.chdir(config["cwd"])  # a worker forked from a template starts in the template's directory
    config["layers"] = layers
    if config.get("warm_up"):
        # after the sandbox, so that the thread is confined too; it overlaps with the judge's own start
        import threading

        threading.Thread(target=warm_up, daemon=True).start()
    sys.path[:0] = config.get("path", [])
    if config.get("threads"):
        import torch

        torch.set_num_threads(config["threads"])
    if config.get("forbid"):
        forbid(worker, config["forbid"])
    worker.serve()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _request(box: dict) -> "cgroups.Request":
    def number(key: str, kind=int):
        value = box.get(key)
        return kind(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None

    memory = number("memory_mb")
    return cgroups.Request(processes=number("processes"), cpus=number("cpus", float),
                           memory_bytes=memory * 2**20 if memory else None, cpu_seconds=number("cpu_seconds", float))


def _enter_sandbox(worker: Worker, config: dict, box: dict, layers: dict[str, str], keeper: int) -> None:
    scratch = box["scratch"]
    reads = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
             *[p for p in sys.path if p], "/usr", "/lib", "/lib64", "/lib32", "/bin", "/etc",
             *os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)]  # a GPU driver's library
    # the torch and numpy actually imported, wherever they live (an editable or user install)
    for name in ("torch", "numpy"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            reads.append(os.path.dirname(os.path.dirname(module.__file__)))
    # jax is imported after the sandbox is up (only by a jax implementation): where it would be found
    # (find_spec reads directories, it imports nothing); usually the same site-packages as torch
    for name in ("jax", "jaxlib"):
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.origin:
            reads.append(os.path.dirname(os.path.dirname(found.origin)))
    protected = [p for p in box.get("protected_paths", []) if isinstance(p, str)]
    hidden = protected + [p for p in box.get("hidden", []) if isinstance(p, str)]
    record_violations(worker, protected, box.get("protected_modules", []))
    privileged = hasattr(os, "geteuid") and os.geteuid() == 0
    uid = sandbox.submission_uid(keeper) if privileged else None
    gpus = privateroot.gpu_devices()
    disk_mb = box.get("disk_mb") if isinstance(box.get("disk_mb"), int) and box["disk_mb"] > 0 else None
    private = False
    if not sys.platform.startswith("linux"):
        layers["mount namespace"] = "inactive (not Linux)"
    elif not privileged:
        layers["mount namespace"] = "inactive (the grader is not root: a private root needs CAP_SYS_ADMIN)"
    elif disk_mb is None:
        layers["mount namespace"] = "inactive (no disk quota given)"
    else:
        try:
            binds = privateroot.enter(reads, hidden, scratch, disk_mb * 2**20, uid, gpus)
            private = True
        except OSError as error:
            layers["mount namespace"] = f"inactive ({error})"
    if private:
        layers["mount namespace"] = ("active: a private root (interpreter and libraries read-only; nothing of the "
                                     "suite, the class or the reports); /proc shows only the worker's processes")
        layers["disk"] = f"active: {disk_mb} MB for all the files of the scratch dir together (tmpfs)"
        reads, hidden = [*binds, "/proc", "/sys", "/dev"], []
    else:
        reads += ["/proc", "/sys", "/dev"]
        layers["disk"] = "inactive (no private scratch); RLIMIT_FSIZE caps each file"
    os.chdir(scratch)
    os.environ.update({"HOME": scratch, "TMPDIR": scratch, "USER": "student", "LOGNAME": "student"})
    # the scratch dir is handed over to the unprivileged user; what it must be able to read is the rest
    needed = [os.path.realpath(sys.executable), os.path.dirname(os.__file__), os.path.dirname(scratch),
              *(os.path.dirname(sys.modules[m].__file__) for m in ("torch", "numpy") if m in sys.modules)]
    drop, why_not = sandbox.can_drop_privileges(needed)
    writes = [scratch, "/dev/null", *(f"/dev/{g}" for g in gpus)]
    if gpus and private:
        # CUDA's driver library writes to /proc while it starts (it fails with "OS call failed" otherwise);
        # this /proc is the worker's own, and its uid may write only its own processes' files there
        writes.append("/proc")
    why = sandbox.landlock(reads, writes, hidden)
    layers["landlock"] = "active: reads the interpreter and libraries, writes only the scratch dir" if not why else f"inactive ({why})"
    if drop and uid is not None:
        sandbox.drop_to(uid, scratch)
        layers["unprivileged uid"] = f"active (uid {uid}, this submission's own)"
    else:
        layers["unprivileged uid"] = f"inactive ({why_not})"


def _cuda_in_sandbox() -> str:
    """Whether this sandboxed worker can use the machine's GPU: the judge runs the CUDA checks only if so
    (a GPU the sandbox keeps out is 'unavailable' there, never a failure of the submission)."""
    try:
        import torch

        if torch.cuda.is_available():
            torch.zeros(1, device="cuda")
            return "active (the GPU is usable)"
        return "inactive (torch.cuda.is_available() is False in the sandbox)"
    except Exception as error:  # noqa: BLE001 - whatever CUDA says, the reason goes to the report
        return f"inactive ({type(error).__name__}: {str(error)[:200]})"


def _outer(inner: int, status: int, sock: int, groups: "cgroups.Groups | None") -> None:
    """The keeper: wait for the inner process, killing it if the judge goes away (its end of the socket
    closes) or the watchdog finds a limit broken; then end every leftover descendant, remove the groups
    and report how the inner process ended."""

    signal.signal(signal.SIGTERM, lambda *_: os.kill(inner, signal.SIGKILL))
    watch = select.poll()
    watch.register(sock, getattr(select, "POLLRDHUP", 0x2000))
    watchdog = cgroups.Watchdog(groups, inner) if groups is not None else None
    code, broken = 0, ""
    while True:
        try:
            done, code = os.waitpid(inner, os.WNOHANG)
        except ChildProcessError:
            break
        if done:
            break
        if watch.poll(200):  # the judge closed its end or died: nothing will read the results
            os.kill(inner, signal.SIGKILL)
            watch.unregister(sock)
        if watchdog is not None and not broken:
            broken = watchdog.over()
            if broken:
                os.kill(inner, signal.SIGKILL)
    os.close(sock)
    report = f"signal {os.WTERMSIG(code)}" if os.WIFSIGNALED(code) else f"exit {os.WEXITSTATUS(code)}"
    _sweep()
    if groups is not None:
        said = ([f"the sandbox ended it: {broken}"] if broken else []) + groups.events()
        groups.remove()
        if said:
            report += " " + "; ".join(said)
    try:
        os.write(status, report.encode()[:1000])
    except OSError:
        pass
    os._exit(0)


def _sweep() -> None:
    """Kill the descendants that were reparented to this process (the subreaper fallback)."""
    for _ in range(3):
        try:
            children = {int(pid) for task in os.listdir("/proc/self/task")
                        for pid in open(f"/proc/self/task/{task}/children").read().split()}
        except OSError:
            return
        if not children:
            return
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass


def warm_up() -> None:
    """Run autograd once on an attention step: its first backward imports what it needs lazily
    (sympy among them), most of a second that would otherwise land in the first gradient test."""
    import torch

    # an attention step, masked, differentiated through both outputs: this is what first pulls in the
    # lazily imported parts of autograd (sympy among them)
    x = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
    scores = (x @ x.T).masked_fill(torch.ones(3, 3, dtype=torch.bool).triu(1), float("-inf"))
    weights = torch.softmax(scores / 2**0.5, dim=-1)
    context = weights @ x
    torch.autograd.grad([context, weights], [x], [torch.ones_like(context), torch.ones_like(weights)])


def template(listen: int, enforced: dict | None = None) -> None:
    """Fork a worker for every request on `listen`, a descriptor inherited from the parent that
    started the template (no path names it, so nothing else can reach it). A request is one message
    carrying five fds (socket, stdout, stderr, status, reply); the new worker's pid goes back on reply.
    With `enforced` (a grading template) every worker is sandboxed on those limits."""
    import numpy  # noqa: F401 - imported once here: every forked worker starts warm
    import torch  # noqa: F401

    warm_up()

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    server = socket.socket(fileno=listen)
    parent = os.getppid()
    while True:
        if not select.select([server], [], [], 1.0)[0]:
            if os.getppid() != parent:  # the grader is gone (datagrams never say so themselves)
                return
            continue
        try:
            message, fds, _, _ = socket.recv_fds(server, 16, 5)
        except OSError:
            return
        if not message and not fds:
            return  # every sender has gone
        if len(fds) != 5:
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            server.close()
            os.close(fds[4])
            _become_worker(*fds[:4], enforced=enforced)
        for fd in fds[:4]:
            os.close(fd)
        try:
            os.write(fds[4], str(pid).encode())
        except OSError:
            pass
        os.close(fds[4])


def _become_worker(sock: int, stdout: int, stderr: int, status: int, enforced: dict | None = None) -> None:
    try:
        os.setsid()
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        os.close(stdout)
        os.close(stderr)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        # nothing of the template's stays open in the worker but what it was given
        keep = sorted({0, 1, 2, sock, status})
        for low, high in zip(keep, [*keep[1:], 1 << 20]):
            os.closerange(low + 1, high)
        start(sock, status, enforced)
    finally:
        os._exit(70)


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[0] == "--serve":
        import numpy  # noqa: F401 - before any sandbox
        import torch  # noqa: F401

        os.setsid()
        start(int(argv[1]), int(argv[2]))
    elif len(argv) == 2 and argv[0] == "--template":
        template(int(argv[1]))
    elif len(argv) == 4 and argv[0] == "--template" and argv[2] == "--grading":
        template(int(argv[1]), json.loads(argv[3]))
    else:
        sys.exit("usage: shim.py --serve SOCKET_FD STATUS_FD | --template REQUEST_FD [--grading LIMITS_JSON]")


if __name__ == "__main__":
    main(sys.argv[1:])
