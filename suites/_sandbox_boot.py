"""Runs inside the sandbox as `python -I _sandbox_boot.py` (never imported by the package).

The parent (suites/sandbox.py) writes a JSON config on our stdin, then closes it. Then
  1. we enter new mount, pid, network and IPC namespaces (and, when not root, a user namespace in
     which we keep our uid) when the kernel allows it, else carry on without and say so;
  2. we fork the supervisor, pid 1 of the new pid namespace. It builds the private root
     (suites/_sandbox_jail.py: a tmpfs with read-only binds of the system directories and the
     interpreter, a curated /etc, a few devices, its own /proc, the working directory read-write),
     pivots into it and detaches the host's root;
  3. the supervisor forks the program child, which gives up everything before the program runs: as
     root it becomes nobody; it enters a user namespace of its own (so every mount it sees is
     locked), forbids nested ones, empties all capability sets and sets no_new_privs; it reports
     those layers, sets the rlimits and runs the program;
  4. the supervisor waits for the child and writes one JSON verdict to the result fd we were given.
If a step that the namespaced mode promises fails, the program does not run (status `error`).
The child proves it reached the end of the program (tests included) by sending back a nonce over a
pipe; an early `sys.exit(0)` or `os._exit(0)` therefore never looks like a pass. When we exit, the
kernel kills whatever is left in the pid namespace, so escaped grandchildren do not outlive us.
Standard library only: `-I` keeps the project and site customisations off the path.
"""

import errno
import importlib.util
import json
import os
import resource
import sys
import traceback


def load_jail():
    # by path: under -I this file's directory is not on sys.path, and must not be for the program
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_jail.py")
    spec = importlib.util.spec_from_file_location("_sandbox_jail", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


jail = load_jail()


def vm_size_bytes(default: int = 0) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # no /proc in the private root: the boot's own size, measured at start, is close
        pass
    return default


def set_limits(cfg: dict) -> None:
    # Relative to the current size: a container may already map more than an absolute limit, and
    # then every program would fail at start-up (EvalPlus #225, LiveBench #536).
    mem = vm_size_bytes(cfg["vm_size_hint"]) + cfg["memory_bytes"]
    cpu = cfg["cpu_s"]
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["fsize_bytes"], cfg["fsize_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"], cfg["nproc"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def failing_line(exc: BaseException, source_lines: list[str]) -> str:
    """The program line an exception came from (asserts name the failing test this way)."""
    frames = [fr for fr in traceback.extract_tb(exc.__traceback__) if fr.filename == "program.py"]
    if not frames or not frames[-1].lineno or frames[-1].lineno > len(source_lines):
        return ""
    return source_lines[frames[-1].lineno - 1].strip()[:300]


def classify(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return "exit"
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "output"  # RLIMIT_FSIZE: Python ignores SIGXFSZ, so the write fails instead
    forking = "fork" in "".join(traceback.format_tb(exc.__traceback__))
    if isinstance(exc, OSError) and exc.errno == errno.EAGAIN and forking:
        return "nproc"
    return "exception"


def confine(cfg: dict, namespaced: bool) -> list[str]:
    """Give up every privilege before the program runs; returns the layers that took, for the
    verdict. Raises jail.JailError when one that the mode promises does not hold."""
    layers = []
    run_as = cfg["run_as"]  # (uid, gid) to become when we are root, else None
    if run_as is not None:
        if namespaced or jail.can_run_interpreter_as(*run_as):
            jail.become_unprivileged(*run_as)
        else:  # plain mode, and nobody cannot even read this interpreter: stay root, capability-less
            os.chown(cfg["workdir"], 0, 0)
    stdlib = os.path.dirname(os.__file__)
    if not os.access(stdlib, os.R_OK | os.X_OK):
        raise jail.JailError(f"uid {os.geteuid()} cannot read the standard library in {stdlib}")
    if namespaced:
        try:
            jail.enter_inner_userns()
            layers.append("locked-mounts")
            try:
                jail.forbid_nested_userns()
                layers.append("no-nested-userns")
            except jail.JailError as exc:
                layers.append(f"nested user namespaces allowed ({exc})")
        except jail.JailError as exc:
            layers.append(f"mounts not locked ({exc})")
    if sys.platform.startswith("linux"):
        layers += [jail.drop_capabilities(), "no-new-privs"]
    layers.append(f"uid-{os.geteuid()}")
    if namespaced and os.geteuid() == 0:
        raise jail.JailError("the program would run as uid 0")
    return layers


def report(fd: int, line: dict) -> None:
    os.write(fd, (json.dumps(line) + "\n").encode())


def run_child(cfg: dict, report_fd: int, namespaced: bool) -> None:
    os.chdir(cfg["workdir"])
    me = os.getpid()
    try:
        layers = confine(cfg, namespaced)
    except (jail.JailError, OSError) as exc:
        report(report_fd, {"pid": me, "nonce": cfg["nonce"], "setup_error": f"dropping privileges: {exc}"})
        os._exit(1)
    report(report_fd, {"pid": me, "nonce": cfg["nonce"], "layers": layers})
    set_limits(cfg)
    path = os.path.join(cfg["workdir"], "program.py")
    with open(path) as f:
        source = f.read()
    record = {"pid": me, "nonce": cfg["nonce"], "outcome": "done", "detail": ""}
    try:
        code = compile(source, "program.py", "exec")
        exec(code, {"__name__": cfg["module_name"], "__file__": path, "__builtins__": __builtins__})
    except BaseException as exc:  # noqa: BLE001 - every way out of the program is a verdict
        record["outcome"] = classify(exc)
        line = failing_line(exc, source.splitlines())
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-500:]
        record["detail"] = f"{text} at: {line}" if line else text
        if isinstance(exc, SystemExit):
            record["detail"] = f"sys.exit({exc.code!r}) before the tests finished"
    if os.getpid() != me:  # a forked copy of the program reached here: it must not report
        os._exit(0)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - output over its size limit, or streams the program replaced
        pass
    report(report_fd, record)
    os._exit(0 if record["outcome"] == "done" else 1)


def read_reports(fd: int, child: int, nonce: str) -> tuple[dict | None, dict | None]:
    """(the child's layers line, its final record); only lines from the child we forked carrying
    the nonce count. The layers line comes first, written before the program could run."""
    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
            if len(data) > 1 << 20:
                break
    except BlockingIOError:
        pass
    header = record = None
    for line in data.decode(errors="replace").splitlines():
        try:
            candidate = json.loads(line)
        except ValueError:
            continue
        if not (isinstance(candidate, dict) and candidate.get("nonce") == nonce and candidate.get("pid") == child):
            continue
        if header is None:
            header = candidate
        elif "outcome" in candidate:
            record = candidate
    return header, record


def supervise(cfg: dict, isolation: list[str], namespaced: bool) -> None:
    result_fd = cfg["result_fd"]
    verdict = {"exit": None, "signal": None, "record": None, "isolation": isolation, "setup_error": None}
    if namespaced:
        try:
            jail.set_dumpable(False)
            isolation += ["pid-namespace", "no-network", "ipc-namespace", "private-root"]
            isolation += jail.build_private_root(cfg["private_root"], cfg["workdir"])
        except (jail.JailError, OSError) as exc:
            verdict["setup_error"] = f"building the private root: {exc}"
            os.write(result_fd, json.dumps(verdict).encode())
            os._exit(0)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        os.close(result_fd)
        run_child(cfg, write_end, namespaced)
    os.close(write_end)
    # pid 1 of a namespace ignores signals it has no handler for; the child is an ordinary process.
    _, status = os.waitpid(child, 0)
    header, record = read_reports(read_end, child, cfg["nonce"])
    if header is None or "layers" not in header:
        verdict["setup_error"] = (header or {}).get("setup_error", "the program child sent no report")
    else:
        isolation += header["layers"]
        verdict["record"] = record
    verdict["exit"] = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    verdict["signal"] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    os.write(result_fd, json.dumps(verdict).encode())
    os._exit(0)


def main() -> None:
    cfg = json.loads(sys.stdin.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the program sees end-of-file on stdin
    cfg["vm_size_hint"] = vm_size_bytes()
    isolation = list(cfg["isolation"])
    namespaced = False
    if cfg["namespaces"]:
        try:
            jail.enter_outer_namespaces()
            namespaced = True
        except jail.JailError as exc:
            isolation.append(f"no namespaces ({exc})")
    else:
        isolation.append("no namespaces (PDBENCH_SANDBOX=plain)")
    supervisor = os.fork()  # with CLONE_NEWPID this child is pid 1 of the new namespace
    if supervisor == 0:
        supervise(cfg, isolation, namespaced)
    _, status = os.waitpid(supervisor, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 3)


if __name__ == "__main__":
    main()
