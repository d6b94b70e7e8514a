"""``Redactor(parallel=True)``: the detectors that do not wait for each other run at once (the
faces beside YOLOX and the plate search), with the same boxes in the same order as one thread."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from operators.redactor import RedactionConfig, Redactor
from operators.types import Boxes, Label
from tests.shared import EVAL, MODELS

WAIT_S = 5.0


def _boxes(label: Label, x: float, n: int = 1) -> Boxes:
    xyxy = np.array([[x + i, 10.0, x + i + 20.0, 30.0] for i in range(n)], np.float32)
    return Boxes(xyxy, np.full(n, 0.9, np.float32), np.full(n, int(label), np.int16))


class _Rendezvous:
    """Two first-stage detectors that each wait (up to WAIT_S) for the other to have started:
    both return their boxes either way and record whether they met."""

    def __init__(self) -> None:
        self.started = {"face": threading.Event(), "person": threading.Event()}
        self.met: dict[str, bool] = {}
        self.threads: dict[str, str] = {}


class _Face:
    name = "fake-face"
    labels = (Label.FACE,)

    def __init__(self, rv: _Rendezvous | None = None, fail: bool = False) -> None:
        self.rv, self.fail = rv, fail

    def detect(self, frames: np.ndarray) -> list[Boxes]:
        if self.rv is not None:
            self.rv.threads["face"] = threading.current_thread().name
            self.rv.started["face"].set()
            self.rv.met["face"] = self.rv.started["person"].wait(WAIT_S)
        if self.fail:
            raise RuntimeError("face model broke")
        return [_boxes(Label.FACE, 100.0 + i) for i in range(len(frames))]


class _Person:
    name = "fake-yolox"
    labels = (Label.PERSON, Label.VEHICLE)

    def __init__(self, rv: _Rendezvous | None = None) -> None:
        self.rv = rv

    def detect(self, frames: np.ndarray) -> list[Boxes]:
        if self.rv is not None:
            self.rv.threads["person"] = threading.current_thread().name
            self.rv.started["person"].set()
            self.rv.met["person"] = self.rv.started["face"].wait(WAIT_S)
        return [Boxes.concat([_boxes(Label.PERSON, 200.0 + i), _boxes(Label.VEHICLE, 300.0 + i, 2)])
                for i in range(len(frames))]


class _Plates:
    """A second-stage detector: one plate box per vehicle prior; records every prior it got."""

    name = "fake-text"
    labels = (Label.PLATE,)
    full_cadence = True

    def __init__(self, prior_labels: tuple[Label, ...] | None = (Label.VEHICLE,)) -> None:
        if prior_labels is not None:
            self.prior_labels = prior_labels
        self.seen: list[list[int]] = []

    def detect(self, frames: np.ndarray) -> list[Boxes]:
        return [Boxes.empty() for _ in frames]

    def detect_given(self, frames: np.ndarray, priors: list[Boxes], full_from: Any = None) -> list[Boxes]:
        self.seen = [sorted(int(v) for v in p.label) for p in priors]
        out = []
        for p in priors:
            veh = p.select(p.label == Label.VEHICLE)
            out.append(Boxes(veh.xyxy.copy(), veh.score.copy(), np.full(len(veh), int(Label.PLATE), np.int16)))
        return out


def _config() -> RedactionConfig:
    return RedactionConfig(classes=("face", "plate"), style="fill", detect_every=1)


def _frames(n: int = 3) -> np.ndarray:
    return np.zeros((n, 64, 96, 3), np.uint8)


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert list(a) == list(b)
    for key in a:
        if isinstance(a[key], Exception):
            assert type(a[key]) is type(b[key]) and str(a[key]) == str(b[key])
            continue
        assert len(a[key]) == len(b[key])
        for x, y in zip(a[key], b[key]):
            np.testing.assert_array_equal(x.xyxy, y.xyxy)
            np.testing.assert_array_equal(x.score, y.score)
            np.testing.assert_array_equal(x.label, y.label)


def test_parallel_runs_the_faces_beside_the_vehicles_and_the_plate_search():
    rv = _Rendezvous()
    plates = _Plates()
    red = Redactor(_config(), detectors={"face": _Face(rv), "person": _Person(rv), "text": plates}, parallel=True)
    got = red.run_detectors(_frames())
    # each waited for the other to have started: they ran at once, on two threads
    assert rv.met == {"face": True, "person": True}
    assert rv.threads["face"] != rv.threads["person"]
    # the plate search read only what it declares (YOLOX's vehicles), not the faces
    assert plates.seen == [[int(Label.PERSON), int(Label.VEHICLE), int(Label.VEHICLE)]] * 3
    one = Redactor(_config(), detectors={"face": _Face(), "person": _Person(), "text": _Plates()})
    _same(got, one.run_detectors(_frames()))


def test_one_thread_unless_asked():
    rv = _Rendezvous()
    red = Redactor(_config(), detectors={"face": _Face(rv), "person": _Person(rv), "text": _Plates()})
    rv.started["person"].set()  # the face detector, run first, must not wait the full timeout
    red.run_detectors(_frames())
    assert rv.threads["face"] == rv.threads["person"] == threading.current_thread().name


def test_a_second_stage_detector_that_declares_no_prior_labels_waits_for_every_first_stage_one():
    rv = _Rendezvous()
    rv.started["person"].set()  # run one after the other, the face detector must not wait
    plates = _Plates(prior_labels=None)
    red = Redactor(_config(), detectors={"face": _Face(rv), "person": _Person(rv), "text": plates}, parallel=True)
    red.run_detectors(_frames())
    assert rv.threads["face"] == rv.threads["person"] == threading.current_thread().name
    # and it got the faces as priors too, as it would on one thread
    assert plates.seen == [sorted([int(Label.FACE), int(Label.PERSON), int(Label.VEHICLE), int(Label.VEHICLE)])] * 3


def test_without_a_second_stage_the_first_detector_runs_beside_the_rest():
    rv = _Rendezvous()
    red = Redactor(RedactionConfig(classes=("face",), style="fill", detect_every=1),
                   detectors={"face": _Face(rv), "person": _Person(rv)}, parallel=True)
    red.run_detectors(_frames())
    assert rv.met == {"face": True, "person": True}


def test_a_failing_detector_fails_closed_for_its_frames_as_on_one_thread():
    dets: dict[str, Any] = {"face": _Face(fail=True), "person": _Person(), "text": _Plates()}
    par = Redactor(_config(), detectors=dets, parallel=True)
    one = Redactor(_config(), detectors=dets)
    frames = _frames(9)  # detect_every=1: every frame detected
    _same(par.run_detectors(frames), one.run_detectors(frames))
    raw_p, failed_p, errors_p = par.detect_many([frames])[0]
    raw_o, failed_o, errors_o = one.detect_many([frames])[0]
    assert failed_p == failed_o == list(range(9))
    assert errors_p == errors_o == ["face: face model broke"]
    assert par.finish(frames.copy(), raw_p, failed_p).fail_closed_frames == list(range(9))


def test_result_order_is_the_one_thread_order_whatever_the_dict_order():
    dets: dict[str, Any] = {"text": _Plates(), "person": _Person(), "face": _Face()}
    par = Redactor(_config(), detectors=dets, parallel=True).run_detectors(_frames())
    one = Redactor(_config(), detectors=dets).run_detectors(_frames())
    _same(par, one)
    assert list(par) == ["person", "face", "text"]


def test_the_cli_builds_parallel_redactors(monkeypatch, tmp_path):
    import operators.redactor as redactor_mod
    from pipeline.redact_file import DeferredRedactor

    monkeypatch.setattr(redactor_mod, "build_detectors", lambda cfg: {"face": _Face()})
    assert DeferredRedactor(_config()).build().parallel is True
    assert DeferredRedactor(_config(), parallel=False).build().parallel is False

    import pipeline.cli as cli

    built: list[Redactor] = []
    real_init = Redactor.__init__

    def init(self: Redactor, *a: Any, **k: Any) -> None:
        real_init(self, *a, **k)
        built.append(self)

    monkeypatch.setattr(Redactor, "__init__", init)
    (tmp_path / "in").mkdir()
    import cv2

    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    assert cli.main(["redact", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    assert [r.parallel for r in built] == [True]


# --- the real detectors: the same boxes, bit for bit ---------------------------------------


def _real_chunk() -> np.ndarray:
    from operators.video import VideoReader, read_image, sample_video

    with VideoReader(sample_video("bigbuckbunny.mp4")) as r:
        faces = next(iter(r.chunks(24))).frames[::6].copy()  # 4 frames with the bench clip's faces
    roads = [read_image(p) for p in sorted((EVAL / "plates_traffic" / "images").glob("ro_*.jpg"))[:4]]
    assert all(im.shape == faces.shape[1:] for im in roads), "dashcam frames and the bench clip are both 720p"
    out = np.empty((8, *faces.shape[1:]), np.uint8)
    out[0::2], out[1::2] = faces, np.stack(roads)  # vehicles with plates beside faces
    return out


@pytest.fixture(scope="module")
def real() -> tuple[RedactionConfig, dict[str, Any], np.ndarray]:
    from operators.redactor import build_detectors

    cfg = RedactionConfig(classes=("face", "plate"), detect_every=1, model_dir=str(MODELS))
    return cfg, build_detectors(cfg), _real_chunk()


@pytest.fixture
def no_static_compiles(monkeypatch):
    """OpenVINO's static-shape compiles off: which model (dynamic or static) serves a call would
    depend on call counts and timing, and their scores differ in the last bits."""
    from operators import ovsession

    monkeypatch.setattr(ovsession, "STATIC_SHAPES", 0)


def test_real_detectors_give_the_same_boxes_on_two_threads(real, no_static_compiles):
    cfg, dets, chunk = real
    one = Redactor(cfg, detectors=dets).detect_many([chunk])[0]
    par_red = Redactor(cfg, detectors=dets, parallel=True)
    first = [(k, d) for k, d in dets.items() if not hasattr(d, "detect_given")]
    second = [(k, d) for k, d in dets.items() if hasattr(d, "detect_given")]
    assert par_red._side_detectors(first, second) == [("face", dets["face"])]  # faces beside the rest
    par = par_red.detect_many([chunk])[0]
    assert par[1] == one[1] == [] and par[2] == one[2] == []
    labels = set()
    for a, b in zip(par[0], one[0]):
        assert a is not None and b is not None
        np.testing.assert_array_equal(a.xyxy, b.xyxy)
        np.testing.assert_array_equal(a.score, b.score)
        np.testing.assert_array_equal(a.label, b.label)
        labels.update(int(v) for v in a.label)
    # the chunk exercises both threads' detectors: faces, and plates found on vehicles
    assert {int(Label.FACE), int(Label.PLATE)} <= labels


def test_the_text_detector_reads_only_the_vehicle_priors_it_declares(real, no_static_compiles):
    """``TextDetector.prior_labels`` is true: priors with faces and persons too give the same
    plates as the vehicles alone (what ``parallel`` hands it: YOLOX's boxes without the faces)."""
    _cfg, dets, chunk = real
    text = dets["text"]
    assert text.prior_labels == (Label.VEHICLE,)
    found = dets["person"].detect(chunk)
    assert sum(int((b.label == Label.VEHICLE).sum()) for b in found) > 0
    faces = dets["face"].detect(chunk)
    wide = [Boxes.concat([f, b, _boxes(Label.PERSON, 400.0, 2)]) for f, b in zip(faces, found)]
    only = [b.select(b.label == Label.VEHICLE) for b in found]
    for a, b in zip(text.detect_given(chunk, wide), text.detect_given(chunk, only)):
        np.testing.assert_array_equal(a.xyxy, b.xyxy)
        np.testing.assert_array_equal(a.score, b.score)
        np.testing.assert_array_equal(a.label, b.label)
