"""load_tests/pipeline_load.py: where offered frames went (offered = sent + named ingest
losses + a visible residual), and the parsers its --cost mode reads."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "load_tests"))
from pipeline_load import (  # noqa: E402
    broker_request_kind,
    broker_requests,
    cost_summary,
    final_ingest_drops,
    ingest_accounting,
    labelled,
    local_stack_summary,
    s3_requests,
)

T0 = 1_000_000.0


def _frames(start_ms: float, n: int, fps: float = 10.0) -> list[int]:
    return [int(start_ms + i * 1000 / fps) for i in range(n)]


def test_nothing_sent_is_all_startup() -> None:
    acc = ingest_accounting({}, ["a", "b"], 10.0, T0, T0 + 10_000, {})
    assert acc["frames_offered"] == 200 and acc["frames_sent_in_window"] == 0
    assert acc["ingest_losses"] == {"startup_before_first_chunk": 200, "unfinished_at_window_end": 0}
    assert acc["frames_unaccounted"] == 0


def test_offered_is_sent_plus_each_named_loss() -> None:
    # a: starts 2 s late, sends to 8 s, nothing after (a chunk cut at the end); 5 frames
    # dropped on backpressure mid-stream. b: on time, runs past the window's end.
    a = _frames(T0 + 2000, 20) + _frames(T0 + 4500, 35)
    b = _frames(T0, 120)
    acc = ingest_accounting({"a": a, "b": b}, ["a", "b"], 10.0, T0, T0 + 10_000, {"backpressure": 5.0,
                                                                                    "producer_full": 0.0})
    losses = acc["ingest_losses"]
    assert losses == {"startup_before_first_chunk": 20, "backpressure": 5, "unfinished_at_window_end": 20}
    assert acc["frames_sent_in_window"] == 55 + 100 and acc["frames_sent_outside_window"] == 20
    assert acc["frames_unaccounted"] == 0
    assert acc["frames_offered"] == acc["frames_sent_in_window"] + sum(losses.values()) + acc["frames_unaccounted"]


def test_drops_before_a_cameras_first_chunk_are_not_startup() -> None:
    # 1 s of start-up, then 1 s dropped on backpressure (carried in the first sent chunk)
    a = _frames(T0 + 2000, 80)
    acc = ingest_accounting({"a": a}, ["a"], 10.0, T0, T0 + 10_000, {"backpressure": 10.0}, {"a": 10})
    assert acc["ingest_losses"]["startup_before_first_chunk"] == 10
    assert acc["frames_unaccounted"] == 0


def test_an_unexplained_gap_shows_as_unaccounted() -> None:
    a = _frames(T0, 30) + _frames(T0 + 5000, 50)  # 2 s missing, no counter names them
    acc = ingest_accounting({"a": a}, ["a"], 10.0, T0, T0 + 10_000, {})
    assert acc["frames_unaccounted"] == 20


def test_labelled_and_final_drops(tmp_path: Path) -> None:
    text = ('veil_ingest_dropped_frames_total{reason="backpressure"} 12.0\n'
            'veil_ingest_dropped_frames_total{reason="stopping"} 0.0\n'
            'veil_ingest_dropped_chunks_total{reason="backpressure"} 3.0\n')
    assert labelled(text, "veil_ingest_dropped_frames_total", "reason") == {"backpressure": 12.0, "stopping": 0.0}
    log = tmp_path / "ingest.log"
    assert final_ingest_drops(log) is None
    log.write_text("x ingest stopped worker=w produced=3 failed=0 frames_out=9 dropped_frames=-\n"
                   "y ingest stopped worker=w produced=5 failed=0 frames_out=20 dropped_frames=stopping:4,"
                   "backpressure:2\n")
    assert final_ingest_drops(log) == {"stopping": 4, "backpressure": 2}


def test_s3_requests_count_only_our_buckets_from_the_offset(tmp_path: Path) -> None:
    log = tmp_path / "s3.log"
    before = '127.0.0.1 - - [d] "PUT /veil-redacted/old.mp4 HTTP/1.1" 200 -\n'
    log.write_text(before
                   + '127.0.0.1 - - [d] "PUT /veil-redacted/camera=a/x.mp4 HTTP/1.1" 200 -\n'
                   + '127.0.0.1 - - [d] "\x1b[33mHEAD /veil-redacted/camera=a/x.json HTTP/1.1\x1b[0m" 404 -\n'
                   + '127.0.0.1 - - [d] "PUT /veil-audit/chain/a HTTP/1.1" 200 -\n'
                   + '127.0.0.1 - - [d] "PUT /veil-broker/segments/1 HTTP/1.1" 200 -\n')
    assert s3_requests(log, len(before), {"veil-redacted", "veil-audit"}) == {"PUT": 2, "HEAD": 1}


def test_cost_summary_per_camera_and_per_hour() -> None:
    samples = [{"t": 0, "ingest_rss": 100 << 20, "ingest_threads": 10, "ingest_fds": 20, "sink_rss": 80 << 20,
                "sink_threads": 8, "sink_open_segments": 0, "sink_buffered": 0},
               {"t": 2, "ingest_rss": 200 << 20, "ingest_threads": 20, "ingest_fds": 30, "sink_rss": 120 << 20,
                "sink_threads": 8, "sink_open_segments": 10, "sink_buffered": 1 << 20}]
    c = cost_summary(samples, 10, 0.5, segments=20, segment_seconds=60, chunk_seconds=2.0,
                     s3={"PUT": 60, "HEAD": 20}, messages={"raw": 9000})
    assert c["ingest_threads_per_camera"] == 2.0 and c["ingest_rss_mib_per_camera"] == 20.0
    assert c["sink_rss_mib_per_open_camera"] == 12.0
    assert c["s3_puts_per_segment"] == 3.0 and c["s3_puts_per_camera_hour_steady"] == 180
    assert c["s3_puts_per_camera_hour_measured"] == 120
    assert c["kafka_messages_per_camera_hour"] == {"raw": 18000}
    assert c["kafka_chunk_messages_per_camera_hour_steady"] == 1800


B = "/veil-broker/clusters/veilstream"


def test_broker_request_kinds() -> None:
    assert broker_request_kind("GET", "", "?list-type=2&prefix=clusters/veilstream/topics/veil.chunks.raw/"
                               "partitions/0000000001/records/") == "LIST veil.chunks.raw"
    assert broker_request_kind("GET", f"{B}/topics/veil.chunks.raw/partitions/0000000001/records/"
                               "00000000000000000042.batch", "") == "GET batch veil.chunks.raw"
    assert broker_request_kind("PUT", f"{B}/topics/veil.audit/partitions/0000000000/watermark.json",
                               "") == "PUT watermark veil.audit"
    assert broker_request_kind("PUT", f"{B}/groups/consumers/veil-process.json", "") == "PUT group veil-process"
    assert broker_request_kind("PUT", f"{B}/groups/consumers/veil-process/offsets/veil.chunks.raw/partitions/"
                               "0000000003.json", "") == "PUT offsets veil-process"
    assert broker_request_kind("PUT", f"{B}/meta.json", "") == "PUT meta"
    assert broker_request_kind("HEAD", f"{B}/topics/veil.audit.json", "") == "HEAD other"


def test_broker_requests_only_the_broker_bucket_between_offsets(tmp_path: Path) -> None:
    log = tmp_path / "s3.log"
    before = f'127.0.0.1 - - [d] "GET {B}/meta.json HTTP/1.1" 200 -\n'
    inside = (f'127.0.0.1 - - [d] "\x1b[32mGET {B}/topics/t/partitions/0000000000/records/'
              f'00000000000000000005.batch HTTP/1.1\x1b[0m" 200 -\n'
              f'127.0.0.1 - - [d] "GET {B}/topics/t/partitions/0000000001/records/00000000000000000000.batch '
              'HTTP/1.1" 200 -\n'
              '127.0.0.1 - - [d] "GET /veil-broker?list-type=2&prefix=clusters/veilstream/topics/t/partitions/'
              '0000000000/records/ HTTP/1.1" 200 -\n'
              '127.0.0.1 - - [d] "PUT /veil-redacted/camera=a/x.mp4 HTTP/1.1" 200 -\n')
    after = f'127.0.0.1 - - [d] "PUT {B}/meta.json HTTP/1.1" 200 -\n'
    log.write_text(before + inside + after)
    start = len(before.encode())
    assert broker_requests(log, start, start + len(inside.encode()), "veil-broker") == \
        {"GET batch t": 2, "LIST t": 1}
    assert broker_requests(log, start, None, "veil-broker")["PUT meta"] == 1
    assert broker_requests(tmp_path / "missing.log", 0, None, "veil-broker") == {}


def test_local_stack_summary_is_per_frame_and_per_chunk() -> None:
    s = local_stack_summary({"broker": 2.0, "s3": 8.0}, 30.0, {"GET batch raw": 40, "PUT meta": 10},
                            frames=100, chunks=50)
    assert s["cpu_s_per_frame_local_stack"] == {"broker": 0.02, "s3": 0.08}
    assert s["cpu_ms_per_chunk_sent_local_stack"] == {"broker": 40.0, "s3": 160.0}
    assert s["capacity_fps_2cpu_with_local_stack"] == 5.0  # (30 + 10) / 100 CPU-s per frame
    assert s["broker_s3_requests_per_chunk"] == {"GET batch raw": 0.8, "PUT meta": 0.2}
    assert s["broker_s3_requests_per_chunk_total"] == 1.0
