"""Image datasets: CIFAR-10 batches, ImageFolder trees, pix2pix A|B folders and the
offline photo pairs (`colorization`, `edges`), each written here in its real on-disk format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_line_error
from PIL import Image

from zoo import datasets as zdata
from zoo.data import DataRequest, Images
from zoo.errors import DataError


def pair_request(size: int, value_range: tuple[float, float]) -> DataRequest:
    """What pix2pix asks of a dataset of pairs: RGB images A and B."""
    return DataRequest(
        Images("A", size=size, channels=3, value_range=value_range), Images("B", size=size, channels=3, value_range=value_range)
    )


RGB01 = DataRequest(size=32, channels=3, value_range=(0.0, 1.0))


# --------------------------------------------------------------------------- CIFAR-10


def _cifar_images(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), [int(x) for x in rng.integers(0, 10, size=n)]


def write_cifar(root: Path, per_batch: int = 3, test: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    """The python version of CIFAR-10 as distributed: pickled dicts (protocol 2, byte
    string keys as Python 2 wrote them) of uint8 rows R-plane|G-plane|B-plane."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        data, labels = _cifar_images(test if name == "test_batch" else per_batch, seed=i)
        entry = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{j}.png".encode() for j in range(len(labels))],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        written[name] = (data, labels)
    meta = {
        b"label_names": [c.encode() for c in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")],
        b"num_cases_per_batch": per_batch,
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


def test_cifar10_reads_the_python_batches(tmp_path):
    written = write_cifar(tmp_path / "cifar")
    splits = zdata.load(f"cifar10:{tmp_path / 'cifar'}", RGB01)
    assert len(splits.train) == 15 and len(splits.val) == 4
    assert splits.info.num_classes == 10 and list(splits.info.class_names)[3] == "cat"
    data, labels = written["data_batch_2"]
    # Row layout: 1024 red values, then green, then blue, each row-major 32x32.
    expected = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float() / 255
    assert torch.equal(splits.train.tensors["image"][3:6], expected)
    assert splits.train.tensors["label"][3:6].tolist() == labels
    test_data, test_labels = written["test_batch"]  # the test batch is the validation split
    assert torch.equal(splits.val.tensors["image"], torch.from_numpy(test_data.reshape(-1, 3, 32, 32)).float() / 255)
    assert splits.val.tensors["label"].tolist() == test_labels


def test_cifar10_accepts_the_batches_directory_itself_and_resizes(tmp_path):
    written = write_cifar(tmp_path)
    splits = zdata.load(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", DataRequest(size=28, channels=3, value_range=(-1.0, 1.0)))
    images = splits.train.tensors["image"]
    assert images.shape == (15, 3, 28, 28)
    # The first training image, recomputed: RGB planes -> 28 px -> [-1, 1].
    import torch.nn.functional as F

    rgb = torch.from_numpy(written["data_batch_1"][0][0].reshape(3, 32, 32).astype(np.float32))[None] / 255
    expected = F.interpolate(rgb, size=(28, 28), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1) * 2 - 1
    assert torch.allclose(images[0], expected[0], atol=1e-6)


def test_cifar10_trains_a_colour_model_and_refuses_a_grey_one(zoo, tmp_path):
    write_cifar(tmp_path / "cifar")
    spec = f"cifar10:{tmp_path / 'cifar'}"
    r = zoo("train", "dcgan", "--channels", "3", "--data", spec, "--max-steps", "1", "--out", tmp_path / "run", "--progress", "none")
    assert r.exit_code == 0, r
    # convnet reads 1-channel digits: CIFAR's colour is refused, not silently turned grey.
    line = one_line_error(zoo("train", "convnet", "--data", spec, "--out", tmp_path / "grey"), 2)
    assert "'image' has 3 channels; turning colour into grey would lose it" in line and not (tmp_path / "grey").exists()


def test_cifar10_refuses_a_pickle_that_runs_code(zoo, tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({"data": Exploit()}, protocol=2))
    r = zoo("train", "dcgan", "--channels", "3", "--data", f"cifar10:{tmp_path}", "--max-steps", "1", "--progress", "none")
    assert r.exit_code == 1, r
    assert "data_batch_3" in r.stderr and "not allowed" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_cifar10_missing_and_malformed(tmp_path):
    with pytest.raises(DataError, match="no cifar-10-batches-py"):
        zdata.load(f"cifar10:{tmp_path}", RGB01)
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4 is missing"):
        zdata.load(f"cifar10:{tmp_path}", RGB01)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").write_bytes(
        pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2)
    )
    with pytest.raises(DataError, match="rows of 3072"):
        zdata.load(f"cifar10:{tmp_path}", RGB01)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").write_bytes(b"\x80\x02}q\x00(X")  # cut off mid-pickle
    with pytest.raises(DataError, match="data_batch_4: not a CIFAR-10 batch"):
        zdata.load(f"cifar10:{tmp_path}", RGB01)


# --------------------------------------------------------------------------- image folders


def solid(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (20, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


def write_folder(root: Path, per_class: int = 10) -> dict[str, tuple[int, int, int]]:
    colours = {"cat": (200, 10, 10), "dog": (10, 200, 10), "emu": (10, 10, 200)}
    for name, rgb in colours.items():
        for i in range(per_class):
            solid(root / name / f"{i:03d}.png" if i % 2 else root / name / f"{i:03d}.jpg", rgb)
    return colours


def test_folder_seeded_split_per_class(tmp_path):
    colours = write_folder(tmp_path / "imgs")
    splits = zdata.load(f"folder:{tmp_path / 'imgs'}", RGB01)
    assert splits.info.num_classes == 3 and list(splits.info.class_names) == ["cat", "dog", "emu"]
    assert len(splits.train) == 27 and len(splits.val) == 3  # 10% of every class
    assert sorted(splits.val.tensors["label"].tolist()) == [0, 1, 2]
    for split in (splits.train, splits.val):
        images, labels = split.tensors["image"], split.tensors["label"]
        assert images.shape[1:] == (3, 32, 32)
        for image, label in zip(images, labels):
            rgb = colours[list(splits.info.class_names)[label]]
            # JPEG is lossy; the class colour must still be unmistakable
            assert torch.allclose(image.mean((1, 2)), torch.tensor(rgb) / 255, atol=0.03)
    again = zdata.load(f"folder:{tmp_path / 'imgs'}", RGB01)
    assert torch.equal(again.val.tensors["image"], splits.val.tensors["image"])  # fixed, not per --seed


def test_folder_with_train_and_val_subfolders(tmp_path):
    write_folder(tmp_path / "train", per_class=4)
    write_folder(tmp_path / "val", per_class=2)
    splits = zdata.load(f"folder:{tmp_path}", DataRequest(size=8, channels=1, value_range=(0.0, 1.0)))
    assert len(splits.train) == 12 and len(splits.val) == 6
    assert splits.val.tensors["image"].shape == (6, 1, 8, 8)
    assert splits.details["split"] == "train/ and val/"


def test_folder_keeps_aspect_by_centre_crop(tmp_path):
    img = np.zeros((10, 30, 3), np.uint8)
    img[:, 10:20] = 255  # a white centre square between black side bars
    (tmp_path / "a").mkdir()
    for i in range(2):
        Image.fromarray(img).save(tmp_path / "a" / f"{i}.png")
    splits = zdata.load(f"folder:{tmp_path}", DataRequest(size=10, channels=3, value_range=(0.0, 1.0)))
    assert torch.allclose(splits.train.tensors["image"], torch.ones(1, 3, 10, 10))


def test_folder_without_images_is_one_line_error(zoo, tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("no images here")
    r = zoo("train", "convnet", "--data", f"folder:{tmp_path / 'empty'}", "--max-steps", "1")
    assert r.exit_code == 1, r
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "no valid file" in r.stderr.lower() or "no images" in r.stderr
    (tmp_path / "flat").mkdir()
    solid(tmp_path / "flat" / "x.png", (1, 2, 3))  # images but no class folders
    r = zoo("train", "convnet", "--data", f"folder:{tmp_path / 'flat'}", "--max-steps", "1")
    assert r.exit_code == 1 and "class folder" in r.stderr, r


def test_truncated_image_names_its_path(zoo, tmp_path):
    write_folder(tmp_path / "imgs", per_class=3)
    broken = tmp_path / "imgs" / "dog" / "002.jpg"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    r = zoo("train", "convnet", "--data", f"folder:{tmp_path / 'imgs'}", "--max-steps", "1")
    assert r.exit_code == 1, r
    assert str(broken) in r.stderr and "truncated" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    broken.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=str(broken)):
        zdata.load(f"folder:{tmp_path / 'imgs'}", RGB01)


# --------------------------------------------------------------------------- pix2pix aligned folders


def write_pair(path: Path, a_rgb: tuple[int, int, int], b_rgb: tuple[int, int, int], height: int = 24) -> Path:
    """One A|B image: A the left half, B the right half."""
    pixels = np.zeros((height, 2 * height, 3), np.uint8)
    pixels[:, :height] = a_rgb
    pixels[:, height:] = b_rgb
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_pix2pix(root: Path, splits: dict[str, int]) -> None:
    for split, n in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            write_pair(root / split / f"{i}.png", (10 * i, 0, 0), (0, 0, 10 * i + 5))


def test_pix2pix_splits_a_and_b(tmp_path):
    write_pix2pix(tmp_path, {"train": 3, "val": 2, "test": 1})
    request = pair_request(16, (-1.0, 1.0))
    splits = zdata.load(f"pix2pix:{tmp_path}", request)
    assert set(splits.train.tensors) == {"A", "B"}
    assert len(splits.train) == 3 and len(splits.val) == 2 and splits.details["val_dir"] == "val"
    a, b = splits.train.tensors["A"], splits.train.tensors["B"]
    assert a.shape == b.shape == (3, 3, 16, 16)
    to_unit = lambda v: v / 255 * 2 - 1  # noqa: E731
    assert torch.allclose(a[2, 0], torch.full((16, 16), to_unit(20)), atol=1e-6)  # A: left half, red 20
    assert torch.allclose(b[2, 2], torch.full((16, 16), to_unit(25)), atol=1e-6)  # B: right half, blue 25
    assert torch.allclose(b[2, 0], torch.full((16, 16), -1.0))


def test_pix2pix_validation_falls_back_to_test(tmp_path):
    write_pix2pix(tmp_path, {"train": 2, "test": 3})
    splits = zdata.load(f"pix2pix:{tmp_path}", pair_request(8, (-1.0, 1.0)))
    assert len(splits.val) == 3 and splits.details["val_dir"] == "test"


@pytest.mark.parametrize(
    "case, expected",
    [
        ("odd", "even width"),
        ("empty", "val/ has no images"),
        ("no-train", "no train/"),
        ("no-val", "no val/ or test/"),
        ("truncated", "truncated"),
    ],
)
def test_pix2pix_malformed_is_one_line_error(zoo, tmp_path, case, expected):
    root = tmp_path / "pairs"
    write_pix2pix(root, {"train": 2, "val": 1})
    culprit = None
    if case == "odd":
        culprit = root / "train" / "odd.png"
        Image.new("RGB", (33, 16)).save(culprit)
    elif case == "empty":
        for f in (root / "val").iterdir():
            f.unlink()
    elif case == "no-train":
        for f in (root / "train").iterdir():
            f.unlink()
        (root / "train").rmdir()
    elif case == "no-val":
        for f in (root / "val").iterdir():
            f.unlink()
        (root / "val").rmdir()
    elif case == "truncated":
        culprit = root / "val" / "0.png"
        culprit.write_bytes(culprit.read_bytes()[:60])
    r = zoo("train", "pix2pix", "--data", f"pix2pix:{root}", "--max-steps", "1", "--ngf", "8", "--ndf", "8")
    assert r.exit_code == 1, r
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert expected in r.stderr
    if culprit is not None:
        assert str(culprit) in r.stderr


# ------------------------------------------------ offline photo pairs: colorization (default), edges


PAIR_REQUEST = pair_request(72, (-1.0, 1.0))
PHOTO_PAIRS = ("colorization", "edges")


@pytest.fixture
def no_network(monkeypatch):
    """The photo pairs must come from files inside the scikit-image wheel."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("the photo pairs tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("kind", PHOTO_PAIRS)
def test_photo_pairs_build_offline_and_are_cached(kind, no_network, tmp_path, monkeypatch):
    from zoo.datasets import photo_pairs as images

    splits = zdata.load(kind, PAIR_REQUEST)
    n_photos = len(images.PAIR_PHOTOS)
    assert len(splits.train) == n_photos * images.PAIR_TRAIN_PER_PHOTO
    assert len(splits.val) == n_photos * images.PAIR_VAL_PER_PHOTO
    for split in (splits.train, splits.val):
        assert split.tensors["A"].shape == split.tensors["B"].shape == (len(split), 3, 72, 72)
    cached = list((tmp_path / "zoo-home" / "data").glob(f"{kind}-72-*.pt"))
    assert len(cached) == 1
    # A second load reads the cache: building again is not even possible now.
    monkeypatch.setattr(images, "_photo_pairs", lambda size, kind: pytest.fail("rebuilt instead of reading the cache"))
    again = zdata.load(kind, PAIR_REQUEST)
    assert torch.equal(again.train.tensors["B"], splits.train.tensors["B"])


@pytest.mark.parametrize("kind", PHOTO_PAIRS)
def test_photo_pairs_are_deterministic(kind, tmp_path, monkeypatch):
    first = zdata.load(kind, PAIR_REQUEST)
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "another-home"))  # no cache: built afresh
    second = zdata.load(kind, PAIR_REQUEST)
    for split in ("train", "val"):
        for key in ("A", "B"):
            assert torch.equal(getattr(first, split).tensors[key], getattr(second, split).tensors[key])


@pytest.mark.parametrize("kind", PHOTO_PAIRS)
def test_photo_pairs_are_drawn_from_real_photographs(kind):
    """B is a window of a bundled photograph; A is drawn from B: its Canny contours
    (edges) or its luminance (colorization)."""
    from skimage.color import rgb2gray

    from zoo.datasets import photo_pairs as images

    splits = zdata.load(kind, pair_request(64, (0.0, 1.0)))
    windows = images.pair_windows()
    photos = {name: images._bundled_photo(name) for name in images.PAIR_PHOTOS}
    for split in ("train", "val"):
        tensors = getattr(splits, split).tensors
        b = (tensors["B"] * 255).round().to(torch.uint8)
        a = (tensors["A"] * 255).round().to(torch.uint8)
        assert len(windows[split]) == len(b)
        for i in range(0, len(b), 23):
            name, top, left, side = windows[split][i]
            # B is the photograph's own pixels in that window, resized...
            crop = Image.fromarray(photos[name][top : top + side, left : left + side]).resize((64, 64), Image.Resampling.BICUBIC)
            photo = b[i].permute(1, 2, 0).numpy()
            assert np.array_equal(photo, np.asarray(crop)), (split, i, name)
            drawing = a[i].permute(1, 2, 0).numpy()
            if kind == "edges":
                # ...and A exactly its edge drawing: black one-pixel contours on white.
                assert np.array_equal(drawing, images.edge_map(photo))
            else:
                # ...and A the same pixels in black and white: equal channels, B's luminance.
                assert np.array_equal(drawing[..., 0], drawing[..., 1]) and np.array_equal(drawing[..., 0], drawing[..., 2])
                assert np.abs(drawing[..., 0] / 255 - rgb2gray(photo)).max() <= 0.5 / 255 + 1e-9
                assert not np.array_equal(photo[..., 0], photo[..., 2])  # B has colour A lacks
    if kind == "edges":
        density = (splits.train.tensors["A"] < 0.5).float().mean()
        assert 0.02 < density < 0.25


def test_pair_windows_keep_validation_apart_from_training():
    """Validation windows come from grid cells of each photo that training never touches."""
    from zoo.datasets import photo_pairs as images

    windows = images.pair_windows()
    for name in images.PAIR_PHOTOS:
        height, width = images._bundled_photo(name).shape[:2]
        train = [w for w in windows["train"] if w[0] == name]
        val = [w for w in windows["val"] if w[0] == name]
        assert len(train) == images.PAIR_TRAIN_PER_PHOTO and len(val) == images.PAIR_VAL_PER_PHOTO
        for _, top, left, side in train + val:
            assert 0 <= top and top + side <= height and 0 <= left and left + side <= width and side >= 32
        for _, vt, vl, vs in val:
            for _, tt, tl, ts in train:
                overlap_rows = min(vt + vs, tt + ts) - max(vt, tt)
                overlap_cols = min(vl + vs, tl + ts) - max(vl, tl)
                assert overlap_rows <= 0 or overlap_cols <= 0, f"{name}: validation window overlaps a training window"
