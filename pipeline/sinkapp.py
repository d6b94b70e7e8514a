"""``veilstream sink`` as deployed: where the sink's data path (:mod:`pipeline.sink`) and
governance (:mod:`pipeline.governance`) meet. Neither imports the other; this edge builds
the stores, picks the plug-ins the sink runs for every segment (retention, hash chain,
notice, audit: :func:`pipeline.governance.segmentplugins.sink_plugins`) and hands them over.
"""

from __future__ import annotations

import threading
from typing import Any

from pipeline.governance import lifecycle_rules
from pipeline.governance.policylog import record_policy_changes
from pipeline.governance.segmentplugins import sink_plugins
from pipeline.objectstore import MinioSegmentStore, audit_store_for
from pipeline.sink.worker import SinkWorker


def build_sink(config: Any, stop_event: threading.Event | None = None) -> SinkWorker:
    """The MinIO store from config (bucket created, object lock checked, one lifecycle rule
    per policy of ``policies_dir``), the audit bucket, and a sink worker on them with the
    governance plug-ins."""
    store = MinioSegmentStore.from_config(config.object_store)
    store.ensure_bucket()
    audit = audit_store_for(config)
    policies: dict[str, Any] = {}
    if getattr(config, "policies_dir", None):
        from schemas.policy import load_policies

        policies = load_policies(config.policies_dir)
    worker = SinkWorker(config, store, stop_event=stop_event, plugins=sink_plugins(config, audit, policies))
    if policies:
        from pipeline.stage import producer_for

        producer = producer_for(config.kafka, "veil-sink-policy-log")
        record_policy_changes(policies, audit, producer, config.kafka.topics.audit)
        store.set_lifecycle(lifecycle_rules(policies.values()))
    return worker


def main(config: Any, stop_event: threading.Event | None = None) -> int:
    """Entry point of ``veilstream sink``: build the store, plug-ins and worker from config, and run."""
    return build_sink(config, stop_event).run()
