"""Run untrusted Python (model-written code plus its tests) in a throw-away sandboxed subprocess.

    run_program(source, timeout_s=10.0, memory_mb=1024, module_name="__main__") -> ExecResult
    run_many(sources, timeout_s=10.0, workers=None) -> list[ExecResult]   (pool sized to the cores)

Statuses: `pass` (the program, tests included, ran to its end and exited 0), `fail` (an assert or
other exception, or it exited early: `sys.exit(0)` / `os._exit(0)` before the end is a fail, never a
pass), `timeout` (wall clock or RLIMIT_CPU), `error` (a resource limit other than time: memory,
output/file size, process count; killed by a signal; or the sandbox itself could not run).

Always: own process group (killed with SIGKILL on timeout and after every run), closed stdin
(reads see end-of-file), a fresh temporary working directory (also HOME and TMPDIR), a minimal env,
rlimits set inside the child (RLIMIT_AS = current VmSize + memory_mb, relative so it does not fail
at start-up inside containers; RLIMIT_CPU; RLIMIT_NPROC; RLIMIT_FSIZE, which also caps stdout/stderr:
they go to files and only the first `output_cap` bytes are read back). `ExecResult.isolation` lists
every layer a run got, and says why when one is missing.

With namespaces (the default on Linux; suites/_sandbox_boot.py and suites/_sandbox_jail.py), as
root or not, the program
  * runs with a non-zero uid: nobody (65534) when we are root, else our own uid. It holds no
    capability in any namespace (bounding, ambient, inheritable, permitted and effective sets all
    empty, no_new_privs), so it cannot mount, unmount, remount, pivot_root, chroot, setuid(0) or
    gain anything from setuid binaries; it sits in a user namespace that maps only that uid, from
    which every mount it sees is locked, and it may not create user namespaces of its own;
  * sees a private root: read-only binds of /usr (/bin, /lib... as on the host) and of the
    interpreter's prefixes (reachable even when they live under /root), an /etc holding only name
    service, loader and time-zone files, /dev/{null,zero,full,random,urandom}, a /proc of its own
    pid namespace, and its working directory, the only writable place. Absent: home directories
    (beyond the path down to the interpreter), /etc/shadow and the rest of /etc, /sys, /run, /var,
    /tmp's contents, the project and its results. Writes anywhere else fail and leave nothing;
  * is in new pid, network and IPC namespaces: no network (only a down loopback), the test process
    is invisible and cannot be signalled, everything the program forked dies with the run, and so
    do the SysV shared memory, queues and semaphores it made (the host's are out of its reach).
If the private root, the capability drop or the uid change cannot be set up, the program does not
run (status `error`); locked mounts and the ban on nested user namespaces, where the kernel refuses
them, are listed as missing and the run goes on (the program still holds no capability).
Not promised: protection from kernel bugs (no seccomp filter), a limit on the host's total memory,
CPU or disk beyond the per-process rlimits (no cgroups, and the work dir is on the host's disk),
secrecy of what the bound directories hold (system files, site-packages), or an honest verdict
from code written to cheat: the program shares the process that reports the nonce, which guards
against accidental early exits only.

Without namespaces (`PDBENCH_SANDBOX=plain`, or a kernel or container that refuses them; the
isolation list says which) the program sees the host's file system and network, and escaped
grandchildren can outlive the run. Capabilities are still dropped (an ordinary user keeps its
bounding set, which no_new_privs leaves inert). As root it runs as nobody when nobody can read this
interpreter, else as uid 0 (then root's own files are open to it, and the kernel applies no
RLIMIT_NPROC to uid 0); as another user it has that user's access. Run untrusted code in a
container or VM then.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

BOOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_boot.py")
SANDBOX_UID = 65534  # nobody; used only when we are root
STATUSES = ("pass", "fail", "timeout", "error")


@dataclass
class ExecResult:
    status: str  # pass | fail | timeout | error
    detail: str  # the failing assert / exception / limit hit, one line
    stdout: str = ""  # first `output_cap` bytes
    stderr: str = ""
    exit_code: int | None = None
    signal: int | None = None
    wall_s: float = 0.0
    isolation: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "pass"


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _read_head(path: str, cap: int) -> str:
    with open(path, "rb") as f:
        return f.read(cap).decode(errors="replace")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _verdict(raw: dict | None, timed_out: bool, stderr: str) -> tuple[str, str]:
    """Map the supervisor's report to (status, detail)."""
    if timed_out:
        return "timeout", "wall-clock limit exceeded"
    if raw is None:
        return "error", "sandbox produced no verdict: " + (stderr.strip().splitlines() or ["(no stderr)"])[-1][:300]
    if raw.get("setup_error"):  # the program never ran
        return "error", f"sandbox setup failed, {raw['setup_error']} (PDBENCH_SANDBOX=plain runs without namespaces)"
    sig, record = raw.get("signal"), raw.get("record")
    if sig is not None:
        if sig in (signal.SIGXCPU, signal.SIGKILL):  # SIGKILL: the hard RLIMIT_CPU after SIGXCPU
            return "timeout", f"CPU time limit (signal {signal.Signals(sig).name})"
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return "error", f"killed by signal {name}"
    if record is None:
        return "fail", f"program exited (code {raw.get('exit')}) before the tests finished"
    outcome, detail = record["outcome"], record.get("detail", "")
    if outcome == "done" and raw.get("exit") == 0:
        return "pass", ""
    if outcome == "memory":
        return "error", f"memory limit: {detail}"
    if outcome == "output":
        return "error", f"output/file size limit: {detail}"
    if outcome == "nproc":
        return "error", f"process limit: {detail}"
    return "fail", detail


def run_program(
    source: str,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_processes: int = 32,
    max_file_mb: int = 16,
    output_cap: int = 65536,
    module_name: str = "__main__",
) -> ExecResult:
    """Run `source` as a Python program in a fresh sandbox and classify how it ended; it runs with
    `__name__` = `module_name` (the code suites pass another name, so a solution's own
    `if __name__ == "__main__":` demo does not run)."""
    workdir = tempfile.mkdtemp(prefix="pdbench-sbx-")
    private = tempfile.mkdtemp(prefix="pdbench-sbx-io-")  # outputs live outside the program's reach
    isolation = ["process-group", "rlimits", "tempdir"]
    try:
        with open(os.path.join(workdir, "program.py"), "w") as f:
            f.write(source)
        os.chmod(os.path.join(workdir, "program.py"), 0o644)
        if _as_root():  # the program runs as nobody and writes here
            os.chown(workdir, SANDBOX_UID, SANDBOX_UID)
        private_root = os.path.join(private, "root")  # the boot mounts the program's root file system here
        os.mkdir(private_root)
        out_path, err_path, res_path = (os.path.join(private, n) for n in ("stdout", "stderr", "result"))
        config = {
            "workdir": os.path.realpath(workdir),
            "nonce": secrets.token_hex(16),
            "memory_bytes": memory_mb << 20,
            "cpu_s": int(timeout_s) + 1,
            "fsize_bytes": max_file_mb << 20,
            "nproc": max_processes,
            "module_name": module_name,
            "namespaces": os.environ.get("PDBENCH_SANDBOX", "") != "plain",
            "isolation": isolation,
            "run_as": [SANDBOX_UID, SANDBOX_UID] if _as_root() else None,
            "private_root": private_root,
        }
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}
        cmd = [sys.executable, "-I", BOOT]
        with open(out_path, "wb") as out, open(err_path, "wb") as err, open(res_path, "wb") as res:
            config["result_fd"] = res.fileno()
            start = time.perf_counter()
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, pass_fds=(res.fileno(),),
                                        cwd=workdir, env=env, start_new_session=True)
            except OSError as exc:
                return ExecResult("error", f"could not start the sandbox: {exc}", isolation=isolation)
            timed_out = False
            try:
                proc.stdin.write(json.dumps(config).encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc.pid)  # the group outlives its leader when children were forked
            proc.wait()
            wall = time.perf_counter() - start
        try:
            raw = json.loads(_read_head(res_path, 1 << 20) or "null")
        except ValueError:
            raw = None
        stderr = _read_head(err_path, output_cap)
        status, detail = _verdict(raw, timed_out, stderr)
        if raw and raw.get("isolation"):
            isolation = raw["isolation"]
        return ExecResult(status, detail, _read_head(out_path, output_cap), stderr,
                          raw.get("exit") if raw else proc.returncode, raw.get("signal") if raw else None,
                          wall, isolation)
    finally:
        remove_tree(workdir)
        remove_tree(private)


def remove_tree(path: str) -> None:
    """rmtree that also removes what the program made unwritable (a directory chmod 0500 or 000 under
    its work dir, which a plain rmtree as a non-root caller would leave behind)."""
    def unlock_and_retry(func, failed, exc_info):
        try:
            os.chmod(os.path.dirname(failed), stat.S_IRWXU)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, stat.S_IRWXU)
                shutil.rmtree(failed, onerror=unlock_and_retry)
            else:
                os.unlink(failed)
        except OSError:
            pass

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=unlock_and_retry)


@functools.lru_cache(maxsize=1)
def isolation_gaps() -> tuple[str, ...]:
    """What a trivial program's run lacks of the namespace sandbox (empty: it has it all, or the user
    chose PDBENCH_SANDBOX=plain knowingly). Probed once per process, before a code suite decodes."""
    if os.environ.get("PDBENCH_SANDBOX") == "plain":
        return ()
    got = run_program("pass", timeout_s=30.0).isolation
    wanted = ("private-root", "pid-namespace", "no-network", "locked-mounts")
    # a layer that could not be set up is listed with its reason in parentheses ("no namespaces (...)")
    return tuple(layer for layer in wanted if layer not in got) + tuple(note for note in got if "(" in note)


def run_many(sources: list[str], timeout_s: float = 10.0, workers: int | None = None, **limits) -> list[ExecResult]:
    """Run programs concurrently, one per core by default (oversubscribing turns slowness into
    spurious timeouts, EvalPlus docs/execution.md). Results come back in input order."""
    workers = workers or available_cores()
    if not sources:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(sources))) as pool:
        return list(pool.map(lambda src: run_program(src, timeout_s=timeout_s, **limits), sources))
