import numpy as np
import pytest

from operators.plate_region import (
    NEAR_BAND_FRAC,
    REGION_BELOW_FRAC,
    REGION_SIDE_FRAC,
    REGION_TOP_FRAC,
    plate_regions,
)
from operators.types import Boxes, Label

HW = (720, 1280)
CAR = [400, 300, 600, 450]  # 200 x 150


def test_no_vehicles_no_regions():
    assert len(plate_regions(Boxes.empty(), Boxes.empty(), HW)) == 0


def test_vehicle_without_plate_gets_its_lower_part():
    r = plate_regions(Boxes.of([CAR], [0.7], Label.VEHICLE), Boxes.empty(), HW)
    assert len(r) == 1 and r.label[0] == Label.PLATE_REGION and r.score[0] == pytest.approx(0.7)
    x1, y1, x2, y2 = r.xyxy[0]
    assert (x1, x2) == pytest.approx((400 + REGION_SIDE_FRAC * 200, 600 - REGION_SIDE_FRAC * 200))
    assert (y1, y2) == pytest.approx((300 + REGION_TOP_FRAC * 150, 450 + REGION_BELOW_FRAC * 150))
    # a plate centred low on the car, anywhere between the margins, is inside
    assert x1 <= 470 and x2 >= 530 and y1 <= 410 and y2 >= 430


@pytest.mark.parametrize("plate,suppressed", [
    ([470, 410, 530, 430], True),    # on the bumper: its own plate
    ([560, 445, 620, 465], True),    # centre just below the box (boxes end above the bumper)
    ([470, 310, 530, 330], False),   # near the roof: a sign, not its plate
    ([700, 410, 760, 430], False),   # beside the car: another vehicle's
])
def test_a_plate_in_the_lower_part_suppresses_the_region(plate, suppressed):
    r = plate_regions(Boxes.of([CAR], [0.7], Label.VEHICLE), Boxes.of([plate], [0.9], Label.PLATE), HW)
    assert len(r) == (0 if suppressed else 1)


def test_small_unsure_and_broken_vehicles_get_none():
    veh = Boxes.of([[0, 0, 30, 20], [400, 300, 600, 450], [100, 100, 300, 250],
                    [np.nan, 0, 50, 50]], [0.9, 0.3, 0.9, 0.9], Label.VEHICLE)
    r = plate_regions(veh, Boxes.empty(), HW, min_px=40, min_score=0.5)
    assert len(r) == 1 and r.xyxy[0, 0] >= 100 and r.xyxy[0, 2] <= 300 and r.xyxy[0, 1] > 100


def test_regions_are_clipped_to_the_frame():
    r = plate_regions(Boxes.of([[1200, 600, 1400, 800]], [0.9], Label.VEHICLE), Boxes.empty(), HW)
    x1, y1, x2, y2 = r.xyxy[0]
    assert x2 <= 1280 and y2 <= 720 and x1 < x2 and y1 < y2


def test_a_region_with_a_square_box_on_it_shrinks_to_a_band_around_it():
    car = Boxes.of([CAR], [0.7], Label.VEHICLE)  # 200 x 150: region rows 345..465
    light = Boxes.of([[420, 380, 440, 400]], [0.6], Label.PLATE)  # square: not its plate
    full = plate_regions(car, Boxes.empty(), HW)
    assert len(plate_regions(car, Boxes.empty(), HW, near=light)) == 1
    r = plate_regions(car, Boxes.empty(), HW, near=light)
    x1, y1, x2, y2 = r.xyxy[0]
    band = NEAR_BAND_FRAC * 150
    assert (x1, x2) == pytest.approx((full.xyxy[0, 0], full.xyxy[0, 2]))  # full width still
    assert (y1, y2) == pytest.approx((380 - band, 400 + band))
    assert y1 >= full.xyxy[0, 1] and y2 <= full.xyxy[0, 3]
    # a box elsewhere in the frame changes nothing
    far = Boxes.of([[900, 100, 920, 120]], [0.6], Label.PLATE)
    assert np.array_equal(plate_regions(car, Boxes.empty(), HW, near=far).xyxy, full.xyxy)


def test_near_vehicles_measures_from_the_box_centre_in_its_own_heights():
    """Over-masking round 3: inside a vehicle box is distance 0; outside, the distance from
    the plate box's centre to the nearest point of a vehicle box, in plate heights."""
    from operators.plate_region import near_vehicles

    car = Boxes.of([[100, 100, 200, 160]], [0.8], Label.VEHICLE)
    plates = Boxes.of([[140, 140, 160, 150],     # inside
                       [205, 150, 225, 160],     # centre 15 px right, 10 px high: 1.5 heights
                       [200, 195, 220, 205],     # centre 40 px below the corner's row, 10 px right: ~4.1
                       [400, 20, 440, 40]], [0.9] * 4, Label.PLATE)
    assert near_vehicles(plates, car, 0.0).tolist() == [True, False, False, False]
    assert near_vehicles(plates, car, 1.5).tolist() == [True, True, False, False]
    assert near_vehicles(plates, car, 4.2).tolist() == [True, True, True, False]
    assert near_vehicles(plates, Boxes.empty(), 100.0).tolist() == [False] * 4
    assert near_vehicles(Boxes.empty(), car, 1.0).shape == (0,)
