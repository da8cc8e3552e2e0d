"""The adversarial plugins (gan, cgan, dcgan): training through the CLI, the shapes
their hyperparameters promise, dcgan's initialisation, and the foreign and
generator-only checkpoints their filters accept."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from zoo import Progress, checkpoint, datasets, get_plugin, models
from zoo.errors import CheckpointError, UsageError

ADVERSARIAL = ["gan", "cgan", "dcgan"]
# Grid geometry written each epoch: (columns, rows, image side); make_grid pads by 2.
GRIDS = {"gan": (8, 8, 28), "cgan": (10, 10, 28), "dcgan": (8, 8, 32)}


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_trains_logs_each_loss_and_writes_a_grid(zoo, tmp_path, name):
    out = tmp_path / "run"
    r = zoo("train", name, "--max-steps", "2", "--batch-size", "16", "--out", out, "--progress", "none")
    assert r.exit_code == 0, r
    (record,) = _records(out)
    for key in ("loss_d", "loss_g", "d_real", "d_fake", "val_loss_d", "val_loss_g", "val_d_real", "val_d_fake"):
        assert math.isfinite(record[key]), key
    # The logged D(x) and D(G(z)) are means of what the losses are means of: -log is
    # convex, so a loss can never be below what the mean probabilities give (Jensen).
    for prefix in ("", "val_"):
        bound = -math.log(record[prefix + "d_real"]) - math.log(1 - record[prefix + "d_fake"])
        assert record[prefix + "loss_d"] >= bound - 1e-6, (prefix, record)
    # The validation figures are what the saved model computes on the validation split.
    built = models.build_model(get_plugin(name), checkpoint=str(out / "last.pt"))
    splits = datasets.load("digits", get_plugin(name).data_request(built.config), plugin=name)
    trainer = get_plugin(name).trainer_class(built.model, built.config, torch.device("cpu"))
    with torch.no_grad():
        recomputed = trainer.evaluate(splits.val.batches(16))
    for key in ("val_loss_d", "val_loss_g", "val_d_real", "val_d_fake"):
        assert record[key] == pytest.approx(recomputed[key], rel=1e-5), key
    state = torch.load(out / "last.pt", weights_only=True)
    assert set(state["optimizers"]) == {"discriminator", "generator"}
    columns, rows, side = GRIDS[name]
    with Image.open(out / "samples" / "epoch_001.png") as grid:
        assert grid.size == (2 + columns * (side + 2), 2 + rows * (side + 2))


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_one_optimizer_per_player(name):
    plugin = get_plugin(name)
    config = plugin.config()
    torch.manual_seed(0)
    model = plugin.instantiate(config)
    trainer = plugin.trainer_class(model, config, torch.device("cpu"))
    optimizers = trainer.configure_optimizers()
    assert list(optimizers) == ["discriminator", "generator"]  # the order of the step
    for player, optimizer in optimizers.items():
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert held == {id(p) for p in getattr(model, player).parameters()}
        assert optimizer.param_groups[0]["betas"] == (0.5, 0.999) and optimizer.param_groups[0]["lr"] == 2e-4

    image = plugin.data_request(config)["image"]
    lo, hi = image.value_range
    batch = {"image": torch.rand(8, image.channels, image.size, image.size) * (hi - lo) + lo, "label": torch.arange(8) % 10}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = trainer.train_step(batch, optimizers, Progress(0, 1, 0, 1, 1, 1))
    assert set(losses) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert all(v.dim() == 0 and not v.requires_grad for v in losses.values())
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"generator", "discriminator"}


def test_cgan_samples_follow_the_label(zoo, tmp_path):
    out = tmp_path / "run"
    assert zoo("train", "cgan", "--max-steps", "2", "--batch-size", "16", "--out", out, "--progress", "none").exit_code == 0
    paths = {}
    for label in ("3", "5"):
        paths[label] = tmp_path / f"{label}.png"
        r = zoo("sample", "cgan", "--checkpoint", out / "last.pt", "--label", label, "-n", "4", "-o", paths[label])
        assert r.exit_code == 0, r
        assert "class " + label in r.stdout
    pixels = {k: np.asarray(Image.open(p).convert("L")) for k, p in paths.items()}
    assert not np.array_equal(pixels["3"], pixels["5"])  # same noise, another class, another image

    plugin = get_plugin("cgan")
    z, labels = plugin.sample_inputs(plugin.config(), 12, None, torch.Generator().manual_seed(0))
    assert labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]  # no --label: every digit appears
    assert labels.dtype == torch.int64 and z.shape == (12, 100) and 0 <= float(z.min()) and float(z.max()) < 1
    with pytest.raises(UsageError, match="0 to 9"):
        plugin.sample_inputs(plugin.config(), 2, 10, torch.Generator())


@pytest.mark.parametrize("name", ["gan", "dcgan"])
def test_unconditional_plugins_refuse_a_label(name):
    plugin = get_plugin(name)
    with pytest.raises(UsageError, match="not conditional"):
        plugin.sample_inputs(plugin.config(), 2, 3, torch.Generator())


def test_cgan_generator_is_deterministic_in_eval_only():
    """Dropout 0.5 in the generator (Mirza & Osindero) must be off in the exported graph."""
    plugin = get_plugin("cgan")
    torch.manual_seed(0)
    generator = plugin.target("generator").module(plugin.instantiate(plugin.config()))
    z, label = torch.rand(4, 100), torch.arange(4)
    generator.train()
    assert not torch.equal(generator(z, label), generator(z, label))
    generator.eval()
    assert torch.equal(generator(z, label), generator(z, label))


@pytest.mark.parametrize("size,channels,kernel", [(32, 1, 5), (32, 3, 4), (64, 1, 4), (64, 3, 5)])
def test_dcgan_layers_follow_image_size_and_channels(size, channels, kernel):
    plugin = get_plugin("dcgan")
    config = plugin.config(image_size=size, channels=channels, kernel_size=kernel, generator_width=8, discriminator_width=8)
    model = plugin.instantiate(config).eval().requires_grad_(False)
    assert len(model.generator.blocks) == len(model.discriminator.blocks) == {32: 2, 64: 3}[size]
    last = []
    model.generator.to_image.register_forward_hook(lambda module, inputs, output: last.append(output))
    images = model.generator(torch.randn(3, 100))
    assert images.shape == (3, channels, size, size)
    assert torch.equal(images, torch.tanh(last[0]))  # Tanh after the last layer: images in [-1, 1]
    assert model.discriminator(images).shape == (3,)
    image = plugin.data_request(config)["image"]
    assert image.value_range == (-1.0, 1.0) and (image.size, image.channels) == (size, channels)


def test_dcgan_trains_at_64_rgb_from_the_cli(zoo, tmp_path):
    out = tmp_path / "run"
    r = zoo(
        "train",
        "dcgan",
        "--image-size",
        "64",
        "--channels",
        "3",
        "--generator-width",
        "8",
        "--discriminator-width",
        "8",
        "--max-steps",
        "1",
        "--batch-size",
        "4",
        "--out",
        out,
        "--progress",
        "none",
    )
    assert r.exit_code == 0, r
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["image_size"], config["channels"]) == (64, 3)  # ints: the CLI hands choices back in their field's type
    with Image.open(out / "samples" / "epoch_001.png") as grid:
        assert grid.mode == "RGB" and grid.size == (2 + 8 * 66, 2 + 8 * 66)


def test_dcgan_rejects_unsupported_sizes(zoo):
    r = zoo("train", "dcgan", "--image-size", "48", "--max-steps", "1")
    assert r.exit_code == 2 and "48" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(UsageError, match="image-size"):
        get_plugin("dcgan").config(image_size=128)


def test_dcgan_initialisation_statistics():
    """Radford et al.: weights N(0, 0.02); batch-norm gains N(1, 0.02), shifts 0."""
    plugin = get_plugin("dcgan")
    torch.manual_seed(0)
    model = plugin.instantiate(plugin.config(image_size=64, generator_width=64, discriminator_width=64))
    weights = torch.cat([m.weight.detach().flatten() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))])
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    gains = torch.cat([m.weight.detach().flatten() for m in norms])
    assert weights.numel() > 1_000_000 and gains.numel() > 1_500
    assert abs(float(weights.mean())) < 1e-3 and abs(float(weights.std()) - 0.02) < 0.02 * 0.01
    assert abs(float(gains.mean()) - 1.0) < 2e-3 and abs(float(gains.std()) - 0.02) < 0.02 * 0.1
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in norms)
    assert all(getattr(m, "bias", None) is None for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


# ----------------------------------------------------------------- foreign checkpoints


def pytorch_examples_netG(nz=100, ngf=64, nc=3):
    """A module with the layout of pytorch/examples dcgan/main.py's generator: one
    nn.Sequential `main` of ConvTranspose2d (4x4: stride 1 from 1x1, then stride 2 with
    padding 1; no biases), BatchNorm2d and ReLU, ending in Tanh at 64x64."""
    widths = [ngf * 8, ngf * 4, ngf * 2, ngf]
    layers: list[nn.Module] = [nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
    for a, b in zip(widths, widths[1:]):
        layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
    layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
    module = nn.Module()
    module.main = nn.Sequential(*layers)
    return module


NETG_KEYS = {
    "main.0.weight": (100, 512, 4, 4),
    **{f"main.1.{p}": (512,) for p in ("weight", "bias", "running_mean", "running_var")},
    "main.1.num_batches_tracked": (),
    "main.3.weight": (512, 256, 4, 4),
    **{f"main.4.{p}": (256,) for p in ("weight", "bias", "running_mean", "running_var")},
    "main.4.num_batches_tracked": (),
    "main.6.weight": (256, 128, 4, 4),
    **{f"main.7.{p}": (128,) for p in ("weight", "bias", "running_mean", "running_var")},
    "main.7.num_batches_tracked": (),
    "main.9.weight": (128, 64, 4, 4),
    **{f"main.10.{p}": (64,) for p in ("weight", "bias", "running_mean", "running_var")},
    "main.10.num_batches_tracked": (),
    "main.12.weight": (64, 3, 4, 4),
}
FOREIGN_CONFIG = dict(image_size=64, channels=3, kernel_size=4, generator_width=64)


def _trained_looking_netG():
    torch.manual_seed(1)
    netG = pytorch_examples_netG()
    for m in netG.modules():
        if isinstance(m, nn.BatchNorm2d):  # running statistics as after training, so eval mode is tested
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.1, 0.1)
    return netG.eval()


def _generator_only(state):
    """A filtered state dict as `generator` keys only, for a strict load into model.generator."""
    assert all(k.startswith("generator.") for k in state)
    return {k.removeprefix("generator."): v for k, v in state.items()}


def test_dcgan_imports_a_pytorch_examples_generator(tmp_path):
    netG = _trained_looking_netG()
    state = netG.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == NETG_KEYS

    plugin = get_plugin("dcgan")
    model = plugin.instantiate(plugin.config(**FOREIGN_CONFIG)).eval()
    checkpoint.load_state_dict_strict(model.generator, _generator_only(plugin.checkpoint_filter(state, model)))
    z = torch.randn(5, 100)
    with torch.no_grad():
        expected = netG.main(z.reshape(5, 100, 1, 1))
        assert torch.allclose(model.generator(z), expected, atol=1e-5)

    # As `--weights netG_epoch_24.pth` goes: the file pytorch/examples writes, read
    # without unpickling code, filtered, the generator loaded strictly.
    from zoo import weights

    path = tmp_path / "netG_epoch_24.pth"
    torch.save(state, path)
    fresh = plugin.instantiate(plugin.config(**FOREIGN_CONFIG)).eval()
    discriminator_before = {k: v.clone() for k, v in fresh.discriminator.state_dict().items()}
    loaded = weights.load_into(plugin, fresh, str(path), quiet=True)
    assert loaded.components == ["generator"] and loaded.left_as_built == ["discriminator"]
    assert all(torch.equal(v, discriminator_before[k]) for k, v in fresh.discriminator.state_dict().items())
    with torch.no_grad():
        assert torch.allclose(fresh.generator(z), expected, atol=1e-5)


def test_dcgan_import_of_checkpoints_without_step_counters():
    """PyTorch < 0.4 saved batch norm without num_batches_tracked."""
    state = {k: v for k, v in _trained_looking_netG().state_dict().items() if not k.endswith("num_batches_tracked")}
    plugin = get_plugin("dcgan")
    model = plugin.instantiate(plugin.config(**FOREIGN_CONFIG))
    checkpoint.load_state_dict_strict(model.generator, _generator_only(plugin.checkpoint_filter(state, model)))


def test_dcgan_import_names_the_hyperparameters_it_needs():
    plugin = get_plugin("dcgan")
    model = plugin.instantiate(plugin.config())  # 32x32, 5x5 kernels: not pytorch/examples' layout
    with pytest.raises(CheckpointError, match="image_size=64, channels=3, generator_width=64, kernel_size=4") as error:
        plugin.checkpoint_filter(_trained_looking_netG().state_dict(), model)
    assert "--config kernel_size=4" in str(error.value)


def test_dcgan_refuses_a_pytorch_examples_discriminator():
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 64, 4, 2, 1, bias=False), nn.LeakyReLU(0.2), nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128)]
    netD_state = {f"main.{k}": v for k, v in nn.Sequential(*layers).state_dict().items()}
    plugin = get_plugin("dcgan")
    with pytest.raises(CheckpointError, match="not a generator"):
        plugin.checkpoint_filter(netD_state, plugin.instantiate(plugin.config(**FOREIGN_CONFIG)))


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_generator_only_weights_load_strictly(tmp_path, name):
    """Published weights may hold only the generator (issue 5): they load, the
    discriminator keeps its initialisation, and a missing generator key is an error."""
    import dataclasses

    from safetensors.torch import save_file

    from zoo import weights

    plugin = get_plugin(name)
    config = plugin.config()
    torch.manual_seed(0)
    trained = plugin.instantiate(config)
    generator_only = {k: v.contiguous() for k, v in trained.state_dict().items() if k.startswith("generator.")}
    meta = {"plugin": name, "config": dataclasses.asdict(config), "components": ["generator"]}
    path = tmp_path / "generator.safetensors"
    save_file(generator_only, str(path), metadata={"zoo": json.dumps(meta)})

    torch.manual_seed(1)
    model = plugin.instantiate(config)
    discriminator_before = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    loaded = weights.load_into(plugin, model, str(path), config=config, quiet=True)
    assert loaded.left_as_built == ["discriminator"]
    assert all(torch.equal(model.generator.state_dict()[k], v) for k, v in trained.generator.state_dict().items())
    assert all(torch.equal(v, discriminator_before[k]) for k, v in model.discriminator.state_dict().items())

    missing = dict(generator_only)
    missing.pop(next(iter(missing)))
    save_file(missing, str(path), metadata={"zoo": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="missing"):
        weights.load_into(plugin, model, str(path), config=config, quiet=True)


def test_sample_from_an_imported_pytorch_examples_checkpoint(zoo, tmp_path):
    """The user's path: a netG_epoch_N.pth is refused with the hyperparameters it needs,
    imported with them, and then samples what pytorch/examples' own module computes."""
    from torchvision.utils import make_grid

    netG = _trained_looking_netG()
    path = tmp_path / "netG_epoch_24.pth"
    torch.save(netG.state_dict(), path)
    r = zoo("sample", "dcgan", "--weights", path, "-o", "x.png")
    assert r.exit_code == 1 and "--config kernel_size=4" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
    flags = [x for pair in ("image_size=64", "channels=3", "generator_width=64", "kernel_size=4") for x in ("--config", pair)]
    r = zoo("weights", "import", "dcgan", path, "--name", "examples", *flags)
    assert r.exit_code == 0, r
    r = zoo("sample", "dcgan", "--weights", "examples", "-n", "4", "--nrow", "2", "--seed", "7", "-o", "g.png")
    assert r.exit_code == 0, r

    plugin = get_plugin("dcgan")
    (z,) = plugin.sample_inputs(plugin.config(), 4, None, torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = make_grid((netG.main(z.reshape(4, 100, 1, 1)) + 1) / 2, nrow=2, padding=2)
    expected = expected.mul(255).add(0.5).clamp(0, 255).byte().permute(1, 2, 0).numpy().astype(np.int16)
    assert np.abs(np.asarray(Image.open(tmp_path / "g.png"), dtype=np.int16) - expected).max() <= 1
