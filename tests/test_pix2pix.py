"""pix2pix: training through the CLI, the paper's jitter, direction, U-Net depth,
the 70x70 PatchGAN, export-readiness, and the reference implementation's checkpoints."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from zoo import checkpoint, get_plugin
from zoo.errors import CheckpointError, UsageError
from zoo.plugins import pix2pix as p2p

TINY = ("--ngf", "8", "--ndf", "8")


def tiny_config(**overrides):
    return p2p.Pix2PixConfig(**{"ngf": 8, "ndf": 8, **overrides})


# --------------------------------------------------------------------------- training through the CLI


def test_train_on_default_data_writes_metrics_and_sample_grid(zoo, tmp_path):
    out = tmp_path / "run"
    r = zoo("train", "pix2pix", "--max-steps", "3", *TINY, "--out", out, "--progress", "none")
    assert r.exit_code == 0, r
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("loss_d", "loss_d_real", "loss_d_fake", "loss_g_gan", "loss_g_l1", "val_l1"):
        assert np.isfinite(record[key]), key
    assert record["step"] == 3
    # val_l1 is the checkpointed generator's mean |G(A) - B| on the centre 64 px of the
    # validation pairs (stored at 72 px), recomputed here from the data.
    from zoo import DataRequest, Images, datasets, models

    pairs = DataRequest(
        Images("A", size=72, channels=3, value_range=(-1.0, 1.0)), Images("B", size=72, channels=3, value_range=(-1.0, 1.0))
    )
    val = datasets.load("colorization", pairs).val.tensors
    generator = models.build_model(get_plugin("pix2pix"), checkpoint=str(out / "last.pt")).model.generator
    with torch.no_grad():
        l1 = (generator(val["A"][..., 4:68, 4:68]) - val["B"][..., 4:68, 4:68]).abs().mean()
    assert record["val_l1"] == pytest.approx(float(l1), rel=1e-5)
    grid = Image.open(out / "samples" / "epoch_001.png")
    # 8 validation pairs, one per row: input | output | target, 64 px each with 2 px padding.
    assert grid.size == (3 * 64 + 4 * 2, 8 * 64 + 9 * 2)
    state = checkpoint.load(out / "last.pt", plugin="pix2pix")
    assert state["config"]["image_size"] == 64 and state["data"] == "colorization"
    assert set(state["optimizers"]) == {"discriminator", "generator"}


def write_pairs(root, n_train=3, n_val=2, height=40):
    """A pix2pix folder: each file A|B side by side, A a gradient, B its colour inverse."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 256, size=(height, height, 3), dtype=np.uint8)
            Image.fromarray(np.concatenate([a, 255 - a], axis=1)).save(root / split / f"{i}.png")


def test_train_on_pix2pix_folder_btoa(zoo, tmp_path):
    write_pairs(tmp_path / "facades")
    out = tmp_path / "run"
    r = zoo(
        "train",
        "pix2pix",
        "--data",
        f"pix2pix:{tmp_path / 'facades'}",
        "--direction",
        "BtoA",
        "--max-steps",
        "2",
        *TINY,
        "--out",
        out,
        "--progress",
        "none",
    )
    assert r.exit_code == 0, r
    assert json.loads((out / "config.json").read_text())["config"]["direction"] == "BtoA"
    assert (out / "samples" / "epoch_001.png").is_file()


def test_resume_continues_the_run(zoo, tmp_path):
    out = tmp_path / "run"
    assert zoo("train", "pix2pix", "--max-steps", "2", *TINY, "--out", out, "--progress", "none").exit_code == 0
    r = zoo("train", "pix2pix", "--resume", out / "last.pt", "--epochs", "2", "--max-steps", "4", "--progress", "none")
    assert r.exit_code == 0, r
    assert checkpoint.load(out / "last.pt")["step"] == 4


def test_wrong_dataset_and_bad_sizes_are_one_line_errors(zoo, tmp_path):
    r = zoo("train", "pix2pix", "--data", "digits", "--max-steps", "1", *TINY)
    # Refused before anything is loaded: digits yields image and label, pix2pix needs A and B.
    assert r.exit_code == 2 and "yields image" in r.stderr and "pix2pix needs A" in r.stderr, r
    assert len(r.stderr.strip().splitlines()) == 1, r
    r = zoo("train", "pix2pix", "--image-size", "100", "--max-steps", "1", *TINY)
    assert r.exit_code == 2 and "--image-size must be one of 64, 128, 256" in r.stderr, r
    r = zoo("train", "pix2pix", "--load-size", "60", "--max-steps", "1", *TINY)
    assert r.exit_code == 2 and "--load-size 60 is smaller than --image-size 64" in r.stderr, r


# --------------------------------------------------------------------------- jitter and direction


def test_augment_crops_and_flips_a_and_b_identically():
    config = tiny_config()
    trainer = p2p.Pix2PixTrainer(p2p.build(config), config, torch.device("cpu"))
    size, stored = config.image_size, p2p.load_size(config)
    assert stored == 72  # round(64 * 286 / 256): the paper's 286 for 256
    # B encodes each pixel's position, A is a different function of the same positions,
    # so the crop offset and the flip can be read back from both.
    rows = torch.arange(stored).view(1, 1, stored, 1).expand(4, 1, stored, stored)
    cols = torch.arange(stored).view(1, 1, 1, stored).expand(4, 1, stored, stored)
    b = torch.cat([rows, cols, rows * 0], 1).float()
    a = torch.cat([cols, rows, cols * 0 + 7], 1).float()
    gen = torch.Generator().manual_seed(0)
    offsets, flips = set(), set()
    for _ in range(10):
        out = trainer.augment({"A": a, "B": b}, gen)
        assert out["A"].shape == out["B"].shape == (4, 3, size, size)
        assert torch.equal(out["A"][:, 0], out["B"][:, 1]) and torch.equal(out["A"][:, 1], out["B"][:, 0])
        for i in range(4):
            top, left = int(out["B"][i, 0, 0, 0]), int(out["B"][i, 1, 0, :].min())
            flipped = bool(out["B"][i, 1, 0, 0] > out["B"][i, 1, 0, -1])
            expected = b[i, :, top : top + size, left : left + size]
            assert torch.equal(out["B"][i], expected.flip(-1) if flipped else expected)
            offsets.add((top, left))
            flips.add(flipped)
    assert len(offsets) > 10 and flips == {True, False}
    no_flip = tiny_config(flip=False)
    trainer = p2p.Pix2PixTrainer(p2p.build(no_flip), no_flip, torch.device("cpu"))
    out = trainer.augment({"A": a, "B": b}, torch.Generator().manual_seed(0))
    assert (out["B"][:, 1, :, 1:] > out["B"][:, 1, :, :-1]).all()  # columns still increase


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_direction_picks_source_and_target(direction):
    config = tiny_config(direction=direction)
    torch.manual_seed(0)
    model = p2p.build(config).eval()
    trainer = p2p.Pix2PixTrainer(model, config, torch.device("cpu"))
    a = torch.rand(2, 3, 72, 72) * 2 - 1
    b = torch.rand(2, 3, 72, 72) * 2 - 1
    source, target = (a, b) if direction == "AtoB" else (b, a)
    with torch.no_grad():
        expected = (model.generator(p2p.center_crop(source, 64)) - p2p.center_crop(target, 64)).abs().mean()
        assert trainer.evaluate([{"A": a, "B": b}])["val_l1"] == pytest.approx(float(expected), rel=1e-5)


def test_train_step_updates_both_networks_and_logs_every_loss():
    config = tiny_config()
    torch.manual_seed(0)
    model = p2p.build(config)
    trainer = p2p.Pix2PixTrainer(model, config, torch.device("cpu"))
    optimizers = trainer.configure_optimizers()
    assert list(optimizers) == ["discriminator", "generator"]
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    batch = trainer.augment(
        {"A": torch.rand(1, 3, 72, 72) * 2 - 1, "B": torch.rand(1, 3, 72, 72) * 2 - 1}, torch.Generator().manual_seed(0)
    )
    losses = trainer.train_step(batch, optimizers, 0)
    assert set(losses) == {"loss_d", "loss_d_real", "loss_d_fake", "loss_g_gan", "loss_g_l1"}
    assert float(losses["loss_d"]) == pytest.approx(0.5 * float(losses["loss_d_real"] + losses["loss_d_fake"]))
    for prefix in ("generator.", "discriminator."):
        assert any(not torch.equal(before[k], v) for k, v in model.named_parameters() if k.startswith(prefix)), prefix
    assert all(p.requires_grad for p in model.discriminator.parameters())


# --------------------------------------------------------------------------- architecture


@pytest.mark.parametrize("size, depth", [(64, 6), (128, 7), (256, 8)])
def test_unet_depth_follows_image_size(size, depth):
    config = tiny_config(image_size=size)
    generator = p2p.build(config).generator.eval()
    assert len(generator.encoder) == len(generator.decoder) == depth
    bottleneck = []
    generator.encoder[-1].register_forward_hook(lambda m, i, o: bottleneck.append(o.shape))
    with torch.no_grad():
        out = generator(torch.zeros(1, 3, size, size))
    assert bottleneck[0][-2:] == (1, 1) and out.shape == (1, 3, size, size)
    # Batch norm everywhere but the outermost encoder level and the 1x1 bottleneck;
    # dropout 0.5 in the three innermost decoder levels; Tanh out.
    has_norm = ["norm" in dict(block.named_children()) for block in generator.encoder]
    assert has_norm == [False] + [True] * (depth - 2) + [False]
    dropout = [isinstance(getattr(block, "dropout", None), nn.Dropout) for block in generator.decoder]
    assert dropout == [True] * 3 + [False] * (depth - 3)
    assert isinstance(generator.decoder[-1].out, nn.Tanh)
    assert generator.encoder[0].conv.kernel_size == (4, 4) and generator.encoder[0].conv.stride == (2, 2)


def test_unet_channels_match_the_paper_at_256():
    generator = p2p.UNetGenerator(3, 3, depth=8, ngf=64)
    # encoder C64-C128-C256-C512-C512-C512-C512-C512
    assert [b.conv.out_channels for b in generator.encoder] == [64, 128, 256, 512, 512, 512, 512, 512]
    # decoder CD512-CD1024-CD1024-C1024-C1024-C512-C256-C128: the paper counts the channels
    # each decoder level reads, the skip's included
    assert [b.conv.in_channels for b in generator.decoder] == [512, 1024, 1024, 1024, 1024, 512, 256, 128]
    assert [b.conv.out_channels for b in generator.decoder] == [512, 512, 512, 512, 256, 128, 64, 3]


def test_patchgan_sees_70x70_patches():
    discriminator = p2p.PatchDiscriminator(6, ndf=8)
    discriminator.eval()
    pair = torch.randn(1, 6, 160, 160, requires_grad=True)
    logits = discriminator(pair)
    assert logits.shape == (1, 1, 18, 18)
    logits[0, 0, 9, 9].backward()
    rows = torch.nonzero(pair.grad.abs().sum((0, 1, 3))).flatten()
    cols = torch.nonzero(pair.grad.abs().sum((0, 1, 2))).flatten()
    assert int(rows.max() - rows.min() + 1) == 70 and int(cols.max() - cols.min() + 1) == 70


def test_inference_is_per_image_and_deterministic():
    """Eval mode: no dropout, and each image normalised by its own statistics, so a
    batch gives exactly the single-image results (what training at batch 1 computes)."""
    torch.manual_seed(0)
    model = p2p.build(tiny_config())
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        training_view = torch.cat([model.generator(images[i : i + 1]) for i in range(3)])
        model.eval()
        batched = model.generator(images)
        assert torch.allclose(batched, training_view, atol=1e-5)
        assert torch.equal(model.generator(images), batched)


def test_generator_scripts_and_takes_any_multiple_of_its_downsampling():
    torch.manual_seed(0)
    generator = p2p.build(tiny_config()).generator.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(generator)
    for shape in ((1, 3, 64, 64), (2, 3, 128, 192)):
        x = torch.rand(shape) * 2 - 1
        with torch.no_grad():
            eager, script = generator(x), scripted(x)
        assert eager.shape == shape and torch.allclose(script, eager, atol=1e-6)
    target = p2p.plugin.target("generator")
    assert dict(target.dynamic_dims) == {"image": {2: "height", 3: "width"}, "translated": {2: "height", 3: "width"}}


# --------------------------------------------------------------------------- reference checkpoints


class ReferenceLevel(nn.Module):
    """One level of the reference UnetGenerator, laid out as junyanz/pytorch-CycleGAN-and-
    pix2pix models/networks.py documents it (norm='batch', so convolutions followed by
    batch norm have no bias): its layers live in a Sequential named `model`, the next
    level inside it; the output is cat([x, model(x)]) except at the outermost level.
    Written here from that layout, independently of zoo's generator."""

    def __init__(self, outer, inner, sub=None, in_channels=None, outermost=False, innermost=False):
        super().__init__()
        self.outermost = outermost
        down = nn.Conv2d(in_channels or outer, inner, 4, 2, 1, bias=False)
        if outermost:
            layers = [down, sub, nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1), nn.Tanh()]
        elif innermost:
            layers = [
                nn.LeakyReLU(0.2, True),
                down,
                nn.ReLU(True),
                nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=False),
                nn.BatchNorm2d(outer),
            ]
        else:
            layers = [
                nn.LeakyReLU(0.2, True),
                down,
                nn.BatchNorm2d(inner),
                sub,
                nn.ReLU(True),
                nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=False),
                nn.BatchNorm2d(outer),
            ]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        # The in-place LeakyReLU above changes x before the concatenation, as in the reference.
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class ReferenceUnet(nn.Module):
    def __init__(self, num_downs, ngf=64):
        super().__init__()
        level = ReferenceLevel(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - 5):
            level = ReferenceLevel(ngf * 8, ngf * 8, sub=level)
        level = ReferenceLevel(ngf * 4, ngf * 8, sub=level)
        level = ReferenceLevel(ngf * 2, ngf * 4, sub=level)
        level = ReferenceLevel(ngf, ngf * 2, sub=level)
        self.model = ReferenceLevel(3, ngf, sub=level, in_channels=3, outermost=True)

    def forward(self, x):
        return self.model(x)


def test_reference_unet_256_checkpoint_loads_strictly():
    """`latest_net_G.pth` of unet_256 (ngf 64, batch norm): every key and shape."""
    torch.manual_seed(0)
    reference = ReferenceUnet(8, 64).state_dict()
    # The layout the test relies on, spelled out: outermost down- and up-convolution,
    # the innermost (bottleneck) level seven nestings deep, a middle level's norms.
    innermost = "model.model.1" + ".model.3" * 6 + ".model"
    assert innermost == "model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model"
    expected_shapes = {
        "model.model.0.weight": (64, 3, 4, 4),
        "model.model.3.weight": (128, 3, 4, 4),
        "model.model.3.bias": (3,),
        "model.model.1.model.1.weight": (128, 64, 4, 4),
        "model.model.1.model.2.running_var": (128,),
        "model.model.1.model.5.weight": (256, 64, 4, 4),
        "model.model.1.model.6.num_batches_tracked": (),
        f"{innermost}.1.weight": (512, 512, 4, 4),
        f"{innermost}.3.weight": (512, 512, 4, 4),
        f"{innermost}.4.weight": (512,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(reference[key].shape) == shape, key
    # 8 down- and 8 up-convolutions, the output bias, 13 batch norms of 5 entries each
    assert len(reference) == 8 * 2 + 1 + 13 * 5

    model = p2p.build(p2p.Pix2PixConfig(image_size=256))
    state = p2p.checkpoint_filter(reference, model)
    assert all(k.startswith("generator.") for k in state)
    generator_state = {k.removeprefix("generator."): v for k, v in state.items()}
    checkpoint.load_state_dict_strict(model.generator, generator_state)
    assert torch.equal(model.generator.encoder[7].conv.weight, reference[f"{innermost}.1.weight"])
    assert torch.equal(model.generator.decoder[7].conv.bias, reference["model.model.3.bias"])


@pytest.mark.parametrize("image_size", [64, 128, 256])
def test_reference_generator_computes_the_same_function(image_size):
    """With the mapped weights, zoo's generator (eval mode) computes what the reference
    computes at test time (batch statistics of a batch of one, dropout off)."""
    depth = int(np.log2(image_size))
    torch.manual_seed(1)
    reference = ReferenceUnet(depth, ngf=4)
    for m in reference.modules():  # non-trivial scales and shifts, so a misplaced norm shows
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    reference.train()
    model = p2p.build(tiny_config(image_size=image_size, ngf=4)).eval()
    state = p2p.checkpoint_filter({"module." + k: v for k, v in reference.state_dict().items()}, model)
    checkpoint.load_state_dict_strict(model.generator, {k.removeprefix("generator."): v for k, v in state.items()})
    images = torch.rand(2, 3, image_size, image_size) * 2 - 1
    with torch.no_grad():
        expected = torch.cat([reference(images[i : i + 1].clone()) for i in range(2)])
        got = model.generator(images)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_reference_checkpoint_of_another_depth_is_refused():
    model = p2p.build(tiny_config())  # 64 px: 6 levels
    with pytest.raises(CheckpointError, match="6-level U-Net.*unet_64"):
        p2p.checkpoint_filter(ReferenceUnet(8, ngf=8).state_dict(), model)
    own = model.state_dict()
    assert p2p.checkpoint_filter(own, model).keys() == own.keys()  # zoo's own keys pass through


def test_bad_image_size_in_the_python_api():
    with pytest.raises(UsageError, match="--image-size"):
        p2p.build(tiny_config(image_size=96))


def test_reference_checkpoint_imports_and_translates_through_the_cli(zoo, tmp_path):
    """`zoo weights import` of a reference `latest_net_G.pth`, then `zoo predict` with it:
    the written image is what the reference generator computes."""
    torch.manual_seed(2)
    reference = ReferenceUnet(6, ngf=8)
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    torch.save(reference.state_dict(), tmp_path / "latest_net_G.pth")
    r = zoo("weights", "import", "pix2pix", tmp_path / "latest_net_G.pth", "--name", "REFERENCE", "--config", "ngf=8")
    assert r.exit_code == 0, r

    size = 2 * 64  # what `zoo predict` feeds a 64-px model (its export example size)
    pixels = np.random.default_rng(0).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "edges.png")
    r = zoo("predict", "pix2pix", tmp_path / "edges.png", "--weights", "REFERENCE", "-o", tmp_path / "photo.png")
    assert r.exit_code == 0, r
    reference.train()  # the reference's test path: batch statistics of the one image
    for m in reference.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255 * 2 - 1
        expected = ((reference(x)[0].permute(1, 2, 0) + 1) / 2 * 255).numpy()
    written = np.asarray(Image.open(tmp_path / "photo.png").convert("RGB"), dtype=np.float64)
    assert written.shape == expected.shape
    assert np.abs(written - expected).max() <= 1.0
