"""Crowd counting data: density maps against scipy and brute force, the ShanghaiTech loader on
`.mat` fixtures written with scipy in the release's nested structure, bad files, synthetic data."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from scipy.ndimage import gaussian_filter

from cnnzoo.counting import (
    AnnotationError,
    DensityCache,
    ShanghaiTech,
    adaptive_sigmas,
    density_map,
    read_points,
    sum_pool,
    write_synthetic,
)

# The fixtures hold a few images, not the release's hundreds; that warning has its own test.
pytestmark = pytest.mark.filterwarnings(r"ignore:.*holds \d+ images, the release")


# -- density maps --------------------------------------------------------------------------------
def delta_filtered(pixel: tuple[int, int], shape: tuple[int, int], sigma: float) -> np.ndarray:
    """CSRNet's make_dataset: one head's delta image through scipy's full-image Gaussian filter."""
    delta = np.zeros(shape)
    delta[pixel[1], pixel[0]] = 1.0
    return gaussian_filter(delta, sigma, mode="constant", truncate=4.0)


@pytest.mark.parametrize("sigma", [0.7, 1.3, 4.0, 7.5])
def test_fixed_kernel_is_scipys_gaussian_filter_away_from_borders(sigma):
    # Oracle: scipy.ndimage.gaussian_filter of a delta (what CSRNet's preprocessing computes).
    shape = (90, 110)
    point = np.array([[52.3, 44.6]])  # falls on pixel (52, 45)
    ours = density_map(point, shape, method="fixed", sigma=sigma, truncate=4.0)
    np.testing.assert_allclose(ours, delta_filtered((52, 45), shape, sigma), atol=1e-7)


def test_fixed_kernel_defaults_to_the_c3_frameworks_15x15_window():
    """Issue 17: the C-3 recipe's Part B maps are MATLAB's fspecial('gaussian', 15, 4): a 15 x 15
    window (the default fixed map was 33 x 33, its peak 0.88x C-3's)."""
    ours = density_map([[30.0, 20.0]], (41, 61), method="fixed", sigma=4.0)
    y, x = np.nonzero(ours)
    assert (y.max() - y.min() + 1, x.max() - x.min() + 1) == (15, 15)
    # fspecial's definition written out: exp(-(x^2 + y^2) / (2 sigma^2)) on -7..7, normalised.
    r = np.arange(-7, 8, dtype=np.float64)
    h = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 4.0**2))
    np.testing.assert_allclose(ours[13:28, 23:38], h / h.sum(), rtol=1e-6)


def test_a_head_annotated_twice_is_one_place_for_adaptive_sigmas():
    """Issue 17: duplicate annotations gave each other sigma 0, a one-pixel spike."""
    pts = np.array([[10.0, 10.0], [20.0, 10.0], [10.0, 25.0], [40.0, 40.0]])
    twice = np.vstack([pts, pts[:1]])
    sig = adaptive_sigmas(twice)
    np.testing.assert_allclose(sig[:4], adaptive_sigmas(pts))
    assert sig[4] == sig[0] > 0


def test_adaptive_map_is_the_sum_of_per_head_filters_with_knn_sigmas():
    rng = np.random.default_rng(1)
    pts = rng.uniform(40, 80, size=(12, 2))  # far enough from the 120 x 120 borders
    shape = (120, 120)
    ours = density_map(pts, shape, method="adaptive", k=3, beta=0.3)
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    sigmas = 0.3 * np.sort(d, axis=1)[:, 1:4].mean(axis=1)
    ref = sum(
        delta_filtered(tuple(np.floor(p + 0.5).astype(int)), shape, s)
        for p, s in zip(pts, sigmas, strict=True)
    )
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_adaptive_sigmas_match_brute_force_knn():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 500, size=(300, 2))
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    for k, beta in ((3, 0.3), (1, 0.5), (5, 0.1)):
        brute = beta * np.sort(d, axis=1)[:, 1 : k + 1].mean(axis=1)
        np.testing.assert_allclose(adaptive_sigmas(pts, k=k, beta=beta), brute, rtol=1e-12)
    # Fewer heads than k: the mean of the neighbours there are; a lone head: the fallback width.
    three = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(adaptive_sigmas(three, k=3), 0.3 * np.array([3.5, 4.0, 4.5]))
    assert adaptive_sigmas(np.array([[5.0, 5.0]]), fallback=2.5).tolist() == [2.5]
    assert adaptive_sigmas(np.zeros((0, 2))).shape == (0,)


@pytest.mark.parametrize("method", ["fixed", "adaptive"])
@pytest.mark.parametrize("shape", [(37, 53), (64, 64), (9, 200)])
def test_maps_keep_every_head_at_borders_and_after_pooling(method, shape):
    h, w = shape
    edge = [
        [-0.5, -0.5], [w - 0.51, -0.5], [-0.5, h - 0.51], [w - 0.51, h - 0.51],  # corners
        [0, h / 2], [w - 1, h / 3], [w / 2, 0], [w / 3, h - 1],  # edges
    ]  # fmt: skip
    rng = np.random.default_rng(2)
    pts = np.concatenate([edge, rng.uniform([-0.5, -0.5], [w - 0.51, h - 0.51], (30, 2))])
    for sigma in (1.0, 4.0, 25.0):  # 25: kernels wider than the image
        d = density_map(pts, shape, method=method, sigma=sigma)
        assert d.dtype == np.float32 and d.shape == shape
        assert abs(d.sum(dtype=np.float64) - len(pts)) < 1e-4
        for stride in (2, 8, 16):
            pooled = sum_pool(d, stride)
            assert pooled.shape == (-(-h // stride), -(-w // stride))
            assert abs(pooled.sum(dtype=np.float64) - len(pts)) < 1e-4


def test_the_full_image_filter_loses_mass_at_a_corner():
    # Why the kernels are renormalised: CSRNet's per-head filter keeps about a quarter of a corner head.
    lost = delta_filtered((0, 0), (50, 50), 4.0).sum()
    assert 0.2 < lost < 0.35
    assert abs(density_map([[0.0, 0.0]], (50, 50), method="fixed").sum() - 1) < 1e-6


def test_sum_pool_is_the_block_sum():
    rng = np.random.default_rng(3)
    d = rng.random((21, 30)).astype(np.float32)
    pooled = sum_pool(d, 8)
    brute = np.array(
        [[d[8 * i : 8 * i + 8, 8 * j : 8 * j + 8].sum(dtype=np.float64) for j in range(4)] for i in range(3)]
    )
    np.testing.assert_allclose(pooled, brute, rtol=1e-6)
    np.testing.assert_array_equal(sum_pool(d, 1), d)


def test_density_map_refuses_bad_input_with_a_reason():
    with pytest.raises(ValueError, match="2 of 3 head points lie outside the 10x20 image"):
        density_map([[1, 1], [20.0, 3], [4, -0.6]], (10, 20))
    with pytest.raises(ValueError, match="method must be one of adaptive, fixed"):
        density_map([[1, 1]], (10, 10), method="gauss")
    with pytest.raises(ValueError, match="N x 2"):
        density_map(np.zeros((3, 3)), (10, 10))
    assert density_map(np.zeros((0, 2)), (5, 6)).sum() == 0


def test_density_cache_memory_and_disk(tmp_path):
    ann = tmp_path / "GT_IMG_1.mat"
    ann.write_bytes(b"x")
    calls = []

    def make():
        calls.append(1)
        return np.ones((2, 3))

    key = DensityCache.key(ann, method="fixed", sigma=4.0, stride=8)
    first = DensityCache(tmp_path / "cache")
    assert first.get(key, make).sum() == 6 and first.get(key, make).sum() == 6
    second = DensityCache(tmp_path / "cache")  # a new process: read from disk
    np.testing.assert_array_equal(second.get(key, make), np.ones((2, 3)))
    assert len(calls) == 1 and second.misses == 0
    assert DensityCache.key(ann, method="fixed", sigma=5.0, stride=8) != key
    ann.write_bytes(b"changed annotation")
    assert DensityCache.key(ann, method="fixed", sigma=4.0, stride=8) != key


def test_density_cache_is_keyed_by_the_heads_and_checked_on_read(tmp_path):
    """Issue 16: zeroed cached maps were used as they were (a counter trained to loss 0.00025)."""
    points = np.array([[3.0, 4.0], [10.0, 2.0]])
    key = DensityCache.key(points, size=(16, 16), method="fixed", sigma=2.0, stride=4)
    assert DensityCache.key(points + 1, size=(16, 16), method="fixed", sigma=2.0, stride=4) != key

    def make():
        return sum_pool(density_map(points, (16, 16), method="fixed", sigma=2.0), 4)

    DensityCache(tmp_path).get(key, make, shape=(4, 4), total=2.0)
    (file,) = tmp_path.glob("*.npy")
    np.save(file, np.zeros((4, 4), dtype=np.float32))  # the cache damaged behind our back
    again = DensityCache(tmp_path)
    got = again.get(key, make, shape=(4, 4), total=2.0)
    assert got.sum() == pytest.approx(2.0) and again.repaired == 1 and again.misses == 1
    np.testing.assert_allclose(np.load(file), got)  # replaced by the right map
    np.save(file, np.ones((3, 3), dtype=np.float32) * 2 / 9)  # right sum, wrong shape
    assert DensityCache(tmp_path).get(key, make, shape=(4, 4), total=2.0).shape == (4, 4)


# -- ShanghaiTech fixtures -----------------------------------------------------------------------
def write_gt(path: Path, points_1based, number=None, *, location_key="location") -> None:
    """A GT_IMG_n.mat as released: image_info is a 1x1 cell holding a 1x1 struct (location, number)."""
    pts = np.asarray(points_1based, dtype=np.float64)
    pts = pts.reshape(0, 2) if pts.size == 0 else pts
    record = np.empty((1, 1), dtype=[(location_key, "O"), ("number", "O")])
    record[0, 0][location_key] = pts
    record[0, 0]["number"] = np.array([[len(pts) if number is None else number]], dtype=np.uint16)
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = record
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"image_info": cell})


def write_image(path: Path, size=(24, 32), mode="RGB", seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = size
    arr = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG" if path.suffix == ".png" else "JPEG", quality=100)
    return arr


FIXTURE_POINTS = {1: [[1.0, 1.0], [32.0, 24.0], [10.5, 7.25]], 2: [], 3: [[16.0, 12.0]]}


def make_part(root: Path, part: str, layout: str, splits=("train_data", "test_data")) -> Path:
    part_dir = root / (f"part_{part}_final" if layout == "final" else f"part_{part}")
    gt = "ground_truth" if layout == "final" else "ground-truth"
    for split in splits:
        for n, pts in FIXTURE_POINTS.items():
            write_image(part_dir / split / "images" / f"IMG_{n}.jpg", seed=n)
            write_gt(part_dir / split / gt / f"GT_IMG_{n}.mat", pts)
    return part_dir


@pytest.mark.parametrize(("part", "layout"), [("A", "final"), ("B", "plain")])
def test_both_release_layouts_load_to_zero_based_points(tmp_path, part, layout):
    make_part(tmp_path, part, layout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3 images instead of the release's 182 / 316
        ds = ShanghaiTech(tmp_path, part=part, split="test")
    assert len(ds) == 3 and ds.names == ["IMG_1.jpg", "IMG_2.jpg", "IMG_3.jpg"]
    for i, n in enumerate((1, 2, 3)):
        image, points, name = ds[i]
        assert image.shape == (3, 24, 32) and str(image.dtype) == "torch.uint8"
        expected = np.asarray(FIXTURE_POINTS[n], dtype=np.float64).reshape(-1, 2) - 1.0  # MATLAB 1-based
        np.testing.assert_array_equal(points, expected)
        assert name == f"IMG_{n}.jpg"
    assert ds.counts.tolist() == [3, 0, 1]
    # The part's own folder, or a ShanghaiTech/ folder above the parts, works as the root too.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(ShanghaiTech(ds.part_dir, part=part, split="test")) == 3


def test_read_points_returns_the_file_number(tmp_path):
    write_gt(tmp_path / "GT_IMG_1.mat", [[5, 6], [7, 8]])
    pts, number = read_points(tmp_path / "GT_IMG_1.mat")
    np.testing.assert_array_equal(pts, [[4, 5], [6, 7]])
    assert number == 2


def test_validation_subset_is_fixed_disjoint_and_never_test(tmp_path):
    part_dir = tmp_path / "part_B_final"
    for n in range(1, 21):
        write_image(part_dir / "train_data" / "images" / f"IMG_{n}.jpg", size=(8, 8), seed=n)
        write_gt(part_dir / "train_data" / "ground_truth" / f"GT_IMG_{n}.mat", [[2, 2]] * n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = ShanghaiTech(tmp_path, "B", "train", val_fraction=0.2)
        val = ShanghaiTech(tmp_path, "B", "val", val_fraction=0.2)
        again = ShanghaiTech(tmp_path, "B", "val", val_fraction=0.2)
        every = ShanghaiTech(tmp_path, "B", "trainval")
    assert len(train) == 16 and len(val) == 4 and len(every) == 20
    assert set(train.names).isdisjoint(val.names) and set(train.names) | set(val.names) == set(every.names)
    assert val.names == again.names
    with pytest.raises(FileNotFoundError, match="test_data"):
        ShanghaiTech(tmp_path, "B", "test")


def test_points_off_the_image_are_dropped_and_counted(tmp_path):
    part_dir = make_part(tmp_path, "A", "final", splits=("test_data",))
    # 24 x 32 image: 1-based x in [0.5, 32.5), y in [0.5, 24.5) is on it.
    write_gt(part_dir / "test_data" / "ground_truth" / "GT_IMG_3.mat", [[16, 12], [33.0, 5], [4, 0.2]])
    with pytest.warns(
        UserWarning, match=r"2 head points in 1 annotation files .* dropped \(first: GT_IMG_3.mat\)"
    ):
        ds = ShanghaiTech(tmp_path, "A", "test")
    assert ds.counts.tolist() == [3, 0, 1]


def test_a_grayscale_image_is_converted_with_a_warning_naming_it(tmp_path):
    part_dir = make_part(tmp_path, "A", "final", splits=("test_data",))
    gray = write_image(part_dir / "test_data" / "images" / "IMG_2.jpg", mode="L")
    with pytest.warns(UserWarning, match=r"1 images are not RGB .*IMG_2.jpg \(L\)"):
        ds = ShanghaiTech(tmp_path, "A", "test")
    image = ds[1].image.numpy()
    assert image.shape == (3, 24, 32)
    assert (image[0] == image[1]).all() and (image[1] == image[2]).all()
    assert np.abs(image[0].astype(int) - gray).max() <= 3  # JPEG at quality 100


def test_release_sizes_are_checked_for_real_data(tmp_path):
    make_part(tmp_path, "B", "final", splits=("test_data",))
    with pytest.warns(UserWarning, match="holds 3 images, the release 316"):
        ShanghaiTech(tmp_path, "B", "test")


def test_number_field_disagreeing_with_the_points_is_reported(tmp_path):
    part_dir = make_part(tmp_path, "A", "final", splits=("test_data",))
    write_gt(part_dir / "test_data" / "ground_truth" / "GT_IMG_1.mat", [[2, 2]], number=5)
    with pytest.warns(UserWarning, match=r"'number' differs .* GT_IMG_1.mat"):
        ShanghaiTech(tmp_path, "A", "test")


# -- bad input: one clear message naming the file, at construction ------------------------------
def test_a_missing_annotation_names_the_file(tmp_path):
    part_dir = make_part(tmp_path, "A", "final", splits=("test_data",))
    (part_dir / "test_data" / "ground_truth" / "GT_IMG_2.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"GT_IMG_2.mat' for image IMG_2 is missing"):
        ShanghaiTech(tmp_path, "A", "test")


def test_missing_images_folder_or_root_says_what_is_expected(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"expected .*part_A_final/ \(or part_A/\) holding train_data"
    ):
        ShanghaiTech(tmp_path, "A", "test")
    (tmp_path / "part_B" / "test_data").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"images.*does not exist"):
        ShanghaiTech(tmp_path, "B", "test")
    with pytest.raises(FileNotFoundError, match="does not exist or is not a folder"):
        ShanghaiTech(tmp_path / "nowhere", "B", "test")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"points": np.ones((3, 2))}, r"has no 'image_info' \(variables: points\)"),
        ({"image_info": np.ones((1, 1))}, "does not have ShanghaiTech's structure"),
        ("three_columns", r"'location' has shape \(2, 3\); expected N x 2"),
        ("not a mat file", "is not a readable MATLAB .mat file"),
    ],
)
def test_a_malformed_annotation_names_the_file(tmp_path, content, message):
    part_dir = make_part(tmp_path, "B", "final", splits=("test_data",))
    bad = part_dir / "test_data" / "ground_truth" / "GT_IMG_3.mat"
    if content == "three_columns":
        write_gt(bad, np.ones((2, 3)))
    elif isinstance(content, str):
        bad.write_text(content)
    else:
        scipy.io.savemat(str(bad), content)
    with pytest.raises(AnnotationError, match=r"GT_IMG_3\.mat") as info:
        ShanghaiTech(tmp_path, "B", "test")
    assert info.match(message)
    assert "\n" not in str(info.value)


def test_an_unreadable_image_fails_before_training_starts(tmp_path):
    part_dir = make_part(tmp_path, "B", "final", splits=("test_data",))
    (part_dir / "test_data" / "images" / "IMG_1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"IMG_1.jpg' is not an image PIL can read"):
        ShanghaiTech(tmp_path, "B", "test")


# -- synthetic data ------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["final", "plain"])
def test_synthetic_data_is_written_in_the_release_layout(tmp_path, layout):
    info = write_synthetic(tmp_path, train=4, test=3, size=(48, 64), max_people=30, seed=1, layout=layout)
    sub = "part_A_final" if layout == "final" else "part_A"
    assert info["parts"]["A"]["folder"] == str(tmp_path / sub)
    gt = "ground_truth" if layout == "final" else "ground-truth"
    assert (tmp_path / sub / "test_data" / gt / "GT_IMG_3.mat").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # synthetic: no release-size warning, no point off the image
        for part in ("A", "B"):
            ds = ShanghaiTech(tmp_path, part, "trainval")
            assert len(ds) == 4 and ds.counts.max() <= 30
            image, points, _ = ds[0]
            h, w = image.shape[1:]
            if part == "B":
                assert (h, w) == (48, 64)
            assert ((points >= 0) & (points <= [w - 1, h - 1])).all()
    counts = np.concatenate([ShanghaiTech(tmp_path, p, "trainval").counts for p in "AB"])
    assert counts.std() > 3  # counts vary, so predicting the mean is a weak baseline
