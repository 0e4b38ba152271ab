"""Runs inside the sandbox as `python -I _sandbox_boot.py` (never imported by the package).

The parent (suites/sandbox.py) writes a JSON config on our stdin, then closes it. We are the
supervisor: pid 1 of a fresh pid namespace when namespaces are available. We
  1. make every mount except the working directory read-only (mount namespace only),
  2. fork the program child, which sets the rlimits and `exec`s the program,
  3. wait for that child and write one JSON verdict to the result fd the parent gave us.
The child proves it reached the end of the program (tests included) by sending back a nonce over a
pipe; an early `sys.exit(0)` or `os._exit(0)` therefore never looks like a pass. When we exit, the
kernel kills whatever is left in the pid namespace, so escaped grandchildren do not outlive us.
Standard library only: `-I` keeps the project and site customisations off the path.
"""

import ctypes
import errno
import json
import os
import resource
import sys
import traceback

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_RELATIME = 32, 1024, 2048, 4096, 1 << 21
# A remount inside a user namespace must keep the flags the mount was created with ("locked"),
# otherwise the kernel answers EPERM, so we carry them over from mountinfo.
_KEEP_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
               "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}


def _unescape(path: str) -> str:
    return path.encode().decode("unicode_escape")  # mountinfo writes spaces as \040


def make_fs_readonly(workdir: str) -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    # A bind mount of the working directory onto itself becomes its own mount, so remounting the
    # file system that holds it read-only leaves it writable.
    if libc.mount(workdir.encode(), workdir.encode(), None, MS_BIND, None) != 0:
        return f"readonly-fs failed: bind {errno.errorcode.get(ctypes.get_errno())}"
    failed = []
    with open("/proc/self/mountinfo") as f:
        mounts = [(_unescape(line.split()[4]), line.split()[5]) for line in f]
    for point, options in mounts:
        if point == workdir:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in options.split(","):
            flags |= _KEEP_FLAGS.get(opt, 0)
        if libc.mount(None, point.encode(), None, flags, None) != 0:
            failed.append(point)
    return "readonly-fs" if not failed else f"readonly-fs (not: {', '.join(failed[:5])})"


def vm_size_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def set_limits(cfg: dict) -> None:
    # Relative to the current size: a container may already map more than an absolute limit, and
    # then every program would fail at start-up (EvalPlus #225, LiveBench #536).
    mem = vm_size_bytes() + cfg["memory_bytes"]
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
    if isinstance(exc, OSError) and exc.errno == errno.EAGAIN and "fork" in "".join(traceback.format_tb(exc.__traceback__)):
        return "nproc"
    return "exception"


def run_child(cfg: dict, report_fd: int) -> None:
    os.chdir(cfg["workdir"])
    set_limits(cfg)
    path = os.path.join(cfg["workdir"], "program.py")
    with open(path) as f:
        source = f.read()
    me = os.getpid()
    record = {"pid": me, "nonce": cfg["nonce"], "outcome": "done", "detail": ""}
    try:
        code = compile(source, "program.py", "exec")
        exec(code, {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__})
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
    except OSError:
        pass
    os.write(report_fd, (json.dumps(record) + "\n").encode())
    os._exit(0 if record["outcome"] == "done" else 1)


def main() -> None:
    cfg = json.loads(sys.stdin.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the program sees end-of-file on stdin
    result_fd = cfg["result_fd"]
    isolation = list(cfg["isolation"])
    if cfg["readonly_fs"]:
        isolation.append(make_fs_readonly(cfg["workdir"]))
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        os.close(result_fd)
        run_child(cfg, write_end)
    os.close(write_end)
    # pid 1 of a namespace ignores signals it has no handler for; the child is an ordinary process.
    _, status = os.waitpid(child, 0)
    os.set_blocking(read_end, False)
    data = b""
    try:
        while chunk := os.read(read_end, 65536):
            data += chunk
            if len(data) > 1 << 20:
                break
    except BlockingIOError:
        pass
    record = None
    for line in data.decode(errors="replace").splitlines():
        try:
            candidate = json.loads(line)
        except ValueError:
            continue
        # only the child we forked, carrying the nonce, may report (not the program, not its forks)
        if isinstance(candidate, dict) and candidate.get("nonce") == cfg["nonce"] and candidate.get("pid") == child:
            record = candidate
    verdict = {
        "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "record": record,
        "isolation": isolation,
    }
    os.write(result_fd, json.dumps(verdict).encode())
    os._exit(0)


if __name__ == "__main__":
    main()
