"""Ingest: cameras -> ``veil.chunks.raw``, one Kafka message per chunk, key = camera id.

Sharding without a coordinator: every camera is a record on the compacted
``veil.cameras`` topic, keyed by camera id (so its partition is a hash of the id). All
ingest workers join one consumer group on that topic; Kafka's group protocol assigns each
worker a set of partitions, and a worker reads the cameras of exactly those partitions.
When a worker joins, leaves or dies, the group rebalances and the cameras of the moved
partitions stop on one worker and start on another. The registry consumer never commits:
on every assignment it reads its partitions from the beginning (the topic is compacted,
the latest record per camera wins, a tombstone or ``enabled: false`` removes it).

Per camera, a reader thread cuts the stream into chunks (H.264 GOPs passed through
untouched, JPEG frames otherwise), stamps camera timestamps, and hands them to the shared
idempotent producer. In-flight chunks per camera are bounded: a live camera whose chunks
cannot be delivered fast enough drops the newest chunk and counts its frames (carried
downstream in the next chunk's ``dropped_frames``); a file read faster than real time
waits instead. A camera that fails is retried with exponential backoff.
"""
