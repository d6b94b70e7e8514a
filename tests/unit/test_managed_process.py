"""The local stack's process handles (pipeline.devstack.ManagedProcess)."""

from __future__ import annotations


def test_a_child_still_inside_exec_counts_as_alive(monkeypatch):
    """The devstack's start-up checks ask `alive()` right after spawning; a child whose argv is not
    set up yet (empty /proc/PID/cmdline) is starting, not dead (else its server is never stopped)."""
    import os

    import pipeline.devstack as ds

    proc = ds.ManagedProcess(name="x", pid=os.getpid(), marker="-p 1234", log_path="/dev/null")
    monkeypatch.setattr(ds, "cmdline", lambda pid: [])
    assert proc.alive()
    monkeypatch.setattr(ds, "cmdline", lambda pid: ["moto_server", "-p", "9999"])
    assert not proc.alive()  # another program on that pid: not ours
    monkeypatch.setattr(ds, "cmdline", lambda pid: ["moto_server", "-H", "127.0.0.1", "-p", "1234"])
    assert proc.alive()


def test_free_ports_are_distinct_and_skip_excluded():
    """Ray's head got one port for two components when each came from its own free_port()
    call; free_ports holds them all open until every one is picked."""
    from pipeline.devstack import free_ports

    first = free_ports(1)[0]
    ports = free_ports(32, exclude={first})
    assert len(set(ports)) == 32 and first not in ports
