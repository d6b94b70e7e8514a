"""VeilStream pipeline: everything that touches the outside world (CLI, Kafka, Ray, MinIO)."""
