"""Pretrained weights: the tables as data, the verified cache and its downloads, safe
formats, partial (generator-only) and foreign weights, and `zoo weights`.

Downloads come from a real HTTP server on 127.0.0.1; a third-party plugin with a
weights table is installed the way pip would (the `install_dist` fixture)."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import one_line_error, registry_plugins
from torch import nn

from zoo import checkpoint, get_plugin, models
from zoo import config as zconfig
from zoo import weights as zweights
from zoo.data import DataInfo
from zoo.errors import UsageError
from zoo.plugin import Weights


def cache_files(plugin: str = "tinyw") -> list[str]:
    """Every file under the plugin's weights cache, hidden ones (temp files) included."""
    root = Path(os.environ["ZOO_HOME"]) / "weights" / plugin
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


# --------------------------------------------------------------------------- the tables of the registry


def table_entries() -> list[tuple[str, str]]:
    return [(name, w.name) for name in registry_plugins() for w in get_plugin(name).weights]


@pytest.mark.parametrize("name,entry_name", table_entries())
def test_every_table_entry_is_valid_and_its_parameter_count_is_right(name, entry_name):
    """Like torchvision's test: the meta follows the schema and num_params is what the
    model its config builds really has (counted on a CPU model, not the meta device)."""
    plugin = get_plugin(name)
    entry = plugin.get_weights(entry_name)
    assert zweights.validate_entry(plugin, entry) == []
    config = plugin.config(**entry.meta["config"])
    # What the data told the model (knn's stored-image count), as models.build_model passes it.
    model = plugin.instantiate(config, DataInfo.from_json(entry.meta.get("data_info")))
    components = entry.meta.get("components")
    counted = sum(p.numel() for n, p in model.named_parameters() if components is None or n.split(".")[0] in components)
    assert counted == entry.meta["num_params"]
    if entry.source.startswith("package:"):
        loaded = zweights.read(plugin, entry_name)
        assert loaded.sha256 == entry.sha256
        assert loaded.meta["config"] == entry.meta["config"] and loaded.meta["plugin"] == name
        assert loaded.meta.get("components") in (None, components or zweights.top_level_children(model))
        # The file stores its floating-point tensors as its meta says (float32 unless 'stored_dtype').
        assert loaded.meta.get("stored_dtype") == entry.meta.get("stored_dtype")
        assert zweights.stored_dtype(loaded.state_dict) == entry.meta.get("stored_dtype", "float32")
        zweights.load_into(plugin, model, loaded, config=config)
        assert all(p.dtype == torch.float32 for p in model.parameters())  # loaded into the model's own dtype


@pytest.mark.parametrize("name", registry_plugins())
def test_default_weights_resolve_offline_where_a_table_exists(name, monkeypatch):
    plugin = get_plugin(name)
    if not plugin.weights:
        assert plugin.default_weights is None
        return
    assert plugin.default_weights is not None, f"{name} has weights but no DEFAULT"
    entry = zweights.find_entry(plugin, "DEFAULT")
    assert entry.name == plugin.default_weights
    if not entry.source.startswith("package:"):
        pytest.skip(f"{name}:DEFAULT is hosted at {entry.source}; this test never downloads")
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    built = models.build_model(plugin, weights="DEFAULT")
    model, config, loaded = built.model, built.config, built.loaded
    assert loaded.sha256 == entry.sha256 and zconfig.to_dict(config) == entry.meta["config"]  # tuples as the JSON lists
    assert sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] in loaded.components) == entry.meta["num_params"]


def test_packaged_weights_fit_the_size_budget():
    import zoo.plugins

    root = Path(zoo.plugins.__file__).resolve().parent / "weights"
    files = list(root.glob("*.safetensors")) if root.is_dir() else []
    sizes = sorted(((f.stat().st_size, f.name) for f in files), reverse=True)
    total = sum(size for size, _ in sizes)
    report = ", ".join(f"{name} {size / 1e6:.2f} MB" for size, name in sizes)
    # The budget: 25 MB in all (`zoo weights export --dtype float16` halves a file).
    assert total <= 25_000_000, f"packaged weights take {total / 1e6:.2f} MB, over the 25 MB budget: {report}"
    referenced = {w.source.split(":", 1)[1] for n in registry_plugins() for w in get_plugin(n).weights if w.source.startswith("package:")}
    assert referenced <= {f.name for f in files}


def test_validation_names_every_problem():
    plugin = get_plugin("vae")
    config = dataclasses.asdict(plugin.config())
    good = {
        "dataset": "digits",
        "metrics": {"val_loss": 100.0},
        "input": zweights.input_spec(plugin, plugin.config()),
        "num_params": 652824,
        "license": "BSD-3-Clause",
        "command": zweights.train_command(plugin, plugin.config(), data="digits", seed=0),
        "config": config,
    }
    entry = Weights("DIGITS_V1", "package:vae.safetensors", "0" * 64, good)
    assert zweights.validate_entry(plugin, entry) == []
    bad = dict(good, num_params=12, license="", command=good["command"].replace("--latent-dim 20", "--latent-dim 8"), colour="red")
    del bad["dataset"]
    problems = zweights.validate_entry(plugin, Weights("digits", "ftp://x", "abc", bad))
    text = "\n".join(problems)
    for needle in ("upper case", "ftp://x", "64 lower-case hex", "no 'dataset'", "unknown key 'colour'"):
        assert needle in text, (needle, text)
    problems = zweights.validate_entry(plugin, Weights("DIGITS_V1", "package:v", "0" * 64, dict(good, num_params=12, license="")))
    assert any("'num_params' is 12, the model" in p and "652824" in p for p in problems), problems
    assert any("license" in p for p in problems)
    wrong_command = dict(good, command=good["command"].replace("--latent-dim 20", "--latent-dim 8"))
    problems = zweights.validate_entry(plugin, Weights("DIGITS_V1", "package:v", "0" * 64, wrong_command))
    assert problems == ["vae:DIGITS_V1: meta 'command' gives other hyperparameters than meta 'config': latent_dim"]
    wrong_input = dict(good, input=dict(good["input"], value_range=[-1.0, 1.0]))
    assert "disagrees" in " ".join(zweights.validate_entry(plugin, Weights("DIGITS_V1", "package:v", "0" * 64, wrong_input)))
    for dtype in zweights.STORED_DTYPES:
        assert zweights.validate_entry(plugin, Weights("DIGITS_V1", "package:v", "0" * 64, dict(good, stored_dtype=dtype))) == []
    problems = zweights.validate_entry(plugin, Weights("DIGITS_V1", "package:v", "0" * 64, dict(good, stored_dtype="half")))
    assert problems == ["vae:DIGITS_V1: meta 'stored_dtype' 'half' must be one of float32, float16, bfloat16"]


# --------------------------------------------------------------------------- a third-party plugin with a table

TINY_SOURCE = '''
"""A tiny two-part model (generator + discriminator) whose weights table the tests fill."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo.plugin import DataRequest, ExportTarget, Plugin, TensorSpec, Trainer, TrainConfig, Weights, hparam


@dataclass
class TinyConfig(TrainConfig):
    epochs: int = hparam(1, "passes over the training split")
    batch_size: int = hparam(64, "samples per step")
    lr: float = hparam(1e-3, "Adam learning rate")
    latent_dim: int = hparam(4, "noise size")
    hidden: int = hparam(8, "hidden units")


class Tiny(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.generator = nn.Sequential(nn.Linear(config.latent_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 64))
        self.discriminator = nn.Sequential(nn.Linear(64, config.hidden), nn.BatchNorm1d(config.hidden), nn.Linear(config.hidden, 1))


class TinyTrainer(Trainer):
    def configure_optimizers(self):
        return {"adam": torch.optim.Adam(self.model.parameters(), lr=self.config.lr)}

    def train_step(self, batch, optimizers, step):
        x = batch["image"].flatten(1)
        z = torch.randn(x.shape[0], self.config.latent_dim, device=x.device)
        loss = F.mse_loss(self.model.generator(z), x) + F.binary_cross_entropy_with_logits(
            self.model.discriminator(x), torch.ones(x.shape[0], 1, device=x.device))
        optimizers["adam"].zero_grad()
        loss.backward()
        optimizers["adam"].step()
        return {"loss": loss.detach()}

    def evaluate(self, batches):
        total, n = 0.0, 0
        for batch in batches:
            x = batch["image"].flatten(1)
            total += float(F.mse_loss(self.model.generator(torch.zeros(x.shape[0], self.config.latent_dim)), x, reduction="sum"))
            n += x.shape[0]
        return {"val_loss": total / n}


def checkpoint_filter(state, model):
    """A foreign generator saved as `netG.*` becomes zoo's `generator.*`."""
    return {("generator." + k[5:] if k.startswith("netG.") else k): v for k, v in state.items()}


plugin = Plugin(
    name="tinyw",
    summary="tiny generator + discriminator",
    task="generative",
    config_class=TinyConfig,
    build=Tiny,
    trainer_class=TinyTrainer,
    data_request=lambda config: DataRequest(size=8, channels=1, value_range=(0.0, 1.0)),
    default_dataset="digits",
    datasets=("digits",),
    export_targets=(ExportTarget("generator", lambda m: m.generator, (TensorSpec("z"),), (TensorSpec("image"),),
                                 lambda c, b, g: (torch.randn(b, c.latent_dim, generator=g),)),),
    weights=(
# @WEIGHTS@
    ),
    default_weights=DEFAULT_WEIGHTS,
    checkpoint_filter=checkpoint_filter,
)
'''


class Tiny:
    """The `tinyw` plugin, installed once per test and re-written as its author would
    when pasting new table entries."""

    def __init__(self, install_dist):
        self.site = install_dist("zoo-tinyw", "1.0", {"zoo_tinyw": self.source("", None)}, {"tinyw": "zoo_tinyw:plugin"})

    @staticmethod
    def source(weights_src: str, default: str | None) -> str:
        return TINY_SOURCE.replace("# @WEIGHTS@", weights_src).replace("DEFAULT_WEIGHTS", repr(default))

    def publish(self, entries: list[Weights] | str, default: str | None = None) -> None:
        from zoo import _registry

        text = entries if isinstance(entries, str) else "\n".join(zweights.entry_source(e, indent="        ") for e in entries)
        (self.site / "zoo_tinyw.py").write_text(self.source(text, default))
        sys.modules.pop("zoo_tinyw", None)
        _registry.clear()

    @property
    def plugin(self):
        return get_plugin("tinyw")

    def state(self, seed: int = 0, **config) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        p = self.plugin
        return p.instantiate(p.config(**config)).state_dict()

    def file(self, path: Path, state: dict, **meta) -> tuple[Path, str]:
        meta.setdefault("plugin", "tinyw")
        meta.setdefault("config", dataclasses.asdict(self.plugin.config()))
        data = zweights.safetensors_bytes(state, meta)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path, hashlib.sha256(data).hexdigest()


@pytest.fixture
def tiny(install_dist):
    return Tiny(install_dist)


class Server:
    """http.server on 127.0.0.1 in a thread. Routes: path -> (behaviour, body) with
    behaviour ok, truncated (Content-Length larger than the body), stall (headers and a
    few bytes, then silence until the test ends), or a 404 for unknown paths."""

    def __init__(self):
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.hits: dict[str, int] = {}
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                behaviour, body = server.routes.get(self.path, ("missing", b""))
                if behaviour == "missing":
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if behaviour != "endless":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if behaviour == "ok":
                    self.wfile.write(body)
                elif behaviour == "truncated":
                    self.wfile.write(body[: len(body) // 2])
                elif behaviour == "stall":
                    self.wfile.write(body[:10])
                    self.wfile.flush()
                    server.release.wait(timeout=20)  # bounded: the fixture releases it at teardown
                elif behaviour == "drip":  # a byte at a time: every read is quick, the whole is not
                    for byte in body:
                        if server.release.wait(timeout=0.02):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                elif behaviour == "endless":  # no Content-Length, and no end
                    try:
                        while not server.release.is_set():
                            self.wfile.write(b"\0" * 65536)
                    except OSError:
                        return

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, path: str, body: bytes, behaviour: str = "ok") -> str:
        self.routes[path] = (behaviour, body)
        return self.url + path

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def served_entry(tiny, server, tmp_path, name="GOOD", behaviour="ok", sha=None) -> tuple[Weights, bytes]:
    path, real_sha = tiny.file(tmp_path / "src" / f"{name.lower()}.safetensors", tiny.state(seed=len(name)))
    body = path.read_bytes()
    url = server.serve(f"/w/tiny-{name.lower()}.safetensors", body, behaviour)
    return Weights(name, url, sha or real_sha, {}), body


# --------------------------------------------------------------------------- downloads


def test_download_is_verified_cached_and_not_repeated(zoo, tiny, server, tmp_path):
    entry, body = served_entry(tiny, server, tmp_path)
    tiny.publish([entry], default="GOOD")
    r = zoo("weights", "download", "tinyw")
    assert r.exit_code == 0, r
    path = Path(r.stdout.strip().rsplit(" ", 1)[1])
    assert path.parent == Path(os.environ["ZOO_HOME"]) / "weights" / "tinyw"
    assert path.read_bytes() == body and entry.sha256[:8] in path.name
    assert cache_files() == sorted([path.name, f".{path.name}.verified.json"])
    assert server.hits == {"/w/tiny-good.safetensors": 1}

    loaded = zweights.read(tiny.plugin, "GOOD")
    assert loaded.path == path and loaded.sha256 == entry.sha256
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in tiny.state(seed=4).items())
    assert zoo("weights", "download", "tinyw", "GOOD").exit_code == 0
    assert server.hits == {"/w/tiny-good.safetensors": 1}  # the cache answered

    rows = zoo("weights", "list", "tinyw", "--json").json()
    assert [(r["name"], r["default"], r["status"], r["sha256"]) for r in rows] == [("GOOD", True, "cached", entry.sha256)]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_a_progress_bar_shows_on_a_terminal_only(tiny, server, tmp_path):
    """`zoo weights download` in a real process whose stderr is a terminal (a pty) draws a
    bar; with stderr on a file it writes nothing there."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    entry, _ = served_entry(tiny, server, tmp_path)
    tiny.publish([entry])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tiny.site), *sys.path]))
    command = [sys.executable, "-m", "zoo.cli", "weights", "download", "tinyw", "GOOD"]
    controller, terminal = pty.openpty()
    # A fresh pty is 0 columns wide, where tqdm draws nothing; a terminal has a width.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    shown = b""
    while select.select([controller], [], [], 60)[0]:  # bounded: a hung child fails the test, not the run
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    text = shown.decode(errors="replace")
    assert zweights.cache_file_name(entry) in text and "B/s" in text, text
    assert Path(process.stdout.read().decode().strip().rsplit(" ", 1)[1]).is_file()
    process.stdout.close()

    env["ZOO_HOME"] = str(tmp_path / "other-home")
    quiet = subprocess.run(command, env=env, capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_wrong_hash_names_both_and_leaves_nothing(zoo, tiny, server, tmp_path):
    expected = "ab" * 32
    entry, body = served_entry(tiny, server, tmp_path, "BADHASH", sha=expected)
    tiny.publish([entry])
    one_line_error(zoo("weights", "download", "tinyw", "BADHASH"), 1, entry.source, expected, hashlib.sha256(body).hexdigest())
    assert cache_files() == []


def test_truncated_body_is_an_error_and_leaves_nothing(zoo, tiny, server, tmp_path):
    entry, body = served_entry(tiny, server, tmp_path, "TRUNCATED", behaviour="truncated")
    tiny.publish([entry])
    one_line_error(zoo("weights", "download", "tinyw", "TRUNCATED"), 1, entry.source, "cut short", str(len(body)))
    assert cache_files() == []


def test_http_404_is_one_line_with_the_url(zoo, tiny, server, tmp_path):
    entry = Weights("GONE", server.url + "/w/gone.safetensors", "cd" * 32, {})
    tiny.publish([entry])
    one_line_error(zoo("weights", "download", "tinyw", "GONE"), 1, entry.source, "HTTP 404")
    assert cache_files() == []


def test_a_stalling_server_times_out(zoo, tiny, server, tmp_path, monkeypatch):
    entry, _ = served_entry(tiny, server, tmp_path, "STALL", behaviour="stall")
    tiny.publish([entry])
    monkeypatch.setenv("ZOO_DOWNLOAD_TIMEOUT", "0.5")
    one_line_error(zoo("weights", "download", "tinyw", "STALL"), 1, entry.source, "timed out after 0.5 s", "ZOO_DOWNLOAD_TIMEOUT")
    assert cache_files() == []
    monkeypatch.setenv("ZOO_DOWNLOAD_TIMEOUT", "soon")
    one_line_error(zoo("weights", "download", "tinyw", "STALL"), 2, "ZOO_DOWNLOAD_TIMEOUT='soon'")


def test_unreachable_host_is_one_line(zoo, tiny, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = Weights("NOWHERE", f"http://127.0.0.1:{port}/w.safetensors", "ef" * 32, {})
    tiny.publish([entry])
    one_line_error(zoo("weights", "download", "tinyw", "NOWHERE"), 1, f"cannot download {entry.source}")
    assert cache_files() == []


def test_offline_mode_never_touches_the_network(zoo, tiny, server, tmp_path, monkeypatch):
    entry, _ = served_entry(tiny, server, tmp_path)
    tiny.publish([entry], default="GOOD")
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    cached = Path(os.environ["ZOO_HOME"]) / "weights" / "tinyw" / zweights.cache_file_name(entry)
    one_line_error(zoo("weights", "download", "tinyw"), 1, "ZOO_OFFLINE=1", str(cached), "zoo weights download tinyw GOOD")
    r = zoo("train", "tinyw", "--weights", "DEFAULT", "--max-steps", "1", "--progress", "none")
    one_line_error(r, 1, "ZOO_OFFLINE=1", str(cached))
    assert server.hits == {} and cache_files() == []

    monkeypatch.delenv("ZOO_OFFLINE")
    assert zoo("weights", "download", "tinyw").exit_code == 0
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert zweights.read(tiny.plugin, "DEFAULT").path == cached
    assert server.hits == {"/w/tiny-good.safetensors": 1}


def test_a_corrupt_cache_file_is_downloaded_again(zoo, tiny, server, tmp_path, monkeypatch):
    entry, body = served_entry(tiny, server, tmp_path)
    tiny.publish([entry])
    assert zoo("weights", "download", "tinyw", "GOOD").exit_code == 0
    cached = Path(os.environ["ZOO_HOME"]) / "weights" / "tinyw" / zweights.cache_file_name(entry)
    # Flip one byte in place and put the old mtime back: the sidecar must not be fooled.
    st = cached.stat()
    data = bytearray(body)
    data[-1] ^= 0xFF
    cached.write_bytes(bytes(data))
    os.utime(cached, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert zweights.status(tiny.plugin, entry) == "corrupt"

    monkeypatch.setenv("ZOO_OFFLINE", "1")
    one_line_error(zoo("weights", "download", "tinyw", "GOOD"), 1, "corrupt", "ZOO_OFFLINE=1")
    monkeypatch.delenv("ZOO_OFFLINE")
    r = zoo("weights", "download", "tinyw", "GOOD")
    assert r.exit_code == 0, r
    assert "is corrupt" in r.stderr and "downloading it again" in r.stderr
    assert cached.read_bytes() == body and server.hits == {"/w/tiny-good.safetensors": 2}
    assert not [f for f in cache_files() if f.endswith(".part")]


def test_file_urls_and_packaged_files(zoo, tiny, tmp_path, monkeypatch):
    local, sha = tiny.file(tmp_path / "elsewhere" / "tiny.safetensors", tiny.state(seed=3))
    packaged, packaged_sha = tiny.file(tiny.site / "weights" / "tinyw-pkg.safetensors", tiny.state(seed=5))
    tiny.publish(
        [
            Weights("LOCAL", local.as_uri(), sha, {}),
            Weights("PACKAGED", "package:tinyw-pkg.safetensors", packaged_sha, {}),
            Weights("LOST", "package:tinyw-lost.safetensors", "0" * 64, {}),
        ]
    )
    monkeypatch.setenv("ZOO_OFFLINE", "1")  # neither needs the network
    assert zweights.read(tiny.plugin, "LOCAL").path.parent == Path(os.environ["ZOO_HOME"]) / "weights" / "tinyw"
    assert zweights.read(tiny.plugin, "PACKAGED").path == packaged.resolve()
    assert [r["status"] for r in zoo("weights", "list", "tinyw", "--json").json()] == ["cached", "packaged", "missing"]
    one_line_error(zoo("weights", "download", "tinyw", "LOST"), 1, "tinyw-lost.safetensors is missing")
    packaged.write_bytes(packaged.read_bytes()[:-1] + b" ")
    one_line_error(zoo("weights", "download", "tinyw", "PACKAGED"), 1, packaged_sha, "reinstall")


def test_unknown_names_list_what_exists(zoo, tiny):
    one_line_error(zoo("weights", "download", "tinyw", "NOPE"), 2, "no weights 'NOPE'", "none are published")
    one_line_error(zoo("train", "vae", "--weights", "NOPE", "--max-steps", "1"), 2, "vae", "NOPE")
    one_line_error(zoo("train", "vae", "--weights", "missing/file.pt", "--max-steps", "1"), 2, "missing/file.pt: no such file")


# --------------------------------------------------------------------------- formats and safety


class CreatesFile:
    """Unpickling this calls open(path, 'w'): the file appearing means code ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_that_runs_code_is_refused(zoo, tmp_path):
    # The crafted files really run code when unpickled without weights_only.
    proof = tmp_path / "proof"
    torch.save({"plugin": "vae", "model": CreatesFile(proof)}, tmp_path / "proof.pt")
    torch.load(tmp_path / "proof.pt", weights_only=False)
    assert proof.exists()

    marker = tmp_path / "pwned"
    torch.save({"plugin": "vae", "model": CreatesFile(marker)}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as fh:
        pickle.dump(CreatesFile(marker), fh, protocol=2)
    for evil in ("evil.pt", "evil.pkl"):
        one_line_error(zoo("weights", "import", "vae", tmp_path / evil), 1, "refused")
        one_line_error(zoo("train", "vae", "--weights", tmp_path / evil, "--max-steps", "1"), 1, "refused")
        with pytest.raises(checkpoint.CheckpointError, match="refused"):
            zweights.read(get_plugin("vae"), str(tmp_path / evil))
    assert not marker.exists()
    assert cache_files("vae") == []


def test_strict_loading_lists_every_problem_on_one_line(zoo, tmp_path):
    torch.manual_seed(0)
    plugin = get_plugin("vae")
    state = plugin.instantiate(plugin.config()).state_dict()
    state["fc1.weight"] = torch.zeros(400, 10)
    del state["fc4.bias"]
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "other.pth")
    one_line_error(
        zoo("weights", "import", "vae", tmp_path / "other.pth"),
        1,
        "missing: fc4.bias",
        "unexpected: extra.weight",
        "mismatched: fc1.weight (400, 10) != (400, 784)",
    )
    assert cache_files("vae") == []
    torch.save({"step": 3, "optimizer": {}}, tmp_path / "odd.pt")
    one_line_error(zoo("weights", "import", "vae", tmp_path / "odd.pt"), 1, "neither a zoo checkpoint nor a state dict", "'step'")
    (tmp_path / "cut.safetensors").write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":')
    one_line_error(zoo("weights", "import", "vae", tmp_path / "cut.safetensors"), 1, "truncated or corrupt")


def test_weights_of_another_plugin_are_refused(zoo, tmp_path):
    assert zoo("train", "convnet", "--max-steps", "1", "--out", tmp_path / "c", "--progress", "none").exit_code == 0
    one_line_error(zoo("train", "vae", "--weights", tmp_path / "c" / "last.pt", "--max-steps", "1"), 1, "'convnet', not 'vae'")


def test_a_checkpoint_used_as_weights_keeps_what_the_data_knew(zoo, tmp_path):
    """A last.pt given to --weights, or imported, brings its data_info (the class names)
    as --checkpoint does, so a model whose shape follows the data is rebuilt the same."""
    assert zoo("train", "convnet", "--max-steps", "1", "--out", tmp_path / "c", "--progress", "none").exit_code == 0
    ckpt = tmp_path / "c" / "last.pt"
    recorded = torch.load(ckpt, weights_only=True)["data_info"]
    assert recorded["class_names"] == [str(i) for i in range(10)]
    plugin = get_plugin("convnet")
    assert models.build_model(plugin, weights=str(ckpt)).data_info.to_json() == recorded
    assert models.build_model(plugin, checkpoint=str(ckpt)).data_info.to_json() == recorded
    assert zoo("weights", "import", "convnet", ckpt, "--name", "RUN").exit_code == 0
    assert zweights.read(plugin, "RUN").meta["data_info"] == recorded


# --------------------------------------------------------------------------- foreign checkpoints and import


class ExamplesVAE(nn.Module):
    """The layer layout pytorch/examples vae/main.py saves: fc1 784->400, fc21 and fc22
    400->20, fc3 20->400, fc4 400->784 (its model is trained, then state_dict() saved)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)


def test_vae_imports_a_pytorch_examples_state_dict(zoo, tmp_path):
    torch.manual_seed(7)
    foreign = ExamplesVAE()
    state = foreign.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "fc1.weight": (400, 784),
        "fc1.bias": (400,),
        "fc21.weight": (20, 400),
        "fc21.bias": (20,),
        "fc22.weight": (20, 400),
        "fc22.bias": (20,),
        "fc3.weight": (400, 20),
        "fc3.bias": (400,),
        "fc4.weight": (784, 400),
        "fc4.bias": (784,),
    }
    torch.save(state, tmp_path / "vae_examples.pth")
    r = zoo("weights", "import", "vae", tmp_path / "vae_examples.pth", "--name", "EXAMPLES")
    assert r.exit_code == 0, r
    dest = Path(r.stdout.split(" -> ")[1].split()[0])
    assert dest.parent == Path(os.environ["ZOO_HOME"]) / "weights" / "vae" and dest.suffix == ".safetensors"
    assert "--weights EXAMPLES" in r.stdout

    plugin = get_plugin("vae")
    built = models.build_model(plugin, weights="EXAMPLES")
    model, loaded = built.model, built.loaded
    assert loaded.meta["imported_kind"] == "foreign" and loaded.meta["imported_from"] == str((tmp_path / "vae_examples.pth").resolve())
    z = torch.randn(3, 20)
    with torch.no_grad():
        expected = torch.sigmoid(foreign.fc4(torch.relu(foreign.fc3(z)))).reshape(3, 1, 28, 28)
        assert torch.allclose(model.decode(z), expected)
    rows = zoo("weights", "list", "vae", "--json").json()
    assert any(r["name"] == "EXAMPLES" and r["origin"] == "imported" and r["status"] == "imported" for r in rows)
    assert "EXAMPLES" in zoo("weights", "list").stdout

    # Importing again under the same name needs --force; a table name is refused.
    one_line_error(zoo("weights", "import", "vae", tmp_path / "vae_examples.pth", "--name", "EXAMPLES"), 2, "--force")
    assert zoo("weights", "import", "vae", tmp_path / "vae_examples.pth", "--name", "EXAMPLES", "--force").exit_code == 0

    # Fine-tuning starts from them: with a vanishing learning rate one step leaves them as they were.
    r = zoo("train", "vae", "--weights", "EXAMPLES", "--max-steps", "1", "--lr", "1e-12", "--out", tmp_path / "ft", "--progress", "none")
    assert r.exit_code == 0, r
    tuned = torch.load(tmp_path / "ft" / "last.pt", weights_only=True)["model"]
    assert all(torch.allclose(tuned[k], v, atol=1e-6) for k, v in state.items())

    # A corrupt imported file is caught before use.
    dest.write_bytes(dest.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    one_line_error(zoo("train", "vae", "--weights", "EXAMPLES", "--max-steps", "1"), 1, "corrupt", "import it again")


def test_foreign_import_takes_hyperparameters_and_names_wrong_ones(zoo, tmp_path):
    plugin = get_plugin("vae")
    torch.manual_seed(0)
    torch.save(plugin.instantiate(plugin.config(latent_dim=8)).state_dict(), tmp_path / "small.pth")
    one_line_error(zoo("weights", "import", "vae", tmp_path / "small.pth"), 1, "mismatched: fc21.weight (8, 400) != (20, 400)")
    r = zoo("weights", "import", "vae", tmp_path / "small.pth", "--config", "latent_dim=8")
    assert r.exit_code == 0, r
    assert zweights.read(plugin, "SMALL").config["latent_dim"] == 8
    one_line_error(zoo("weights", "import", "vae", tmp_path / "small.pth", "--config", "latent=8"), 2, "no hyperparameter 'latent'")
    one_line_error(zoo("weights", "import", "vae", tmp_path / "small.pth", "--config", "latent_dim=big"), 2, "latent_dim takes a int")


def test_training_refuses_weights_of_another_architecture_by_name(zoo, tmp_path):
    r = zoo("train", "vae", "--latent-dim", "8", "--max-steps", "1", "--out", tmp_path / "small", "--progress", "none")
    assert r.exit_code == 0, r
    weights = tmp_path / "small" / "last.pt"
    one_line_error(
        zoo("train", "vae", "--weights", weights, "--max-steps", "1"),
        2,
        "trained with --latent-dim 8, but this model has --latent-dim 20",
        "pass --latent-dim 8",
    )
    # Training hyperparameters may differ: lr and epochs do not change a tensor.
    r = zoo(
        "train",
        "vae",
        "--weights",
        weights,
        "--latent-dim",
        "8",
        "--lr",
        "1e-12",
        "--epochs",
        "3",
        "--max-steps",
        "1",
        "--out",
        tmp_path / "ft",
        "--progress",
        "none",
    )
    assert r.exit_code == 0, r
    before = torch.load(weights, weights_only=True)["model"]
    after = torch.load(tmp_path / "ft" / "last.pt", weights_only=True)["model"]
    assert all(torch.allclose(after[k], v, atol=1e-6) for k, v in before.items())


# --------------------------------------------------------------------------- partial weights


def test_generator_only_weights_load_per_component(tiny, tmp_path, capsys):
    plugin = tiny.plugin
    trained = tiny.state(seed=1)
    generator = {k: v for k, v in trained.items() if k.startswith("generator.")}
    generator_file, _ = tiny.file(tmp_path / "g.safetensors", generator, components=["generator"])
    torch.manual_seed(2)
    model = plugin.instantiate(plugin.config())
    before = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    loaded = zweights.load_into(plugin, model, str(generator_file), config=plugin.config())
    assert loaded.components == ["generator"] and loaded.left_as_built == ["discriminator"]
    assert "hold generator only; discriminator keeps its initialisation" in capsys.readouterr().err
    assert all(torch.equal(model.state_dict()[k], v) for k, v in generator.items())
    assert all(torch.equal(model.discriminator.state_dict()[k], v) for k, v in before.items())

    # Commands say so when what they run is one of the components left as built.
    from zoo.commands.runner import open_runner

    discriminator = {k: v for k, v in trained.items() if k.startswith("discriminator.")}
    only_d, _ = tiny.file(tmp_path / "d.safetensors", discriminator, components=["discriminator"])
    capsys.readouterr()
    open_runner(plugin, "generator", checkpoint=None, weights=str(generator_file), artifact=None, device="cpu")
    assert capsys.readouterr().err == ""  # the generator is what the file holds
    open_runner(plugin, "generator", checkpoint=None, weights=str(only_d), artifact=None, device="cpu")
    assert "hold no generator; tinyw:generator runs it as initialised" in capsys.readouterr().err

    broken = dict(generator)
    del broken["generator.2.bias"]
    path, _ = tiny.file(tmp_path / "broken.safetensors", broken, components=["generator"])
    with pytest.raises(checkpoint.CheckpointError, match=r"\(generator\) does not fit this model: missing: generator.2.bias"):
        zweights.load_into(plugin, plugin.instantiate(plugin.config()), str(path))
    path, _ = tiny.file(tmp_path / "liar.safetensors", trained, components=["generator"])
    with pytest.raises(checkpoint.CheckpointError, match="also hold keys of discriminator"):
        zweights.load_into(plugin, plugin.instantiate(plugin.config()), str(path))
    path, _ = tiny.file(tmp_path / "ghost.safetensors", generator, components=["generator", "critic"])
    with pytest.raises(checkpoint.CheckpointError, match="critic that this model does not have"):
        zweights.load_into(plugin, plugin.instantiate(plugin.config()), str(path))
    # Without a components declaration the whole model is expected.
    path, _ = tiny.file(tmp_path / "undeclared.safetensors", generator)
    with pytest.raises(checkpoint.CheckpointError, match="missing: discriminator.0.weight"):
        zweights.load_into(plugin, plugin.instantiate(plugin.config()), str(path))


def test_a_foreign_generator_goes_through_the_filter(zoo, tiny, tmp_path):
    trained = tiny.state(seed=1)
    foreign = {"netG." + k[len("generator.") :]: v for k, v in trained.items() if k.startswith("generator.")}
    torch.save(foreign, tmp_path / "netG_epoch_24.pth")
    r = zoo("weights", "import", "tinyw", tmp_path / "netG_epoch_24.pth")
    assert r.exit_code == 0, r
    assert "imported tinyw:NETG_EPOCH_24 (generator only)" in r.stdout and r.stderr == ""  # the summary says what it holds
    one_line_error(
        zoo("weights", "import", "tinyw", tmp_path / "netG_epoch_24.pth", "--name", "D", "--components", "discriminator"),
        2,
        "holds only generator",
    )
    built = models.build_model(tiny.plugin, weights="NETG_EPOCH_24")
    model, _, loaded = built.model, built.config, built.loaded
    assert loaded.components == ["generator"] and loaded.meta["components"] == ["generator"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items() if k.startswith("generator."))
    foreign.pop("netG.0.weight")
    torch.save(foreign, tmp_path / "cut.pth")
    one_line_error(zoo("weights", "import", "tinyw", tmp_path / "cut.pth"), 1, "(generator)", "missing: generator.0.weight")


# --------------------------------------------------------------------------- stored dtype: half-precision files


def test_stored_at_rounds_floating_tensors_and_keeps_integer_buffers():
    state = {"w": torch.tensor([1.0, 1 / 3]), "steps": torch.tensor(7), "flags": torch.tensor([True])}
    half = zweights.stored_at(state, "float16")
    assert [v.dtype for v in half.values()] == [torch.float16, torch.int64, torch.bool]
    assert torch.equal(half["steps"], state["steps"]) and half["w"][1] == torch.tensor(1 / 3).half()
    assert zweights.stored_dtype(half) == "float16" and zweights.stored_dtype(state) == "float32"
    assert zweights.stored_dtype({"a": torch.zeros(1), "b": torch.zeros(1).half()}) == "float32"  # mixed: not one dtype
    assert zweights.stored_at(state, "float32")["w"] is state["w"]
    # float16 ends at 65504: a weight beyond it is refused, not stored as inf; bfloat16 reaches it.
    with pytest.raises(UsageError, match=r"big holds 70000, beyond what float16 can store; store these weights as bfloat16"):
        zweights.stored_at({"big": torch.tensor([70000.0])}, "float16")
    assert zweights.stored_at({"big": torch.tensor([70000.0])}, "bfloat16")["big"].isfinite().all()
    with pytest.raises(UsageError, match="float32, float16, bfloat16"):
        zweights.stored_at(state, "float8")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_files_load_cast_to_the_models_dtype(tiny, tmp_path, dtype):
    """Each tensor is cast to the dtype of the model's tensor it loads into (not left to
    `load_state_dict`'s silent copy), whole or per component, and strictness is unchanged."""
    plugin = tiny.plugin
    trained = tiny.state(seed=1)
    stored = zweights.stored_at(trained, dtype)
    rounded = {k: v.to(trained[k].dtype) for k, v in stored.items()}
    assert any(not torch.equal(rounded[k], trained[k]) for k in trained)  # the file really is rounded

    path, _ = tiny.file(tmp_path / "whole.safetensors", stored, stored_dtype=dtype)
    model = plugin.instantiate(plugin.config())
    zweights.load_into(plugin, model, str(path), config=plugin.config())
    for key, value in model.state_dict().items():
        assert value.dtype == trained[key].dtype and torch.equal(value, rounded[key]), key
    assert model.discriminator[1].num_batches_tracked.dtype == torch.int64
    wide = plugin.instantiate(plugin.config()).double()  # a model in another dtype keeps it
    zweights.load_into(plugin, wide, str(path))
    assert wide.generator[0].weight.dtype == torch.float64
    assert torch.equal(wide.generator[0].weight, rounded["generator.0.weight"].double())

    generator = {k: v for k, v in stored.items() if k.startswith("generator.")}
    path, _ = tiny.file(tmp_path / "g.safetensors", generator, components=["generator"], stored_dtype=dtype)
    model = plugin.instantiate(plugin.config())
    before = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    loaded = zweights.load_into(plugin, model, str(path), config=plugin.config(), quiet=True)
    assert loaded.components == ["generator"] and loaded.left_as_built == ["discriminator"]
    assert all(model.state_dict()[k].dtype == torch.float32 and torch.equal(model.state_dict()[k], rounded[k]) for k in generator)
    assert all(torch.equal(model.discriminator.state_dict()[k], v) for k, v in before.items())

    broken = {k: v for k, v in generator.items() if k != "generator.2.bias"}
    path, _ = tiny.file(tmp_path / "broken.safetensors", broken, components=["generator"])
    with pytest.raises(checkpoint.CheckpointError, match=r"\(generator\) does not fit this model: missing: generator.2.bias"):
        zweights.load_into(plugin, plugin.instantiate(plugin.config()), str(path))
    wrong = dict(generator, **{"generator.0.weight": generator["generator.0.weight"][:4]})
    path, _ = tiny.file(tmp_path / "wrong.safetensors", wrong, components=["generator"])
    with pytest.raises(checkpoint.CheckpointError, match=r"mismatched: generator.0.weight \(4, 4\) != \(8, 4\)"):
        zweights.load_into(plugin, plugin.instantiate(plugin.config()), str(path))
    # A float where the model counts in integers is refused by name, not truncated silently.
    odd = dict(stored, **{"discriminator.1.num_batches_tracked": torch.tensor(3.5, dtype=getattr(torch, dtype))})
    path, _ = tiny.file(tmp_path / "odd.safetensors", odd)
    with pytest.raises(checkpoint.CheckpointError, match=f"discriminator.1.num_batches_tracked is {dtype}, the model's is int64"):
        zweights.load_into(plugin, plugin.instantiate(plugin.config()), str(path))


def _file_dtypes(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_slice(k).get_dtype() for k in fh.keys()}


def test_export_and_import_store_half_precision(zoo, tiny, tmp_path):
    r = zoo("train", "tinyw", "--max-steps", "3", "--out", tmp_path / "run", "--progress", "none", "--device", "cpu")
    assert r.exit_code == 0, r
    trained = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    export = ["weights", "export", "tinyw", "--checkpoint", tmp_path / "run", "--license", "CC0-1.0", "--json"]

    full = zoo(*export, "-o", tmp_path / "fp32").json()
    assert "stored_dtype" not in full["entry"]["meta"] and set(_file_dtypes(Path(full["path"])).values()) == {"F32", "I64"}
    half = zoo(*export, "-o", tmp_path / "fp16", "--dtype", "float16").json()
    path = Path(half["path"])
    assert path.name == f"tinyw-digits_v1-{half['sha256'][:8]}.safetensors" and half["sha256"] != full["sha256"]
    assert half["entry"]["meta"]["stored_dtype"] == "float16" and half["entry"]["meta"]["metrics"] == full["entry"]["meta"]["metrics"]
    assert zweights.validate_entry(tiny.plugin, Weights(**half["entry"])) == []
    dtypes = _file_dtypes(path)
    assert dtypes["discriminator.1.num_batches_tracked"] == "I64"  # integer buffers stay as they are
    assert {v for k, v in dtypes.items() if not k.endswith("num_batches_tracked")} == {"F16"}
    assert zweights.read(tiny.plugin, str(path)).meta["stored_dtype"] == "float16"
    assert zoo(*export, "-o", tmp_path / "again", "--dtype", "float16").json()["sha256"] == half["sha256"]  # deterministic
    bf16 = zoo(*export, "-o", tmp_path / "bf16", "--dtype", "bfloat16", "--components", "generator").json()
    assert bf16["entry"]["meta"]["stored_dtype"] == "bfloat16" and set(_file_dtypes(Path(bf16["path"])).values()) == {"BF16"}
    one_line_error(zoo(*export, "-o", tmp_path / "no", "--dtype", "float8"), 2, "float32", "float16", "bfloat16")

    built = models.build_model(tiny.plugin, weights=str(path))
    for key, value in built.model.state_dict().items():
        assert value.dtype == trained[key].dtype and torch.equal(value, zweights.stored_at(trained, "float16")[key].to(value.dtype)), key

    # Imported, a float16 file stays float16 (the values are the same either way) unless --dtype says otherwise.
    assert zoo("weights", "import", "tinyw", path, "--name", "HALF").exit_code == 0
    assert zoo("weights", "import", "tinyw", path, "--name", "WIDE", "--dtype", "float32").exit_code == 0
    half_import, wide_import = zweights.read(tiny.plugin, "HALF"), zweights.read(tiny.plugin, "WIDE")
    assert half_import.meta["stored_dtype"] == "float16" and "stored_dtype" not in wide_import.meta
    assert zweights.stored_dtype(half_import.state_dict) == "float16" and zweights.stored_dtype(wide_import.state_dict) == "float32"
    assert half_import.path.stat().st_size < wide_import.path.stat().st_size
    for name in ("HALF", "WIDE"):
        again = models.build_model(tiny.plugin, weights=name).model.state_dict()
        assert all(torch.equal(again[k], v) for k, v in built.model.state_dict().items()), name
    # Partial (generator-only) half-precision weights import as such.
    r = zoo("weights", "import", "tinyw", bf16["path"], "--name", "GEN")
    assert r.exit_code == 0 and "(generator only)" in r.stdout, r
    assert zweights.read(tiny.plugin, "GEN").meta["stored_dtype"] == "bfloat16"


# --------------------------------------------------------------------------- export: publish a run


def test_export_writes_an_entry_that_pastes_into_a_plugin(zoo, tiny, tmp_path, monkeypatch):
    r = zoo("train", "tinyw", "--max-steps", "3", "--out", tmp_path / "run", "--progress", "none", "--device", "cpu")
    assert r.exit_code == 0, r
    r = zoo(
        "weights",
        "export",
        "tinyw",
        "--checkpoint",
        tmp_path / "run",
        "-o",
        tmp_path / "pub",
        "--components",
        "generator",
        "--license",
        "CC0-1.0",
    )
    assert r.exit_code == 0, r
    (path,) = (tmp_path / "pub").iterdir()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.name == f"tinyw-digits_v1-{sha[:8]}.safetensors"
    assert f"sha256='{sha}'" in r.stdout and "source='package:" in r.stdout
    again = zoo(
        "weights",
        "export",
        "tinyw",
        "--checkpoint",
        tmp_path / "run" / "last.pt",
        "-o",
        tmp_path / "pub2",
        "--components",
        "generator",
        "--license",
        "CC0-1.0",
        "--json",
    ).json()
    assert again["sha256"] == sha  # the same run gives the same file
    meta = again["entry"]["meta"]
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert meta["components"] == ["generator"] and meta["dataset"] == "digits" and meta["license"] == "CC0-1.0"
    assert meta["metrics"] == {"val_loss": state["metrics"]["val_loss"]}
    assert meta["config"] == state["config"]
    # The run stopped after 3 steps of its epoch: the command says so.
    assert meta["command"].startswith("zoo train tinyw --data digits --seed 0 --device cpu --max-steps 3 ")
    assert zweights.parse_train_command(tiny.plugin, meta["command"])["config"] == state["config"]

    # The author pastes the printed entry and ships the file beside the module.
    (tiny.site / "weights").mkdir()
    path.rename(tiny.site / "weights" / path.name)
    pasted = "\n".join(line for line in r.stdout.splitlines() if not line.startswith("#"))
    tiny.publish(pasted, default="DIGITS_V1")
    plugin = tiny.plugin
    assert zweights.validate_entry(plugin, plugin.get_weights("DIGITS_V1")) == []
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    rows = zoo("weights", "list", "tinyw", "--json").json()
    assert [(r["name"], r["default"], r["status"], r["num_params"]) for r in rows] == [("DIGITS_V1", True, "packaged", meta["num_params"])]
    text = zoo("weights", "list", "tinyw").stdout
    assert "DIGITS_V1 (DEFAULT)" in text and "(generator)" in text
    built = models.build_model(plugin, weights="DEFAULT")
    model, _, loaded = built.model, built.config, built.loaded
    assert loaded.left_as_built == ["discriminator"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state["model"].items() if k.startswith("generator."))
    r = zoo("train", "tinyw", "--weights", "DEFAULT", "--max-steps", "1", "--out", tmp_path / "ft", "--progress", "none")
    assert r.exit_code == 0, r
    assert "discriminator keeps its initialisation" in r.stderr


def test_export_refuses_what_it_cannot_describe(zoo, tiny, tmp_path):
    assert zoo("train", "tinyw", "--max-steps", "1", "--out", tmp_path / "run", "--progress", "none").exit_code == 0
    one_line_error(
        zoo("weights", "export", "tinyw", "--checkpoint", tmp_path / "run", "-o", tmp_path / "o", "--components", "critic"),
        2,
        "generator, discriminator",
    )
    one_line_error(zoo("weights", "export", "tinyw", "--checkpoint", tmp_path / "run", "-o", tmp_path / "o"), 2, "--license")
    one_line_error(zoo("weights", "export", "tinyw", "-o", tmp_path / "o"), 2, "--checkpoint")
    one_line_error(zoo("weights", "export", "vae", "--checkpoint", tmp_path / "run", "-o", tmp_path / "o"), 1, "'tinyw', not 'vae'")
    assert not (tmp_path / "o").exists()


def test_exported_vae_entry_is_valid_and_reproducible(zoo, tmp_path):
    r = zoo("train", "vae", "--max-steps", "2", "--out", tmp_path / "run", "--progress", "none", "--device", "cpu")
    assert r.exit_code == 0, r
    info = zoo("weights", "export", "vae", "--checkpoint", tmp_path / "run", "-o", tmp_path / "pub", "--json").json()
    plugin = get_plugin("vae")
    entry = Weights(**info["entry"])
    assert zweights.validate_entry(plugin, entry) == []
    assert entry.meta["num_params"] == sum(p.numel() for p in plugin.instantiate(plugin.config()).parameters())
    # Running the recorded command again gives the very same file.
    command = entry.meta["command"].split()[2:] + ["--out", str(tmp_path / "again"), "--progress", "none"]
    assert zoo("train", *command).exit_code == 0
    again = zoo("weights", "export", "vae", "--checkpoint", tmp_path / "again", "-o", tmp_path / "pub2", "--json").json()
    assert again["sha256"] == entry.sha256


# --------------------------------------------------------------------------- the CLI surface


def test_weights_cli_does_not_import_torch_at_startup():
    code = "import sys, zoo.commands.weights, zoo.weights; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_list_shows_every_table_entry_and_says_when_there_is_none(zoo):
    rows = zoo("weights", "list", "--json").json()
    tables = [(name, w.name, w.name == get_plugin(name).default_weights) for name in registry_plugins() for w in get_plugin(name).weights]
    assert [(r["plugin"], r["name"], r["default"]) for r in rows] == tables  # nothing imported in this ZOO_HOME
    assert all(r["origin"] == "table" and r["status"] == ("packaged" if r["source"].startswith("package:") else "not cached") for r in rows)
    bare = [name for name in registry_plugins() if not get_plugin(name).weights]
    if bare:
        r = zoo("weights", "list", bare[0])
        assert r.exit_code == 0 and r.stdout.startswith(f"no weights for plugin {bare[0]}"), r
    one_line_error(zoo("weights", "list", "nosuch"), 2, "unknown plugin 'nosuch'")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_weights_load_into_a_model_on_cuda(tiny, tmp_path):
    path, _ = tiny.file(tmp_path / "w.safetensors", tiny.state(seed=1))
    plugin = tiny.plugin
    model = plugin.instantiate(plugin.config()).to("cuda")
    zweights.load_into(plugin, model, str(path), config=plugin.config())
    assert all(torch.equal(model.state_dict()[k].cpu(), v) for k, v in tiny.state(seed=1).items())


def test_a_dripping_download_meets_its_deadline(zoo, tiny, server, tmp_path, monkeypatch):
    entry, _ = served_entry(tiny, server, tmp_path, behaviour="drip")
    tiny.publish([entry], default="GOOD")
    monkeypatch.setenv("ZOO_DOWNLOAD_DEADLINE", "0.5")
    one_line_error(zoo("weights", "download", "tinyw"), 1, "took longer than 0.5 s in all", "ZOO_DOWNLOAD_DEADLINE")
    assert cache_files() == []


def test_an_endless_download_stops_at_the_size_its_entry_records(zoo, tiny, server, tmp_path):
    entry, body = served_entry(tiny, server, tmp_path, behaviour="endless")
    sized = Weights(entry.name, entry.source, entry.sha256, {"bytes": len(body)})
    tiny.publish([sized], default="GOOD")
    one_line_error(zoo("weights", "download", "tinyw"), 1, f"sent more than the {len(body)} bytes its weights entry records")
    assert cache_files() == []


def test_a_download_larger_than_its_entry_is_refused_before_it_starts(zoo, tiny, server, tmp_path):
    entry, body = served_entry(tiny, server, tmp_path)
    tiny.publish([Weights(entry.name, entry.source, entry.sha256, {"bytes": 100})], default="GOOD")
    one_line_error(zoo("weights", "download", "tinyw"), 1, f"announces {len(body)} bytes but its weights entry records 100")
    assert cache_files() == []
