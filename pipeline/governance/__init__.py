"""Governance: what a policy means for object storage.

Pure functions (no client calls) that turn a :class:`schemas.policy.Policy` into

- object-lock retention for every object the sink writes (``retain_until``),
- bucket lifecycle rules, one per policy, matched by the ``policy-id`` object tag that
  the sink puts on every segment and manifest (``lifecycle_rules``),
- IAM-style JSON policy documents per role and for the sink's own credentials
  (``role_documents``, ``sink_document``), for ``mc admin policy create`` or AWS IAM.

The sink applies the first two: retention per object through the
:class:`~pipeline.governance.segmentplugins.RetentionPlugin` it runs, the lifecycle rules on
the bucket when the edge builds it (``pipeline.sinkapp``). What else governance does to every
stored segment (hash chain, notice, audit event) is in :mod:`.segmentplugins`.
The documents are rendered, not applied: the MinIO admin API is an operator's tool, and
``veilstream policy render`` prints them for it.
"""

from .rules import LifecycleRule, lifecycle_rules, retain_until, role_documents, sink_document

__all__ = ["LifecycleRule", "lifecycle_rules", "retain_until", "role_documents", "sink_document"]
