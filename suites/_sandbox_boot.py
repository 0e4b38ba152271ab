"""Runs inside the sandbox as `python -I _sandbox_boot.py` (never imported by the package).

The parent (suites/sandbox.py) writes a JSON config on our stdin, then closes it. Then
  1. we enter new user, mount, network and pid namespaces when the kernel allows it (else we carry
     on without and say so), and remount everything except the working directory read-only;
  2. we fork the supervisor, pid 1 of the new pid namespace, which forks the program child: that
     one sets the rlimits and `exec`s the program;
  3. the supervisor waits for the child and writes one JSON verdict to the result fd we were given.
The child proves it reached the end of the program (tests included) by sending back a nonce over a
pipe; an early `sys.exit(0)` or `os._exit(0)` therefore never looks like a pass. When we exit, the
kernel kills whatever is left in the pid namespace, so escaped grandchildren do not outlive us.
Standard library only: `-I` keeps the project and site customisations off the path.
"""

import ctypes
import errno
import json
import os
import re
import resource
import sys
import traceback

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
NOBODY = 65534
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_RELATIME = 32, 1024, 2048, 4096, 1 << 21
# A remount inside a user namespace must keep the flags the mount was created with ("locked"),
# otherwise the kernel answers EPERM, so we carry them over from mountinfo.
_KEEP_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
               "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)  # mountinfo writes " " as \040


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
    forking = "fork" in "".join(traceback.format_tb(exc.__traceback__))
    if isinstance(exc, OSError) and exc.errno == errno.EAGAIN and forking:
        return "nproc"
    return "exception"


def run_child(cfg: dict, report_fd: int) -> None:
    os.chdir(cfg["workdir"])
    if cfg["real_uid"] is not None:
        os.setresuid(cfg["real_uid"], 0, 0)  # counted as nobody for RLIMIT_NPROC, see enter_namespaces
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
    except Exception:  # noqa: BLE001 - output over its size limit, or streams the program replaced
        pass
    os.write(report_fd, (json.dumps(record) + "\n").encode())
    os._exit(0 if record["outcome"] == "done" else 1)


def enter_namespaces() -> str | None:
    """unshare(2) into new namespaces; None on success, else why not.

    The uid map of a new user namespace must be written from the parent namespace when it maps
    more than our own uid, so a helper forked beforehand writes it. As root we map 0 and nobody:
    the program later takes nobody as its *real* uid, because the kernel never applies
    RLIMIT_NPROC to a real uid 0 (a fork bomb would otherwise go unchecked)."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    go_r, go_w = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(go_w)
        os.read(go_r, 1)
        target = os.getppid()
        try:
            if uid == 0:
                uid_map = gid_map = f"0 0 1\n{NOBODY} {NOBODY} 1\n"
            else:
                with open(f"/proc/{target}/setgroups", "w") as f:
                    f.write("deny")  # required before an unprivileged gid_map write
                uid_map, gid_map = f"0 {uid} 1\n", f"0 {gid} 1\n"
            with open(f"/proc/{target}/uid_map", "w") as f:
                f.write(uid_map)
            with open(f"/proc/{target}/gid_map", "w") as f:
                f.write(gid_map)
        except OSError:
            os._exit(1)
        os._exit(0)
    os.close(go_r)
    failed = libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID) != 0
    err = ctypes.get_errno()
    os.write(go_w, b"x")
    os.close(go_w)
    _, status = os.waitpid(helper, 0)
    if failed:
        return f"no namespaces (unshare: {errno.errorcode.get(err, err)})"
    if status != 0:
        sys.stderr.write("sandbox: could not write the uid/gid map of the new user namespace\n")
        os._exit(2)
    return None


def supervise(cfg: dict, isolation: list[str]) -> None:
    result_fd = cfg["result_fd"]
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


def main() -> None:
    cfg = json.loads(sys.stdin.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the program sees end-of-file on stdin
    isolation = list(cfg["isolation"])
    cfg["real_uid"] = None
    if cfg["namespaces"]:
        was_root = os.getuid() == 0
        why_not = enter_namespaces()
        if why_not is None:
            isolation += ["no-network", "pid-namespace", make_fs_readonly(cfg["workdir"])]
            cfg["real_uid"] = NOBODY if was_root else None
        else:
            isolation.append(why_not)
    supervisor = os.fork()  # with CLONE_NEWPID this child is pid 1 of the new namespace
    if supervisor == 0:
        supervise(cfg, isolation)
    _, status = os.waitpid(supervisor, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 3)


if __name__ == "__main__":
    main()
