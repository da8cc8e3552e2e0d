"""scikit-learn's bundled handwritten digits: the offline default of the digit plugins.

1,797 scans of 8x8 pixels (values 0..16) from the UCI Optical Recognition of
Handwritten Digits set, upsampled to the requested size, with a fixed seeded
train/validation split (300 validation images, the same whatever --seed is).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo.data import DataInfo, DataRequest, Dataset, DataSplits, Images, Labels, TensorData, cached, to_request

if TYPE_CHECKING:
    import torch

SPLIT_SEED = 20240601
VALIDATION = 300
CLASSES = tuple(str(d) for d in range(10))


def load(path: Any, request: DataRequest, download: bool = False) -> DataSplits:
    image = request.get("image")
    size = image.size - 2 * image.pad if isinstance(image, Images) and image.size else 28  # before any border

    def build() -> dict[str, torch.Tensor]:
        import torch
        import torch.nn.functional as F
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # N x 1 x 8 x 8 in [0, 1]
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        labels = torch.tensor(bunch.target, dtype=torch.int64)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
        return {"image": images[order].clamp(0, 1), "label": labels[order]}

    t = cached(f"digits-{size}", build)
    images = to_request(t["image"], image) if isinstance(image, Images) else t["image"]
    labels = t["label"]
    val, train = slice(0, VALIDATION), slice(VALIDATION, None)
    return DataSplits(
        name="digits",
        train=TensorData({"image": images[train], "label": labels[train]}),
        val=TensorData({"image": images[val], "label": labels[val]}),
        info=DataInfo(num_classes=10, class_names=CLASSES),
        details={"source": "sklearn.datasets.load_digits", "train": len(labels) - VALIDATION, "val": VALIDATION},
    )


dataset = Dataset(
    name="digits",
    summary="scikit-learn's 1,797 bundled 8x8 handwritten digits, upsampled; fixed 300-image validation split",
    load=load,
    yields=(Images("image", channels=1), Labels("label", num_classes=10)),
)
