"""Ingest: cameras -> ``veil.chunks.raw``, one Kafka message per chunk, key = camera id.

Sharding without a coordinator
------------------------------
Every camera is a record on the compacted registry topic (``kafka.topics.cameras``,
default ``veil.cameras``), keyed by camera id, so its partition is a hash of the id. All
ingest workers join one consumer group (``ingest.consumer_group``) on that topic. Kafka's
group protocol hands each worker a set of partitions, and a worker runs exactly the
cameras whose records live on its partitions:

- on assignment, the worker reads the new partitions from the beginning (the registry
  consumer never commits). The topic is compacted, so this is the latest record per
  camera; records are applied in offset order, the latest wins, and a tombstone (``None``
  value) or ``enabled: false`` removes the camera. Records arriving later (a camera added,
  changed, disabled) start, restart or stop its reader at once.
- on revoke (or a lost session), the worker stops those cameras' readers *inside* the
  callback: the group gives a partition to its next owner only after the old owner's
  revoke returned, so a camera never streams from two workers. A reader still blocked in
  a network read after the bounded wait has its chunks refused.
- the assignor is ``cooperative-sticky``: a worker joining or leaving moves only the
  partitions that change hands; the other cameras keep streaming through the rebalance.
  A worker that dies loses its partitions after ``kafka.session_timeout_ms``.

Consequences: the number of registry partitions bounds how many ingest workers get
cameras (extra workers stand by, ready, and take over when one dies); cameras per worker
are as even as the hash spreads them over partitions. ``publish_cameras`` writes records
(the worker publishes ``ingest.cameras`` from its config at start; any tool may publish
more, or tombstones, at any time).

Per camera
----------
A reader thread (``source.CameraReader``) cuts the stream into chunks of about
``ingest.chunk_seconds`` (H.264 GOPs passed through untouched and cut at keyframes, JPEG
frames otherwise), stamps wall-clock camera timestamps and increasing sequence numbers
(see ``source``), and hands them to the worker's one idempotent producer. In-flight
chunks are bounded per camera and per worker (``backpressure``): a live camera whose
chunks cannot be delivered fast enough drops them, counts the frames in metrics, and
carries the count downstream in the next chunk's ``dropped_frames``; a file read faster
than real time waits instead. A camera that fails or disconnects is retried with jittered
exponential backoff (``ingest.reconnect_initial_s`` .. ``reconnect_max_s``), logged and
counted (``veil_ingest_reconnects_total``, ``veil_ingest_cameras_failing``).
"""

from .registry import CameraRegistry, backoff_s, owned_cameras, publish_cameras

__all__ = ["CameraRegistry", "backoff_s", "owned_cameras", "publish_cameras"]
