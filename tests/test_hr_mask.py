"""estimate_hr_mask: the HR brain mask recovered from the LR mask that degrade_mask made."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import SHARED_DATA
from scipy import ndimage

from dmri_revgan.data.degrade import crop_to_multiple, degrade_mask, estimate_hr_mask, upsample
from dmri_revgan.data.hcp import discover
from dmri_revgan.data.persons import read_persons_roots

SHARED = SHARED_DATA.parent  # hcp-like/ and more-sites/, listed in persons.csv
RECALL_FLOOR = 0.9997  # measured minimum over the 24 shared series: 0.99979 (sag-5)


def ellipsoid(shape, centre, radii) -> np.ndarray:
    g = np.indices(shape, dtype=np.float64)
    return sum(((g[a] - centre[a]) / radii[a]) ** 2 for a in range(3)) <= 1.0


def test_shape_and_contains_nearest_upsampling() -> None:
    rng = np.random.default_rng(1)
    lr = rng.random((5, 6, 7)) > 0.7
    for factor in (2, 3):
        up = upsample(lr[None], factor, 0)[0]
        for margin in (None, 0, 1, factor):
            est = estimate_hr_mask(lr, factor, margin)
            assert est.shape == tuple(factor * s for s in lr.shape) and est.dtype == bool
            assert est[up].all()
        np.testing.assert_array_equal(estimate_hr_mask(lr, factor, 0), up)
        # The default takes every block 26-touching a brain block, whole.
        grown = ndimage.binary_dilation(lr, np.ones((3, 3, 3), bool))[None]
        np.testing.assert_array_equal(estimate_hr_mask(lr, factor), upsample(grown, factor)[0])


def test_empty_and_full_masks() -> None:
    assert not estimate_hr_mask(np.zeros((3, 4, 5), bool), 2).any()
    assert estimate_hr_mask(np.ones((3, 4, 5), bool), 2).all()


@pytest.mark.parametrize("factor", [2, 3])
def test_ellipsoids_are_covered(factor: int) -> None:
    """Balls and ellipsoids at off-grid centres: the estimate covers every brain voxel, which
    the nearest-neighbour upsampling (today's mask) does not."""
    rng = np.random.default_rng(factor)
    n = 12 * factor
    shape = (n, n, n)
    for _ in range(20):
        centre = rng.uniform(n / 2 - 1, n / 2 + 1, 3)
        radii = rng.uniform(0.15, 0.4, 3) * n
        hr = ellipsoid(shape, centre, radii)
        lr = degrade_mask(hr, factor)
        assert not hr[~estimate_hr_mask(lr, factor, 0)].all()  # the blocky edge misses some
        assert estimate_hr_mask(lr, factor)[hr].all()


def test_far_layer_of_a_background_block() -> None:
    """A background block (3 of 8 children brain) next to a brain block may hold brain in its
    far layer, r = 2 voxels beyond the blocky edge, also across an edge or a corner."""
    for offset in [(1, 0, 0), (1, 1, 0), (1, 1, 1)]:
        hr = np.zeros((6, 6, 6), bool)
        hr[2:4, 2:4, 2:4] = True  # LR block (1, 1, 1) is brain
        block = tuple(slice(2 + 2 * o, 4 + 2 * o) for o in offset)
        far = tuple(3 + 2 * o if o else 2 for o in offset)  # its child farthest from the brain
        children = np.argwhere(np.ones((2, 2, 2), bool))[:3] + [s.start for s in block]
        children[0] = far
        hr[tuple(children.T)] = True
        lr = degrade_mask(hr, 2)
        assert lr.sum() == 1 and hr[block].sum() == 3
        assert estimate_hr_mask(lr, 2)[hr].all()
        assert not estimate_hr_mask(lr, 2, 1)[far]


def test_isolated_island_stays_out() -> None:
    """The rule's limit: brain in a block touching no brain block (here 3 voxels) is not seen."""
    hr = np.zeros((12, 12, 12), bool)
    hr[2:6, 2:6, 2:6] = True
    hr[10, 10, 10:12] = hr[11, 10, 10] = True
    est = estimate_hr_mask(degrade_mask(hr, 2), 2)
    assert est[2:6, 2:6, 2:6].all() and not est[10:, 10:, 10:].any()


def _shared_masks():
    """The brain masks of every series the shared persons file names (none without it)."""
    listing = SHARED / "persons.csv"
    if not listing.is_file():
        return []
    roots, persons = read_persons_roots(listing)
    return [
        subject.mask
        for subject in discover(roots, list(persons))
        if subject.mask is not None and subject.mask.is_file()
    ]


@pytest.mark.skipif(not _shared_masks(), reason="../shared/data is absent")
def test_recall_on_shared_series() -> None:
    """Every shared series' real brain mask: recall of the estimate ≥ the measured floor."""
    for path in _shared_masks():
        hr = crop_to_multiple(np.asarray(nib.load(path).dataobj) > 0, 2)
        lr = degrade_mask(hr, 2)
        est = estimate_hr_mask(lr, 2)
        recall = est[hr].mean()
        assert recall >= RECALL_FLOOR, (path.parts[-4], recall)
        assert recall > estimate_hr_mask(lr, 2, 0)[hr].mean() + 0.01
