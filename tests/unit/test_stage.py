"""The stage skeleton: one DLQ path (error limit, real cause, commit after the ack), signals."""

from __future__ import annotations

from pipeline.stage import (
    DLQ_ERROR_MAX_CHARS,
    Source,
    StageKafka,
    client_settings,
    root_cause,
)
from schemas.config import parse_config
from schemas.messages import decode_dlq
from tests.fakes import FakeConsumer, FakeMsg, FakeProducer


def _stage(auto_ack: bool = True) -> StageKafka:
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "metrics": {"enabled": False}})
    st = StageKafka(cfg, "process")
    st.consumer = FakeConsumer([FakeMsg("raw", 0, 0, b"k", b"v", [])], on_revoke=None)
    st.producer = FakeProducer(auto_ack=auto_ack)
    return st


def test_a_dlq_record_keeps_the_message_cuts_the_error_and_commits_only_after_its_ack():
    st = _stage(auto_ack=False)
    msg = st.consumer.poll(0.1)[0]
    st.started(Source.of(msg))
    st.dlq_message(msg, "decode_failed", "x" * 10_000)
    st.commit()
    assert st.consumer.commits == []  # not acked yet: nothing committed
    st.producer.ack()
    st.commit()
    assert st.consumer.commits == [{("raw", 0): 1}]
    topic, value, key, headers = st.producer.sent[0]
    rec = decode_dlq(value, headers)
    assert (topic, key, rec.reason, len(rec.error)) == ("veil.dlq", b"k", "decode_failed", DLQ_ERROR_MAX_CHARS)
    assert st.metrics.value("veil_process_dlq_total", {"reason": "decode_failed"}) == 1


def test_a_refused_dlq_record_leaves_the_offset_uncommitted():
    st = _stage(auto_ack=False)
    msg = st.consumer.poll(0.1)[0]
    st.started(Source.of(msg))
    st.dlq_message(msg, "invalid_message", "bad")
    st.producer.ack(error="broker down")
    st.commit()
    assert st.consumer.commits == [] and st.tracker.inflight() == 1


def test_client_settings_are_built_in_one_place():
    cfg = parse_config({"kafka": {"bootstrap_servers": "b:9092"}})
    from pipeline.kafka import LIBRDKAFKA_LOG

    assert client_settings(cfg.kafka, client_id="veil-x") == {"bootstrap.servers": "b:9092", "client.id": "veil-x",
                                                              "logger": LIBRDKAFKA_LOG}


def test_root_cause_is_one_line():
    assert root_cause(ValueError("bad frame")) == "ValueError: bad frame"
    nested = RuntimeError("RayTaskError(ValueError): ray::X.f()\n  File x\nValueError: the real cause")
    assert root_cause(nested) == "the real cause"


def test_sigterm_sets_the_stop_event():
    """In a fresh interpreter: a SIGTERM raised inside the suite's process, after the detector
    tests left onnxruntime's and OpenVINO's worker threads running, crashed pytest (segfault),
    although a plain process that ran the same inference takes it (checked by hand)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import signal, threading\n"
        "from pipeline.stage import stop_on_signals\n"
        "ev = stop_on_signals()\n"
        "assert isinstance(ev, threading.Event) and not ev.is_set()\n"
        "signal.raise_signal(signal.SIGTERM)\n"
        "assert ev.is_set()\n"
        "print('stopped')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0 and proc.stdout.strip() == "stopped", proc.stderr


def test_a_revoked_partitions_lag_is_no_longer_reported_here():
    """Its new owner reports it: a stale value would count it twice in sum() over the group."""
    st = _stage()
    lags = [{("raw", 0): 5, ("raw", 1): 3}, {("raw", 1): 2}]
    st.consumer.lag = lambda: lags.pop(0)  # type: ignore[method-assign]
    st.log_status()
    st.log_status()
    samples = {s.labels["partition"]: s.value for m in st.metrics.registry.collect()
               if m.name == "veil_process_consumer_lag_messages" for s in m.samples}
    assert samples == {"1": 2}
