"""Hostile-but-possible workers (issue 25). A process-isolated model runs user
code in its worker, and user code can reach everything the worker holds: the
control socket and the shared-memory files (/proc/self/fd). Whatever it does
with them, the server must stay up and bounded:

- the server stays READY and other models (in-process and process-isolated)
  keep answering;
- a worker that breaks the control protocol is killed at once, the request
  it was running fails with a message saying what it did, the server log
  says it too, and the next request gets a new worker;
- unloading completes within a stated bound (the 10 s `finalize` grace,
  plus the 5 s reap grace, plus the time to start and stop a worker), leaves
  no worker and no zombie, and kills what the worker forked unless it left
  the worker's process group;
- 50 such cycles leave the server's fd count, thread count and RSS where
  they were (generous, load-proof bounds).

Model: tests/e2e/repos/hostile/hostile_worker (its docstring lists the
attacks), with rustpy.shm_limit_mb = 16 and rustpy.pending_calls_limit = 4.
"""
import json
import os
import signal
import time

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from e2e_client import infer
from reliability import copy_models, long_run, rss_kib, start_server, thread_count
from tritonharness import E2E_DIR

REPO = E2E_DIR / "repos" / "hostile"
MODEL = "hostile_worker"
# Unloading a worker: Shutdown, then at most SHUTDOWN_GRACE (10 s) for
# finalize and exit, then SIGKILL and reap. Stated bound, with room for a
# loaded machine.
UNLOAD_BOUND_S = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = copy_models(tmp_path_factory.mktemp("hostile_workers") / "repo",
                       REPO / "hostile_worker", REPO / "bystander", REPO / "slow")
    s = start_server(repo, name="hostile_workers", model_control_mode="explicit",
                     load_models=["bystander", "slow"], wait_models=["bystander", "slow"])
    yield s
    s.stop()


# ------------------------------------------------------------------ helpers
def children(pid: int) -> dict:
    """{pid: (comm, state)} of the processes whose parent is `pid`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        if int(ppid) == pid:
            found[int(entry)] = (comm, state)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(cond, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def ask(s, mode: str, protocol: str = "http"):
    """(pid, report) of a request that succeeded, or the error message."""
    try:
        r = infer(s, protocol, MODEL, {"MODE": np.array([mode.encode()], np.object_)})
    except InferenceServerException as e:
        return e.message()
    return int(r.as_numpy("PID")[0]), json.loads(r.as_numpy("REPORT")[0])


def serving(s):
    """The server is up and READY, and both other models answer."""
    assert s.running, "tritonserver died\n" + s.log_tail()
    assert s.is_ready() or s.model_ready("bystander"), s.log_tail()
    x = np.array([1, 2, 3], np.int32)
    np.testing.assert_array_equal(infer(s, "grpc", "bystander", {"X": x}).as_numpy("Y"), x * 2)
    np.testing.assert_array_equal(infer(s, "http", "slow", {"X": x}).as_numpy("Y"), x + 1)
    return True


def load(s) -> int:
    status, body = s.load_model(MODEL)
    assert status == 200, body
    pid, _ = ask(s, "ok")
    return pid


def unload(s) -> float:
    """Unloads the model; returns how long it took. Afterwards no worker and
    no zombie is left among the server's children."""
    started = time.monotonic()
    status, body = s.unload_model(MODEL)
    assert status == 200, body
    assert wait_until(lambda: {m["name"]: m for m in s.repository_index()}[MODEL].get("state")
                      == "UNAVAILABLE", UNLOAD_BOUND_S), "the unload did not complete"
    took = time.monotonic() - started
    # The bystander's worker is the only one left, and nothing is a zombie.
    assert wait_until(lambda: sum(c == "rustpy-worker" for c, _ in children(s.proc.pid).values()) == 1,
                      30), children(s.proc.pid)
    zombies = {p: c for p, c in children(s.proc.pid).items() if c[1] == "Z"}
    assert not zombies, zombies
    return took


def broke(s, got, needle: str, pid: int):
    """The request failed saying the worker broke the protocol (and how),
    the log says so, and the next request gets a new worker."""
    assert isinstance(got, str), f"the request succeeded: {got}"
    assert "broke the control protocol" in got and needle in got, got
    assert f"pid {pid}" in got, got
    assert s.wait_for_log(f"(pid {pid}) broke the control protocol"), s.log_tail()
    assert not alive(pid)
    again = ask(s, "ok")
    assert isinstance(again, tuple), again
    assert again[0] != pid
    return again[0]


# What each attack does, checked after it ran on worker `pid` of server `s`.
def expect_unknown(s, pid):
    broke(s, ask(s, "unknown"), "which it was never given or had already answered", pid)


def expect_twice(s, pid):
    broke(s, ask(s, "twice"), f"request 0 of batch", pid)


def expect_garbage(s, pid):
    broke(s, ask(s, "garbage"), "malformed control message", pid)


def expect_oversize(s, pid):
    # Refused on its length field: the body is never waited for.
    broke(s, ask(s, "oversize"),
          f"a control frame of {(256 << 20) + 1} bytes (at most {256 << 20} are allowed)", pid)


def expect_ready_again(s, pid):
    broke(s, ask(s, "ready_again"), "a second first answer", pid)


def expect_dup2_stdout(s, pid):
    broke(s, ask(s, "dup2_stdout"), "control frame of", pid)


def expect_bls_claim(s, pid):
    broke(s, ask(s, "bls_claim"), "BLS", pid)


def expect_dup2_devnull(s, pid):
    # The worker's reads see the end of a file: it finishes the batch into
    # /dev/null and exits; the request fails saying the worker ended.
    got = ask(s, "dup2_devnull")
    assert isinstance(got, str) and f"pid {pid}" in got and "exited" in got, got
    assert wait_until(lambda: not alive(pid))
    assert isinstance(ask(s, "ok"), tuple)


def expect_fork(s, pid):
    _, report = ask(s, "fork")
    return report["child"]


def expect_fork_escape(s, pid):
    _, report = ask(s, "fork_escape")
    return report["child"]


def expect_sigterm(s, pid):
    got = ask(s, "sigterm")
    assert got == (pid, {"alive": True}), got
    os.kill(pid, signal.SIGTERM)
    assert ask(s, "ok")[0] == pid


def expect_grow(s, pid):
    got_pid, report = ask(s, "grow")
    assert got_pid == pid
    assert set(report) == {"rustpy-input", "rustpy-output", "rustpy-bls-in", "rustpy-bls-out"}, report
    for name, seen in report.items():
        assert seen["size"] == 16 << 20, (name, seen)
        for what in ("grow", "shrink", "write_past_end", "fallocate_past_end"):
            assert seen[what] == "PermissionError", (name, what, seen)
        # Filled: it holds what the limit allows, never more.
        assert seen["size_after"] == 16 << 20 and seen["held"] <= 16 << 20, (name, seen)


def expect_big_output(s, pid):
    # The cap on the output region: that request fails saying so, the
    # worker (which broke nothing) keeps serving.
    got = ask(s, "big_output")
    assert isinstance(got, str), "a 20 MiB output went through a 16 MiB region"
    assert "outputs need 20.0 MiB of shared memory, more than the 16 MiB of rustpy.shm_limit_mb allow" \
        in got, got
    assert ask(s, "ok")[0] == pid


def expect_big_bls(s, pid):
    got_pid, report = ask(s, "big_bls")
    assert got_pid == pid
    assert "they need 20.0 MiB, more than the BLS shared memory of 16 MiB holds (rustpy.shm_limit_mb)" \
        in report["error"], report
    assert ask(s, "ok")[0] == pid


def expect_flood_logs(s, pid):
    assert ask(s, "flood_logs") == (pid, {"sent": 20000})


def expect_flood_calls(s, pid):
    got_pid, report = ask(s, "flood_calls")
    assert got_pid == pid
    assert report["answered"] >= 4 and report["refused"] > 0, report
    assert report["answered"] + report["refused"] == 40, report
    assert "rustpy.pending_calls_limit" in report["first_refusal"], report
    assert "4 server calls" in report["first_refusal"], report


ATTACKS = {
    "unknown": expect_unknown,
    "twice": expect_twice,
    "garbage": expect_garbage,
    "oversize": expect_oversize,
    "ready_again": expect_ready_again,
    "dup2_devnull": expect_dup2_devnull,
    "dup2_stdout": expect_dup2_stdout,
    "fork": expect_fork,
    "fork_escape": expect_fork_escape,
    "sigterm": expect_sigterm,
    "grow": expect_grow,
    "bls_claim": expect_bls_claim,
    "big_output": expect_big_output,
    "big_bls": expect_big_bls,
    "flood_logs": expect_flood_logs,
    "flood_calls": expect_flood_calls,
}


def cycle(s, attack: str) -> float:
    """Load, attack, check, unload; returns the unload's duration."""
    pid = load(s)
    child = ATTACKS[attack](s, pid)
    assert serving(s)
    took = unload(s)
    if child is not None:
        if attack == "fork":
            # In the worker's process group: killed with it.
            assert wait_until(lambda: not alive(child), 30), f"forked child {child} outlived the unload"
        else:
            # It left the group (setsid): out of reach, and of the server's.
            os.kill(child, signal.SIGKILL)
    return took


# -------------------------------------------------------------------- tests
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_hostile_worker_leaves_the_server_serving(server, attack):
    took = cycle(server, attack)
    print(f"\n{attack}: unload took {took:.1f} s")
    assert took < UNLOAD_BOUND_S


def test_finalize_that_sleeps_forever_is_killed_after_its_grace(server):
    pid = load(server)
    assert ask(server, "finalize_sleep")[0] == pid
    took = unload(server)
    print(f"\nfinalize sleeping forever: unload took {took:.1f} s")
    assert not alive(pid)
    assert server.wait_for_log(f"(pid {pid}) did not exit within 10 s"), server.log_tail()
    assert serving(server)


def test_half_a_frame_is_not_waited_for(server):
    """Half a frame, then silence while execute sleeps 40 s: the reader gives
    up after its 10 s stall timeout, the worker is killed, the request fails
    well before execute would have returned (before: it waited for it, then
    for 5 s more, and said nothing about why)."""
    pid = load(server)
    got = ask(server, "half")
    broke(server, got, "stopped after", pid)
    assert serving(server)
    unload(server)


def test_a_worker_that_reads_nothing_is_not_waited_for(server):
    """Server calls whose replies the worker never reads: once the socket's
    buffer is full, the backend's write gives up after its 10 s stall
    timeout and the worker is killed (the reader thread answering inline
    calls would otherwise block for good, and with it every response of
    that worker)."""
    pid = load(server)
    got = ask(server, "deaf")
    broke(server, got, "it read nothing of its control channel for 10 s", pid)
    assert serving(server)
    unload(server)


def test_fifty_hostile_cycles_leave_nothing_behind_in_the_server(server):
    """Load, attack, unload, round robin over the attacks: the server's fds
    and threads come back to where they were, its RSS grows by less than a
    fixed bound. (Before: a forked child kept the control socket open, and
    the reader thread, the cancellation thread, the socket and the four
    region fds of every such worker stayed in the server for good.)"""
    attacks = sorted(ATTACKS)
    cycles = 50 * len(attacks) if long_run() else 50
    pid = server.proc.pid
    for attack in attacks:  # warm-up: first loads allocate for good
        cycle(server, attack)
    fds, threads, rss = fd_count(pid), thread_count(pid), rss_kib(pid)
    for i in range(cycles):
        cycle(server, attacks[i % len(attacks)])
    # Threads and fds of the last cycle may take a moment to go.
    assert wait_until(lambda: fd_count(pid) <= fds + 4 and thread_count(pid) <= threads + 4, 30), (
        f"fds {fds} -> {fd_count(pid)}, threads {threads} -> {thread_count(pid)}")
    growth_mib = (rss_kib(pid) - rss) / 1024
    print(f"\n{cycles} hostile load/attack/unload cycles: fds {fds} -> {fd_count(pid)}, "
          f"threads {threads} -> {thread_count(pid)}, RSS growth {growth_mib:.1f} MiB")
    assert growth_mib < 64, growth_mib
    assert serving(server)
