import numpy as np
import pytest

from operators.zones import PrivacyZone, ZoneSet, load_zones, parse_zones
from schemas.errors import ConfigError

SQUARE = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.5], [0.1, 0.5]]


def test_empty_zone_set_masks_nothing():
    zs = ZoneSet()
    assert zs.empty
    m = zs.mask(12, 16)
    assert m.shape == (12, 16) and m.dtype == bool and not m.any()
    assert not zs.for_camera("cam").mask(12, 16).any()


def test_normalized_polygon_scales_with_frame():
    zs = parse_zones({"zones": [{"name": "shop-window", "polygon": SQUARE}]})
    assert zs.zones[0].normalized
    for h, w in [(100, 200), (50, 80)]:
        m = zs.mask(h, w)
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        assert (rows[0], rows[-1]) == (round(0.1 * h), round(0.5 * h))
        assert (cols[0], cols[-1]) == (round(0.1 * w), round(0.4 * w))


def test_pixel_polygon_and_default_normalized_detection():
    zs = parse_zones({"zones": [{"name": "p", "polygon": [[10, 0], [20, 0], [20, 5], [10, 5]]}]})
    assert not zs.zones[0].normalized
    m = zs.mask(30, 30)
    assert m[0:6, 10:21].all() and m.sum() == 6 * 11  # boundary pixels included


def test_overlapping_zones_do_not_cancel():
    # cv2.fillPoly with several contours uses even-odd filling: overlaps would be holes
    a = PrivacyZone("a", np.array([[0, 0], [20, 0], [20, 20], [0, 20]]), False)
    b = PrivacyZone("b", np.array([[10, 10], [30, 10], [30, 30], [10, 30]]), False)
    m = ZoneSet([a, b]).mask(40, 40)
    assert m[15, 15] and m[5, 5] and m[25, 25]


def test_mask_is_cached_and_read_only():
    zs = parse_zones({"zones": [{"name": "a", "polygon": SQUARE}]})
    m = zs.mask(40, 40)
    assert zs.mask(40, 40) is m
    with pytest.raises(ValueError):
        m[0, 0] = True


def test_polygon_partly_outside_frame_is_clipped():
    zs = ZoneSet([PrivacyZone("edge", np.array([[-50, -50], [10, -50], [10, 10], [-50, 10]]), False)])
    m = zs.mask(20, 20)
    assert m[:11, :11].all() and m.sum() == 121


def test_per_camera_zones_add_to_global_ones():
    zs = load_zones({
        "zones": [{"name": "g", "polygon": [[0, 0], [0.25, 0], [0.25, 0.25]]}],
        "cameras": {"cam-001": [{"name": "apartment", "polygon": [[0.75, 0.75], [1, 0.75], [1, 1], [0.75, 1]]}]},
    })
    assert not zs.mask(40, 40)[38, 38]
    cam = zs.for_camera("cam-001")
    assert cam.mask(40, 40)[38, 38] and cam.mask(40, 40)[1, 1]
    assert zs.for_camera("cam-001") is cam
    assert np.array_equal(zs.for_camera("other").mask(40, 40), zs.mask(40, 40))


def test_load_from_yaml_file(tmp_path):
    p = tmp_path / "zones.yaml"
    p.write_text(
        "zones:\n"
        "  - name: shop-window\n"
        "    polygon: [[0.1, 0.1], [0.4, 0.1], [0.4, 0.5], [0.1, 0.5]]\n"
        "    normalized: true\n"
        "cameras:\n"
        "  cam-001:\n"
        "    - name: w\n"
        "      polygon: [[5, 5], [30, 5], [30, 30]]\n"
    )
    zs = load_zones(p)
    assert [z.name for z in zs.zones] == ["shop-window"]
    assert zs.cameras["cam-001"][0].normalized is False
    assert zs.for_camera("cam-001").mask(64, 64)[10, 25]


@pytest.mark.parametrize(
    "doc,messages",
    [
        (None, ["<root>: expected a mapping"]),
        ({"zone": []}, ["zone: unknown key; expected zones, cameras"]),
        ({"zones": [{"name": "a", "polygon": [[0, 0], [1, 1]]}]},
         ["zones[0].polygon: expected at least 3 [x, y] points, got 2"]),
        ({"zones": [{"name": "a", "polygon": [[0, 0], [1, "x"], [1, 1]]}]},
         ["zones[0].polygon[1]: expected [x, y] with two finite numbers, got [1, 'x']"]),
        ({"zones": [{"polygon": SQUARE}]}, ["zones[0].name: expected a non-empty string"]),
        ({"zones": [{"name": "a", "polygon": [[0, 0], [2, 0], [2, 2]], "normalized": True}]},
         ["zones[0].polygon: normalized is true, so coordinates must be within [0, 1], got 2"]),
        ({"zones": [{"name": "a", "polygon": SQUARE, "colour": "red"}]},
         ["zones[0].colour: unknown key"]),
        ({"zones": [{"name": "a", "polygon": SQUARE}, {"name": "a", "polygon": SQUARE}]},
         ["zones[1].name: duplicate zone name 'a'"]),
        ({"zones": {"name": "a"}}, ["zones: expected a list of zones, got dict"]),
        ({"cameras": {"cam-1": [{"name": "a", "polygon": [[0, 0]]}]}},
         ["cameras.cam-1[0].polygon: expected at least 3 [x, y] points, got 1"]),
        # every problem at once
        ({"zones": [{"name": "", "polygon": [[0, 0]]}], "cameras": [1]},
         ["zones[0].name:", "zones[0].polygon:", "cameras: expected a mapping"]),
    ],
)
def test_errors_name_the_dotted_path(doc, messages):
    with pytest.raises(ConfigError) as err:
        parse_zones(doc)
    for m in messages:
        assert m in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="zones file .* not found"):
        load_zones(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("zones: [\n")
    with pytest.raises(ConfigError, match="invalid YAML at line 2"):
        load_zones(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("zones:\n  - name: a\n    polygon: [[0, 0], [1, 1]]\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml.*zones\[0\].polygon"):
        load_zones(wrong)


def test_privacy_zone_validates_shape():
    with pytest.raises(ConfigError, match="P >= 3"):
        PrivacyZone("x", np.zeros((2, 2)), True)
