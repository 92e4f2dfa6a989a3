"""Tests for physrec.motion.terrain: lookup, padding, square tiling, box voxelisation, cropping, meshing."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest

from physrec.motion.terrain import (
    Heightfield,
    boxes_mesh,
    crop_around_path,
    heightfield_boxes,
    height_at,
    tile_square,
)

DX = 0.4000000059604645  # PARC's float32 0.4, as stored in its files
SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "parc_samples"


def _hf(hf: np.ndarray, min_point=(0.0, 0.0), dx: float = DX, maxmin: bool = False) -> Heightfield:
    hf = np.asarray(hf, dtype=np.float32)
    mm = np.stack([hf + 1, hf - 1], axis=-1) if maxmin else None
    return Heightfield(hf=hf, min_point=np.asarray(min_point, dtype=np.float32), dx=dx, hf_maxmin=mm)


def _random_hf(rng: np.random.Generator, shape: tuple[int, int], min_point=(0.0, 0.0)) -> Heightfield:
    return _hf(rng.integers(-3, 4, size=shape) * 0.5, min_point=min_point, maxmin=True)


def _cell_centres(h: Heightfield) -> np.ndarray:
    ii, jj = np.meshgrid(np.arange(h.shape[0]), np.arange(h.shape[1]), indexing="ij")
    return h.min_point.astype(np.float64) + np.stack([ii, jj], axis=-1) * h.dx


def _rasterise(boxes: np.ndarray, h: Heightfield) -> tuple[np.ndarray, np.ndarray]:
    """Top height and coverage count per cell, from box extents snapped to the grid."""
    top = np.full(h.shape, np.nan)
    count = np.zeros(h.shape, dtype=int)
    mp = h.min_point.astype(np.float64)
    for cx, cy, cz, hx, hy, hz in boxes:
        i0, i1 = (int(round((c - mp[0]) / h.dx + 0.5)) for c in (cx - hx, cx + hx))
        j0, j1 = (int(round((c - mp[1]) / h.dx + 0.5)) for c in (cy - hy, cy + hy))
        top[i0:i1, j0:j1] = cz + hz
        count[i0:i1, j0:j1] += 1
    return top, count


def _load_sample_terrain(path: Path) -> Heightfield:
    outer = pickle.loads(path.read_bytes())
    t = pickle.loads(outer["terrain_data"])
    return Heightfield(hf=t["hf"], min_point=t["min_point"], dx=t["dx"], hf_maxmin=t.get("hf_maxmin"))


# --- height_at -------------------------------------------------------------------------------


def test_height_at_cell_centres_edges_and_clamping():
    h = _hf(np.arange(12).reshape(3, 4), min_point=(1.0, -2.0))
    centres = _cell_centres(h)
    np.testing.assert_array_equal(height_at(h, centres), h.hf)
    np.testing.assert_array_equal(height_at(h, centres + 0.19), h.hf)  # still inside the cell
    far = np.array([[-100.0, -100.0], [100.0, 100.0], [100.0, -100.0]])
    np.testing.assert_array_equal(height_at(h, far), [h.hf[0, 0], h.hf[2, 3], h.hf[2, 0]])


def test_height_at_keeps_leading_shape():
    h = _hf(np.ones((5, 5)))
    assert height_at(h, np.zeros((2, 3, 2))).shape == (2, 3)
    assert height_at(h, np.zeros(2)).shape == ()


# --- tile_square -----------------------------------------------------------------------------


def test_tile_square_round_trips_every_cell_exactly():
    rng = np.random.default_rng(1)
    shapes = [(5, 7), (3, 3), (8, 4), (6, 6), (2, 9)]
    terrains = [_random_hf(rng, s, min_point=rng.uniform(-5, 5, 2)) for s in shapes]
    copies = [(t.hf.copy(), t.min_point.copy()) for t in terrains]
    tiled = tile_square(terrains)

    assert tiled.grid == (3, 3)
    assert tiled.slot_cells == (10, 11)  # max padded dims: 8+2, 9+2
    assert tiled.world.shape == (30, 33)
    assert tiled.world.hf_maxmin is None and tiled.world.hf.dtype == np.float32
    assert tiled.offsets.shape == (5, 2) and tiled.offsets.dtype == np.float64
    for k, t in enumerate(terrains):
        pts = _cell_centres(t) + tiled.offsets[k]
        np.testing.assert_array_equal(height_at(tiled.world, pts), t.hf)
        np.testing.assert_array_equal(t.hf, copies[k][0])
        np.testing.assert_array_equal(t.min_point, copies[k][1])


def test_tile_square_layout_formula_and_centring():
    rng = np.random.default_rng(2)
    terrains = [_random_hf(rng, (4, 5), min_point=(1.0, 2.0)) for _ in range(3)]
    tiled = tile_square(terrains)
    n, (sx, sy) = 2, tiled.slot_cells
    expected_min = np.float32(-(n * np.array([sx, sy]) * DX) / 2 + DX / 2)
    np.testing.assert_array_equal(tiled.world.min_point, expected_min)
    # World cell edges are symmetric about the origin.
    lo = tiled.world.min_point - DX / 2
    hi = tiled.world.min_point + (np.array(tiled.world.shape) - 0.5) * DX
    np.testing.assert_allclose(lo, -hi, atol=1e-5)
    for k, t in enumerate(terrains):
        a, b = k // n, k % n
        padded_min = t.min_point.astype(np.float64) - DX
        slot_origin = tiled.world.min_point.astype(np.float64) + np.array([a * sx, b * sy]) * DX
        np.testing.assert_allclose(tiled.offsets[k], slot_origin - padded_min, rtol=0, atol=1e-5)


def test_tile_square_fills_slot_remainders_and_empty_slots():
    small = _hf(np.full((2, 2), 3.0))
    big = _hf(np.array([[1.0, 2.0, 2.0], [1.5, 2.5, 4.0], [2.0, 2.0, 2.0], [5.0, 5.0, 5.0]]))
    tiled = tile_square([small, big, small])  # n = 2: slot (1, 1) is empty
    sx, sy = tiled.slot_cells
    hf = tiled.world.hf
    assert (sx, sy) == (6, 5)
    np.testing.assert_array_equal(hf[:sx, :sy][:4, :4], np.pad(small.hf, 1, constant_values=3.0))
    assert np.all(hf[:sx, :sy][4:, :] == 3.0) and np.all(hf[:sx, :sy][:, 4:] == 3.0)
    assert np.all(hf[sx:, sy:] == 1.0)  # empty slot: global minimum
    assert np.all(np.isfinite(hf))


def test_tile_square_rejects_mixed_dx():
    with pytest.raises(ValueError, match=r"0\.4.*0\.5"):
        tile_square([_hf(np.zeros((2, 2)), dx=0.4), _hf(np.zeros((2, 2)), dx=0.5)])
    with pytest.raises(ValueError):
        tile_square([])


# --- heightfield_boxes -----------------------------------------------------------------------


def test_flat_terrain_is_one_box():
    h = _hf(np.full((100, 100), 2.0), min_point=(-1.0, 3.0))
    boxes = heightfield_boxes(h, bottom=-1.0)
    assert boxes.shape == (1, 6) and boxes.dtype == np.float64
    cx, cy, cz, hx, hy, hz = boxes[0]
    np.testing.assert_allclose([hx, hy, cz, hz], [50 * DX, 50 * DX, 0.5, 1.5])
    np.testing.assert_allclose([cx - hx, cy - hy], np.float32([-1.0, 3.0]) - DX / 2, atol=1e-6)


def test_step_terrain_is_two_boxes():
    hf = np.zeros((10, 6))
    hf[5:] = 0.5
    boxes = heightfield_boxes(_hf(hf), bottom=-1.0)
    assert len(boxes) == 2
    np.testing.assert_allclose(sorted(boxes[:, 2] + boxes[:, 5]), [0.0, 0.5])


@pytest.mark.parametrize("fast", [False, True])
def test_random_terrain_boxes_rasterise_back_exactly_without_overlap(fast):
    rng = np.random.default_rng(3)
    h = _hf(rng.integers(0, 3, size=(30, 30)).astype(np.float32), min_point=(-2.0, 1.0))
    boxes = heightfield_boxes(h, bottom=-2.0, fast=fast)
    top, count = _rasterise(boxes, h)
    np.testing.assert_array_equal(top, h.hf)
    np.testing.assert_array_equal(count, 1)
    cell_area = np.round(4 * boxes[:, 3] * boxes[:, 4] / DX**2).sum()
    assert cell_area == 30 * 30
    np.testing.assert_array_equal(heightfield_boxes(h, bottom=-2.0, fast=fast), boxes)  # deterministic


def test_boxes_reject_cells_at_or_below_bottom():
    with pytest.raises(ValueError):
        heightfield_boxes(_hf(np.array([[0.0, 1.0]])), bottom=0.0)


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/parc_samples (real PARC terrains) is absent")
@pytest.mark.parametrize(
    ("name", "n_boxes"), [("TEASER_TERRAIN", 1254), ("civilization", 114), ("sfu", 29)]
)
def test_parc_sample_terrains_need_far_fewer_boxes_than_cells(name, n_boxes):
    h = _load_sample_terrain(SAMPLES / f"{name}.pkl")
    bottom = float(h.hf.min()) - 1.0
    boxes = heightfield_boxes(h, bottom)
    top, count = _rasterise(boxes, h)
    np.testing.assert_array_equal(count, 1)
    np.testing.assert_allclose(top, h.hf, atol=1e-6)
    n_cells = h.shape[0] * h.shape[1]
    assert len(boxes) < n_cells / 4
    assert len(boxes) == n_boxes  # 102x102, 50x50, 32x32 cells; pins the deterministic scan


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/parc_samples (real PARC terrains) is absent")
def test_the_fast_cover_of_a_tiled_parc_world_is_exact_and_about_as_small():
    """The drawn world of a batch (terrain.pkl's mesh): the vectorised cover of 12 tiled PARC
    terrains rasterises back to the world, each cell once, in at most 5 % more boxes."""
    terrains = [_load_sample_terrain(SAMPLES / f"{n}.pkl") for n in ("TEASER_TERRAIN", "civilization", "sfu")]
    world = tile_square(terrains * 4).world
    fast = heightfield_boxes(world, float(world.hf.min()) - 1.0, fast=True)
    top, count = _rasterise(fast, world)
    np.testing.assert_array_equal(count, 1)
    np.testing.assert_allclose(top, world.hf, atol=1e-6)
    greedy = heightfield_boxes(world, float(world.hf.min()) - 1.0)
    assert len(greedy) <= len(fast) <= 1.05 * len(greedy)


# --- crop_around_path ------------------------------------------------------------------------


def test_crop_covers_path_plus_pad_with_absolute_heights():
    rng = np.random.default_rng(4)
    h = _random_hf(rng, (40, 30), min_point=(-3.0, 2.0))
    path = np.array([[1.0, 5.1], [2.3, 6.1], [3.1, 5.5]])
    c = crop_around_path(h, path, pad=0.8)
    # Every point of the padded bounding box reads the same height in the crop as in h.
    gx, gy = np.meshgrid(np.linspace(0.2, 3.9, 20), np.linspace(4.3, 6.9, 20), indexing="ij")
    pts = np.stack([gx, gy], axis=-1)
    np.testing.assert_array_equal(height_at(c, pts), height_at(h, pts))
    np.testing.assert_allclose(c.min_point, [0.2, 4.4], atol=1e-6)
    assert c.shape == (10, 7)  # x: 0.2..3.9 -> cells 8..17, y: 4.3..6.9 -> cells 6..12
    np.testing.assert_array_equal(c.hf_maxmin, h.hf_maxmin[8:18, 6:13])
    assert not np.shares_memory(c.hf, h.hf)


def test_crop_clamps_to_grid_and_is_never_empty():
    h = _hf(np.arange(20).reshape(4, 5))
    whole = crop_around_path(h, np.array([[0.5, 0.5]]), pad=100.0)
    np.testing.assert_array_equal(whole.hf, h.hf)
    np.testing.assert_array_equal(whole.min_point, h.min_point)
    outside = crop_around_path(h, np.array([[50.0, -50.0]]), pad=0.0)
    assert outside.shape == (1, 1) and outside.hf[0, 0] == h.hf[3, 0]
    assert outside.hf_maxmin is None


# --- boxes_mesh ------------------------------------------------------------------------------


def test_boxes_mesh_is_closed_with_outward_normals():
    boxes = np.array([[0.0, 0.0, 0.5, 1.0, 2.0, 0.5], [3.0, -1.0, 1.0, 0.2, 0.2, 1.0]])
    verts, tris = boxes_mesh(boxes)
    assert verts.shape == (16, 3) and verts.dtype == np.float32
    assert tris.shape == (24, 3) and tris.dtype == np.int32
    tri_pts = verts[tris].astype(np.float64)
    normals = np.cross(tri_pts[:, 1] - tri_pts[:, 0], tri_pts[:, 2] - tri_pts[:, 0])
    centre = np.repeat(boxes[:, :3], 12, axis=0)
    assert np.all(np.einsum("ij,ij->i", normals, tri_pts.mean(axis=1) - centre) > 0)
    # Every edge is shared by exactly two triangles in opposite directions: a closed surface.
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    assert len({tuple(e) for e in edges}) == len(edges)
    assert {tuple(e) for e in edges} == {tuple(e[::-1]) for e in edges}
    np.testing.assert_allclose(verts[:8].min(axis=0), [-1.0, -2.0, 0.0])
    np.testing.assert_allclose(verts[:8].max(axis=0), [1.0, 2.0, 1.0])


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/parc_samples (real PARC terrains) is absent")
def test_tile_square_round_trips_parc_sample_terrains():
    terrains = [_load_sample_terrain(SAMPLES / f"{n}.pkl") for n in ("TEASER_TERRAIN", "civilization", "sfu")]
    tiled = tile_square(terrains)
    assert tiled.grid == (2, 2) and tiled.slot_cells == (104, 104)
    for k, t in enumerate(terrains):
        np.testing.assert_array_equal(height_at(tiled.world, _cell_centres(t) + tiled.offsets[k]), t.hf)


def test_tile_square_takes_float32_and_float64_of_one_cell_size_as_one():
    """PARC's files store dx as float32 (0.4000000059604645), generated motions as 0.4."""
    a = _hf(np.zeros((3, 3)), dx=0.4)
    b = dataclasses.replace(a, dx=float(np.float32(0.4)))
    assert b.dx != a.dx
    assert tile_square([a, b]).world.dx == a.dx
    with pytest.raises(ValueError, match="different dx"):
        tile_square([a, dataclasses.replace(a, dx=a.dx / 2)])
