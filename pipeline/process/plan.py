"""The masking plan: what the process stage masks, how, and with which detectors.

Built once, at start-up, from the policies directory (or the inline ``process`` keys,
which become a policy like any other), and the defaults; pure and frozen, so
``veilstream config check`` builds exactly what the workers will run, without Ray.

* One set of detectors serves every policy: the union of their classes, each detector at
  the lowest threshold any policy asks for (a policy that sets none takes the detector's
  own :data:`operators.detectors.DEFAULT_THRESHOLDS`).
* Per policy: its classes, style, strength, padding, thresholds (it filters the shared
  detectors' boxes at its own), zones and on-failure rule.
* Per chunk: the camera's own zones (its registry record, carried on every chunk) are
  unioned with its policy's: a zone drawn on a camera is masked on every frame.

:func:`camera_plan` answers "what does the stream do to this camera's chunks" without Kafka
or Ray (``veilstream redact --camera ID``): the camera's record from the config, routed by
the same plan, with the same zones, as typed :class:`~operators.zones.ZoneSet`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from operators.redactor import RedactionConfig
from operators.zones import PrivacyZone, ZoneSet, parse_zone_list
from schemas.errors import ConfigError
from schemas.policy import Policy, load_policies, parse_policy

# detector -> (the classes that need it, the RedactionConfig threshold field it reads)
_DETECTOR_NEEDS: dict[str, tuple[frozenset[str], str]] = {
    "face": (frozenset({"face"}), "face_threshold"),
    "person": (frozenset({"face", "person"}), "person_threshold"),  # persons feed the head fallback
    "text": (frozenset({"plate", "text"}), "text_threshold"),
}


class OnFailure(enum.Enum):
    """What happens to a frame whose detection failed: masked whole, or left out."""

    MASK = "mask"
    DROP = "drop"


@dataclass(frozen=True)
class PolicyPlan:
    """How one policy masks: its redaction config, zones and on-failure rule.

    Attributes:
        policy_id, version: stamped on every chunk it redacts.
        redaction: classes, style, strength, padding and this policy's thresholds.
        on_failure: :class:`OnFailure`.
        zones: the policy's own zones (``{name, polygon, normalized}`` mappings).
        camera_zones: per camera id, zones of the legacy inline ``process.zones`` document.
    """

    policy_id: str
    version: int
    redaction: RedactionConfig
    on_failure: OnFailure
    zones: tuple[Mapping[str, Any], ...] = ()
    camera_zones: Mapping[str, tuple[Mapping[str, Any], ...]] = dataclasses.field(default_factory=dict)
    # the two above, typed once when the plan is built (a bad polygon fails at start-up)
    _typed: tuple[PrivacyZone, ...] = dataclasses.field(init=False, repr=False, compare=False)
    _typed_cameras: Mapping[str, tuple[PrivacyZone, ...]] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_typed", parse_zone_list(self.zones, f"policy {self.policy_id}: zones"))
        object.__setattr__(self, "_typed_cameras", {
            cam: parse_zone_list(zs, f"process.zones.cameras.{cam}") for cam, zs in self.camera_zones.items()})

    def zone_set(self, camera_id: str, camera_zones: Sequence[Mapping[str, Any]] = ()) -> ZoneSet | None:
        """The zones masked on a chunk of ``camera_id``, typed: the policy's, the legacy
        document's for that camera and the camera's own (``camera_zones``, from its registry
        record); ``None`` when none: a masker takes this as it is."""
        own = parse_zone_list(camera_zones, f"camera {camera_id}: zones") if camera_zones else ()
        zs = (*self._typed, *self._typed_cameras.get(camera_id, ()), *own)
        return ZoneSet(zs) if zs else None


@dataclass(frozen=True)
class MaskingPlan:
    """Every policy the process stage serves, and the one detector set they share.

    Attributes:
        detector: the detector actors' config (union of classes, lowest thresholds).
        policies: policy id -> :class:`PolicyPlan` (never mutated after :func:`build_plan`;
            a plain dict so the plan pickles to Ray actors).
        default_id: the policy of chunks whose camera names none.
        routed: chunks go by their camera's ``policy_id`` (``policies_dir`` set); without
            a directory every chunk gets the default (the inline policy).
    """

    detector: RedactionConfig
    policies: Mapping[str, PolicyPlan]
    default_id: str
    routed: bool

    @property
    def default(self) -> PolicyPlan:
        return self.policies[self.default_id]

    def for_chunk(self, policy_id: str | None) -> PolicyPlan | None:
        """The chunk's policy; ``None`` when its camera names one nobody wrote (DLQ)."""
        if not self.routed or not policy_id:
            return self.default
        return self.policies.get(policy_id)

    def describe(self) -> str:
        """One line: ``id:vN:classes:on_failure`` per policy."""
        return ", ".join(f"{p.policy_id}:v{p.version}:{'+'.join(p.redaction.classes)}:{p.on_failure.value}"
                         for _, p in sorted(self.policies.items()))


def _redaction_of(pol: Policy, base: RedactionConfig) -> RedactionConfig:
    """``base`` (the stage's detection settings) with a policy's choices."""
    th, pad = pol.thresholds, pol.padding
    kw: dict[str, Any] = {"classes": tuple(pol.classes), "style": pol.style, "strength": pol.strength}
    for cls in ("face", "person"):
        if cls in th:
            kw[f"{cls}_threshold"] = th[cls]
    # one text model finds plate characters and other text: the lower threshold is the safe one
    text_th = [th[c] for c in ("plate", "text") if c in th]
    if text_th:
        kw["text_threshold"] = min(text_th)
    for cls in ("face", "plate", "person", "head"):
        if cls in pad:
            kw[f"{cls}_padding"] = pad[cls]
    return replace(base, **kw).validate()


def plan_from(policy: Policy, base: RedactionConfig, *, extra_zones: Sequence[Mapping[str, Any]] = (),
              camera_zones: Mapping[str, tuple[Mapping[str, Any], ...]] | None = None) -> PolicyPlan:
    """How ``policy`` masks, on the detection settings ``base``: the one way a policy becomes a
    plan, for the stream (:func:`build_plan`) and for ``veilstream redact --policy``.

    Args:
        policy: a parsed policy (``schemas.policy``).
        base: detection settings of whoever runs it (detect_every, providers, models, sizes).
        extra_zones: zones masked on top of the policy's own (the legacy inline document).
        camera_zones: per camera id, more zones (the legacy inline document's ``cameras``).
    """
    return PolicyPlan(policy.policy_id, policy.version, _redaction_of(policy, base), OnFailure(policy.on_failure),
                      (*policy.zones, *extra_zones), dict(camera_zones or {}))


def _inline_policy(process: Any) -> Policy:
    """The inline ``process`` keys as a policy (no ``policies_dir``)."""
    doc = process.zones or {}
    return parse_policy({"policy_id": process.policy_id, "version": process.policy_version,
                         "classes": list(process.classes), "style": process.style,
                         "zones": list(doc.get("zones") or [])},
                        what="process (inline policy)")


def _default_thresholds(face_model: str) -> dict[str, float]:
    from operators.detectors import DEFAULT_THRESHOLDS

    return {"face_threshold": DEFAULT_THRESHOLDS[face_model], "person_threshold": DEFAULT_THRESHOLDS["yolox_person"],
            "text_threshold": DEFAULT_THRESHOLDS["ppocr_text"]}


def build_plan(cfg: Any, *, model_dir: str | None = None, policy: Policy | None = None) -> MaskingPlan:
    """The plan for a ``PipelineConfig``: every policy of ``policies_dir`` (default
    ``process.policy_id``), or the inline ``process`` keys as the one policy.

    Args:
        policy: takes the place of the config's policy with its id (a new version tried on
            a file before it is deployed).

    Raises:
        ConfigError: a policy is invalid, the default policy does not exist (naming
            ``process.policy_id`` and what exists), or ``policy`` replaces none.
    """
    p, det = cfg.process, cfg.ray.detector
    base = RedactionConfig(
        detect_every=p.detect_every, providers=tuple(det.providers) if det.providers else None,
        model_dir=model_dir or p.model_dir, threads=getattr(det, "threads", None), face_model=p.face_model,
        face_max_side=p.face_max_side, text_max_side=p.text_max_side, precision=p.precision,
        text_full_min_side=p.text_full_min_side, small_frame_side=p.small_frame_side,
        text_full_every=p.text_full_every, text_full_precision=getattr(p, "text_full_precision", "bf16"),
        text_dark_precision=getattr(p, "text_dark_precision", "fp32"),
        small_frame_centerface_precision=getattr(p, "small_frame_centerface_precision", "bf16")).validate()
    pdir = getattr(cfg, "policies_dir", None)
    if pdir:
        found = load_policies(pdir)
        if p.policy_id not in found:
            raise ConfigError(f"process.policy_id: no policy {p.policy_id!r} in policies_dir {pdir} "
                              f"(found: {', '.join(sorted(found)) or 'none'})")
    else:
        inline = _inline_policy(p)
        found = {inline.policy_id: inline}
    if policy is not None:
        if policy.policy_id not in found:
            raise ConfigError(f"policy {policy.policy_id!r} is not one of the config's policies "
                              f"({', '.join(sorted(found))}): it would mask no camera")
        found = {**found, policy.policy_id: policy}
    # the legacy inline zones document: global zones on top of every policy's, plus per camera
    inline_zones = tuple((p.zones or {}).get("zones") or ()) if pdir else ()
    cams = {str(k): tuple(v) for k, v in ((p.zones or {}).get("cameras") or {}).items()}
    plans = {pid: plan_from(pol, base, extra_zones=inline_zones, camera_zones=cams) for pid, pol in found.items()}
    if len(plans) == 1:
        (only,) = plans.values()
        return MaskingPlan(only.redaction, plans, p.policy_id, routed=bool(pdir))
    defaults = _default_thresholds(p.face_model)
    union: dict[str, Any] = {"classes": tuple(c for c in ("face", "plate", "person", "text")
                                              if any(c in pp.redaction.classes for pp in plans.values()))}
    for needs, field_name in _DETECTOR_NEEDS.values():
        users = [pid for pid, pp in plans.items() if needs & set(pp.redaction.classes)]
        explicit = [getattr(plans[pid].redaction, field_name) for pid in users]
        if not users or all(v is None for v in explicit):
            continue  # every user takes the detector default: nothing to reconcile
        eff = {pid: (v if v is not None else defaults[field_name]) for pid, v in zip(users, explicit)}
        union[field_name] = min(eff.values())
        for pid, v in eff.items():  # each policy filters the shared boxes at its own threshold
            plans[pid] = replace(plans[pid], redaction=replace(plans[pid].redaction, **{field_name: v}))  # type: ignore[arg-type]
    detector = replace(base, style="fill", strength=None, **union).validate()
    return MaskingPlan(detector, plans, p.policy_id, routed=True)


def camera_plan(cfg: Any, camera_id: str, *, policy: Policy | None = None, model_dir: str | None = None
                ) -> tuple[PolicyPlan, ZoneSet | None]:
    """What the process stage does to a chunk of ``camera_id``, from its record in the config's
    ``ingest.cameras``: the policy the stream's plan routes it to (:meth:`MaskingPlan.for_chunk`,
    on the stream's detection settings and thresholds) and the zones of :meth:`PolicyPlan.zone_set`.

    Args:
        policy: in place of the config's policy with its id (see :func:`build_plan`); it must be
            the policy the camera is routed to.

    Raises:
        ConfigError: one line: the camera is not in the config, it names a policy the config
            does not hold (the stream dead-letters its chunks), or ``policy`` is not its policy.
    """
    cams = {c.camera_id: c for c in cfg.ingest.cameras}
    cam = cams.get(camera_id)
    if cam is None:
        known = ", ".join(sorted(cams)[:10]) + (", ..." if len(cams) > 10 else "")
        raise ConfigError(f"camera {camera_id!r} is not in the config's ingest.cameras ({known or 'none there'})")
    plan = build_plan(cfg, model_dir=model_dir, policy=policy)
    pol = plan.for_chunk(cam.policy_id)
    if pol is None:
        raise ConfigError(f"camera {camera_id!r} names policy {cam.policy_id!r}, which policies_dir does not hold "
                          f"({', '.join(sorted(plan.policies))}): the stream dead-letters its chunks")
    if policy is not None and pol.policy_id != policy.policy_id:
        raise ConfigError(f"camera {camera_id!r} is masked under policy {pol.policy_id!r}, not {policy.policy_id!r}")
    return pol, pol.zone_set(camera_id, cam.zones)
