"""The sandbox under attack: each program gets the right status and the test process is unharmed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from suites.sandbox import SANDBOX_UID, run_many, run_program
from tests.conftest import SAMPLE_DATA
from tests.sandbox_attacks import (CANNOT_RUN_AS_USER, make_targets, remove_shared_memory, run_attacks, shared_memory,
                                   sleepers)

TIMEOUT = 4.0
REPO = Path(__file__).resolve().parents[1]
ORDINARY_UID = 43210  # any uid without processes or files of its own: nothing to find or signal


def isolation() -> list[str]:
    return run_program("pass").isolation


def test_pass_and_fail_with_the_failing_assert():
    ok = run_program("def f(x):\n    return x + 1\nassert f(1) == 2\nprint('done')")
    assert (ok.status, ok.stdout) == ("pass", "done\n")
    bad = run_program("def f(x):\n    return x\nassert f(1) == 2, 'off by one'")
    assert bad.status == "fail" and "off by one" in bad.detail and "assert f(1) == 2" in bad.detail
    syntax = run_program("def f(:\n    pass\n")
    assert syntax.status == "fail" and "SyntaxError" in syntax.detail


def test_module_name():
    demo = "ran = []\nif __name__ == '__main__':\n    ran.append(input())\nassert not ran\nprint(__name__)"
    assert run_program(demo, module_name="solution").stdout == "solution\n"
    assert run_program(demo).status == "fail"  # as __main__ the demo reads the closed stdin: EOFError


def test_stdin_is_closed():
    result = run_program("import sys\nassert sys.stdin.read() == ''\ntry:\n    input()\nexcept EOFError:\n    pass\n"
                         "else:\n    raise AssertionError('stdin had data')")
    assert result.status == "pass", result.detail


def test_runs_in_a_fresh_temporary_directory():
    result = run_program("import os\nassert os.listdir('.') == ['program.py'], os.listdir('.')\n"
                         "open('scratch.txt', 'w').write('x')\nprint(os.getcwd())")
    assert result.status == "pass", result.detail
    assert not os.path.exists(result.stdout.strip())  # removed afterwards


def test_infinite_loop_times_out():
    start = time.perf_counter()
    result = run_program("while True:\n    pass", timeout_s=2.0)
    assert result.status == "timeout"
    assert time.perf_counter() - start < 10


def test_sleeping_program_times_out_by_wall_clock():
    result = run_program("import time\ntime.sleep(60)", timeout_s=1.5)
    assert result.status == "timeout" and "wall-clock" in result.detail


def test_fork_bomb_is_contained():
    start = time.perf_counter()
    result = run_program("import os\nwhile True:\n    os.fork()", timeout_s=TIMEOUT)
    assert result.status in ("error", "timeout"), result  # process limit hit, or killed at the deadline
    assert time.perf_counter() - start < TIMEOUT + 10
    # no fork-bomb processes survive the run
    time.sleep(0.2)
    assert run_program("pass").status == "pass"


def test_memory_bomb_hits_the_memory_limit():
    instant = run_program("x = bytearray(10**12)", memory_mb=256)
    assert instant.status == "error" and "memory limit" in instant.detail
    gradual = run_program("chunks = []\nwhile True:\n    chunks.append(bytearray(8 << 20))", memory_mb=128,
                          timeout_s=20)
    assert gradual.status == "error" and "MemoryError" in gradual.detail


def test_printing_a_gigabyte_is_cut_off():
    result = run_program("import sys\nfor _ in range(1024):\n    sys.stdout.write('x' * (1 << 20))", output_cap=4096,
                         max_file_mb=8, timeout_s=20)
    assert result.status == "error" and "output" in result.detail
    assert len(result.stdout) == 4096


def test_sys_exit_zero_before_the_tests_is_a_fail():
    result = run_program("import sys\nsys.exit(0)\nassert False")
    assert result.status == "fail" and "sys.exit(0)" in result.detail


def test_os_exit_zero_before_the_tests_is_a_fail():
    result = run_program("import os\nos._exit(0)\nassert False")
    assert result.status == "fail" and "before the tests finished" in result.detail


def _needs_fs_protection():
    layers = isolation()
    if "private-root" not in layers and f"uid-{SANDBOX_UID}" not in layers:
        pytest.skip(f"no file-system protection here (sandbox layers: {layers}); see suites/sandbox.py")


def test_writing_outside_the_temp_dir_leaves_nothing(tmp_path: Path):
    _needs_fs_protection()
    targets = [tmp_path / "escaped.txt", Path("/tmp") / f"pdbench-escape-{uuid.uuid4().hex}",
               Path(__file__).resolve().parent / f"escape-{uuid.uuid4().hex}.txt"]
    source = (f"refused = []\nfor path in {[str(t) for t in targets]!r}:\n"
              "    try:\n        open(path, 'w').write('pwned')\n"
              "    except OSError as exc:\n        refused.append(exc)\n"
              "assert len(refused) == 3, refused")
    result = run_program(source)
    assert result.status == "pass", result.detail  # every open() raised
    assert not any(t.exists() for t in targets)


def test_os_system_cannot_touch_the_outside(tmp_path: Path):
    _needs_fs_protection()
    target = Path("/tmp") / f"pdbench-system-{uuid.uuid4().hex}"
    result = run_program(f"import os\nassert os.system('touch {target} {tmp_path}/x') == 0")
    assert result.status == "fail" and "os.system" in result.detail
    assert not target.exists() and not (tmp_path / "x").exists()


def test_killing_the_parent_leaves_the_test_process_and_the_verdict(tmp_path: Path):
    layers = isolation()
    if "pid-namespace" not in layers and f"uid-{SANDBOX_UID}" not in layers:
        pytest.skip(f"a same-uid program without a pid namespace can signal us (layers: {layers})")
    me = os.getpid()
    source = ("import os, signal, time\n"
              "for pid in (os.getppid(), %d):\n"
              "    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
              "time.sleep(0.3)\n"
              "assert 1 + 1 == 3, 'still reporting'\n") % me
    result = run_program(source)
    assert os.getpid() == me  # we are still here
    assert result.status == "fail" and "still reporting" in result.detail


def test_no_network():
    if "no-network" not in isolation():
        pytest.skip("network namespaces are not permitted here; see suites/sandbox.py")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        result = run_program(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)")
    assert result.status == "fail" and ("OSError" in result.detail or "Error" in result.detail)


def test_escaped_grandchildren_do_not_outlive_the_run():
    if "pid-namespace" not in isolation():
        pytest.skip("without a pid namespace a setsid() grandchild escapes the process-group kill")
    marker = f"{time.time_ns() % 10**6}.5"  # a sleep argument nothing else uses
    source = ("import os\n"
              "if os.fork() == 0:\n    os.setsid()\n    os.execvp('sleep', ['sleep', %r])\n") % marker
    result = run_program(source)
    assert result.status == "pass", result.detail
    time.sleep(0.3)
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[:2] == [b"sleep", marker.encode()]:
            alive.append(pid)
    assert not alive


def test_run_many_keeps_input_order():
    sources = [f"assert {i} % 2 == 0" for i in range(6)]
    results = run_many(sources, workers=2)
    assert [r.status for r in results] == ["pass", "fail"] * 3


# ---------------------------------------------------------------- a program written to escape

NAMESPACED_LAYERS = ["pid-namespace", "no-network", "ipc-namespace", "private-root", "locked-mounts",
                     "no-nested-userns", "no-capabilities", "no-new-privs"]


def _needs_private_root() -> list[str]:
    layers = isolation()
    if "private-root" not in layers:
        pytest.skip(f"no namespaces here, so no private root (sandbox layers: {layers}); see suites/sandbox.py")
    return layers


@pytest.fixture
def host_files():
    """A root-only (0600) secret, one owned by the ordinary user, and the directories the program
    must not see: ours (tmp), the repository (which holds results/)."""
    with tempfile.TemporaryDirectory(prefix="pdbench-host-") as tmp:
        os.chmod(tmp, 0o755)  # enterable: only the sandbox's view may hide what is inside
        root_secret, user_secret = os.path.join(tmp, "root-secret"), os.path.join(tmp, "user-secret")
        for path, owner in ((root_secret, os.getuid()), (user_secret, ORDINARY_UID)):
            Path(path).write_text("token")
            os.chmod(path, 0o600)
            if os.getuid() == 0:
                os.chown(path, owner, owner)
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            targets = make_targets([tmp, str(REPO), str(REPO / "results")], [root_secret, user_secret],
                                   server.getsockname()[1])
            host_segment = shared_memory(targets["host_shm_key"], create=True)
            try:
                yield targets
            finally:
                remove_shared_memory(host_segment)
        assert not [p for p in targets["write_targets"] if os.path.lexists(p)]  # nothing left behind
        time.sleep(0.2)
        assert sleepers(targets["marker"]) == []  # the setsid() grandchild died with the run
        left = shared_memory(targets["sandbox_shm_key"])
        if left >= 0:
            remove_shared_memory(left)
        assert left == -1  # the program's shared memory died with its IPC namespace


def _held(results: dict) -> None:
    broken = {name: detail for name, (status, detail, _) in results.items() if status != "pass"}
    assert broken == {}


def test_the_program_holds_no_privilege_and_sees_a_private_root():
    layers = _needs_private_root()
    assert [layer for layer in layers if layer in NAMESPACED_LAYERS] == NAMESPACED_LAYERS
    expected_uid = SANDBOX_UID if os.getuid() == 0 else os.getuid()
    assert f"uid-{expected_uid}" in layers
    source = ("import os\nstatus = open('/proc/self/status').read()\n"
              "print(os.geteuid(), [l.split()[1] for l in status.splitlines() if l.startswith('CapEff')][0])\n"
              "print(sorted(os.listdir('/')))")
    result = run_program(source)
    ids, top = result.stdout.splitlines()
    euid, cap_eff = ids.split()
    assert (int(euid), int(cap_eff, 16)) == (expected_uid, 0)
    assert set(eval(top)) <= {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "dev", "proc", "tmp",
                              *{p.split("/")[1] for p in (sys.base_prefix, sys.prefix)}}


def test_attacks_are_refused(host_files):
    """mount, umount2, remounts, tmpfs, pivot_root, chroot, setuid(0), capset, nested namespaces,
    ptrace, secrets, /proc/1, writes everywhere outside the work dir, SysV shared memory, killing the
    supervisor and us, a fork bomb, a setsid() grandchild, the network: see tests/sandbox_attacks.py."""
    _needs_private_root()
    _held(run_attacks(host_files))


def test_attacks_are_refused_as_an_ordinary_user(host_files):
    if os.getuid() != 0:
        pytest.skip("we are an ordinary user already: test_attacks_are_refused is that run")
    _needs_private_root()
    cmd = [sys.executable, str(REPO / "tests" / "sandbox_attacks.py"), "--as-uid", str(ORDINARY_UID), str(REPO),
           json.dumps(host_files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode == CANNOT_RUN_AS_USER:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["uid"] == ORDINARY_UID
    _held(report["results"])
    assert all(f"uid-{ORDINARY_UID}" in layers for _, _, layers in report["results"].values())
    status, detail, stdout, layers = report["plain"]
    assert (status, stdout) == ("pass", f"{ORDINARY_UID}\n"), detail
    for path, exists in report["left_behind"]:  # work dirs the program locked are removed all the same
        assert path and not exists, path
    assert "no-new-privs" in layers and "no namespaces (PDBENCH_SANDBOX=plain)" in layers


def test_plain_mode_says_what_it_lacks(monkeypatch):
    monkeypatch.setenv("PDBENCH_SANDBOX", "plain")
    result = run_program("import os\nprint(os.geteuid())")
    assert result.status == "pass", result.detail
    assert "no namespaces (PDBENCH_SANDBOX=plain)" in result.isolation and "private-root" not in result.isolation
    assert f"uid-{result.stdout.strip()}" in result.isolation


def test_a_code_suite_warns_when_the_sandbox_lacks_its_namespaces(monkeypatch):
    """Containers often refuse namespaces: the run goes on, but the user is told before decoding."""
    import suites
    from suites import sandbox

    monkeypatch.setattr(sandbox, "isolation_gaps", lambda: ("private-root", "no namespaces (EPERM)"))
    with pytest.warns(UserWarning, match=r"without private-root, no namespaces \(EPERM\)"):
        suites.get("mbpp", allow_code_exec=True, data_dir=SAMPLE_DATA, limit=1).check_ready()


def test_the_isolation_probe_finds_nothing_missing_where_namespaces_work():
    from suites import sandbox

    _needs_private_root()
    sandbox.isolation_gaps.cache_clear()
    assert sandbox.isolation_gaps() == ()
