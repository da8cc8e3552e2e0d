"""Export targets as a third party declares them: a recurrent target that picks its ONNX
exporter and opts out of `.pt2`, with parity at every size of its sequence axis (in
Python, zoo-run and Node); the one-line error that names the real cause when torch.export
pins that axis; integer inputs refused outside their declared range; and targets whose
declaration contradicts what they compute, refused in one line by `zoo export` and
`zoo info`. Every plugin here is installed as its own distribution (`install_dist`).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import one_line_error

from zoo.errors import ZooError
from zoo.export import artifacts

VOCAB = 11
SEQ_SIZES = (8, 1, 5)

LSTM_MODULE = f'''
"""A character-level LSTM in miniature: token ids (batch x seq) in, next-token logits out."""
from dataclasses import dataclass

import torch
from torch import nn

from zoo.plugin import DataRequest, ExportTarget, Plugin, TensorSpec, Trainer, TrainConfig

VOCAB = {VOCAB}


@dataclass
class TinyLSTMConfig(TrainConfig):
    pass


class TinyLSTM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        self.lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True)
        self.head = nn.Linear(16, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(self.embed(tokens))  # (batch, seq, 16)
        return self.head(hidden)  # (batch, seq, VOCAB)


def _tokens(config, batch, gen, sizes):
    return (torch.randint(0, VOCAB, (batch, sizes["seq"]), generator=gen),)


def _target(name, sizes={SEQ_SIZES!r}, **choices):
    return ExportTarget(
        name=name,
        module=lambda model: model,
        inputs=(TensorSpec("tokens", dtype="int64", range="token ids", value_range=(0, VOCAB - 1)),),
        outputs=(TensorSpec("logits", range="next-token scores at every position"),),
        example_inputs=_tokens,
        dynamic_dims={{"tokens": {{1: "seq"}}, "logits": {{1: "seq"}}}},
        axis_sizes={{"seq": sizes}},
        **choices,
    )


plugin = Plugin(
    name="tinylstm",
    summary="an LSTM language model in miniature",
    config_class=TinyLSTMConfig,
    build=TinyLSTM,
    trainer_class=Trainer,
    data_request=lambda config: DataRequest(size=2),
    default_dataset="digits",
    datasets=("digits",),
    export_targets=(
        _target("logits", exporters={{"onnx": "torchscript"}}, skip_formats={{"pt2": "torch.export unrolls the LSTM over time"}}),
        _target("unrolled"),  # the default exporters: torch.export pins seq
        _target("short", sizes=(1, 5)),  # captured at seq 1: pinned there, and 1 is special to torch.export
        _target("typo", exporters={{"onnx": "torchscrpit"}}),
    ),
)
'''


@pytest.fixture
def lstm(install_dist):
    install_dist("zoo-tinylstm", "1.0", {"zoo_tinylstm": LSTM_MODULE}, {"tinylstm": "zoo_tinylstm:plugin"})


@pytest.fixture
def lstm_export(zoo, lstm, tmp_path):
    """`zoo export tinylstm --target logits --all-formats` (table output), and its manifest."""
    out = tmp_path / "lstm"
    r = zoo("export", "tinylstm", "--random-init", "--target", "logits", "--all-formats", "--device", "cpu", "--no-latency", "--out", out)
    assert r.exit_code == 0, r
    return out, r, json.loads((out / "export.json").read_text())


def eager_lstm(tokens: np.ndarray) -> np.ndarray:
    from zoo import get_plugin

    plugin = get_plugin("tinylstm")
    torch.manual_seed(0)  # --random-init --seed 0
    model = plugin.build(plugin.config()).eval()
    with torch.no_grad():
        return model(torch.from_numpy(tokens)).numpy()


def test_recurrent_target_exports_with_its_exporter_and_parity_at_every_seq_size(lstm_export):
    out, r, manifest = lstm_export
    assert manifest["passed"] is True
    assert {a["format"]: a["exported_with"] for a in manifest["artifacts"]} == {"torchscript": "script", "onnx": "torchscript"}
    assert not list(out.glob("*.pt2"))
    for fmt in ("torchscript", "onnx"):
        checked = [row for row in manifest["parity"] if row["format"] == fmt]
        assert {(row["batch"], row["axes"]["seq"]) for row in checked} == {(1, 8), (2, 8), (5, 8), (1, 1), (1, 5)}
        assert all(row["status"] == "passed" for row in checked), checked
        meta = artifacts.read_metadata(out / f"logits.{fmt}")
        assert meta["inputs"][0]["shape"] == ["batch", "seq"] and meta["inputs"][0]["value_range"] == [0, VOCAB - 1]
        assert meta["outputs"][0]["shape"] == ["batch", "seq", VOCAB]
    assert artifacts.read_metadata(out / "logits.onnx")["exported_with"] == "torchscript"
    # A size parity never ran at still follows the input: the graph kept seq dynamic.
    tokens = np.random.default_rng(0).integers(0, VOCAB, (3, 13))
    for fmt in ("torchscript", "onnx"):
        (logits,) = artifacts.load(out / f"logits.{fmt}")(tokens)
        assert logits.shape == (3, 13, VOCAB)
        np.testing.assert_allclose(logits, eager_lstm(tokens), rtol=1e-4, atol=1e-5)


def test_a_skipped_format_is_listed_as_skipped_with_the_reason_never_passed(zoo, lstm_export):
    out, r, manifest = lstm_export
    assert manifest["skipped_formats"] == [
        {"target": "logits", "format": "pt2", "reason": "torch.export unrolls the LSTM over time", "rtol": 1e-4, "atol": 1e-5}
    ]
    pt2 = [row for row in manifest["parity"] if row["format"] == "pt2"]
    assert pt2 and all(row["status"] == "skipped" and row["passed"] is None for row in pt2)
    assert all(row["reason"] == "target opts out: torch.export unrolls the LSTM over time" for row in pt2)
    assert "skipped: target opts out: torch.export unrolls the LSTM over time" in r.stdout
    assert "AXES" in r.stdout.splitlines()[0] and "seq=5" in r.stdout
    assert "logits pt2 rows skipped" in r.stdout
    # zoo verify reports the skip again, and passes on the formats that exist.
    r = zoo("verify", out, "--device", "cpu", "--no-latency", "--json")
    assert r.exit_code == 0, r
    assert [row["status"] for row in r.json()["parity"] if row["format"] == "pt2"] == ["skipped"]
    # Asking for the skipped format alone exports nothing and says why.
    r = zoo("export", "tinylstm", "--random-init", "--target", "logits", "--pt2", "--device", "cpu", "--out", out.parent / "only")
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    (line,) = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert "no parity check ran" in line and "torch.export unrolls the LSTM" in line


def test_zoo_info_shows_the_exporter_choice_the_skip_and_the_axis_sizes(zoo, lstm):
    r = zoo("info", "tinylstm")
    assert r.exit_code == 0, r
    assert "onnx via torchscript" in r.stdout
    assert "no pt2: torch.export unrolls the LSTM over time" in r.stdout
    assert "parity at seq [8, 1, 5]" in r.stdout


def test_pinned_axis_names_the_axis_and_the_lstm(zoo, lstm, tmp_path):
    out = tmp_path / "unrolled"
    r = zoo("export", "tinylstm", "--random-init", "--target", "unrolled", "--onnx", "--device", "cpu", "--out", out)
    line = one_line_error(r, 1, "axis 'seq' of input 'tokens'", "fixed the axis at 8", "nn.LSTM (lstm)", "unrolls over time")
    assert "exporters={'onnx': 'torchscript'}" in line and "skip_formats" in line
    assert "size of 1" not in line  # the old, wrong explanation
    assert not (out / "unrolled.onnx").exists()
    # Captured at seq 1, the size-1 rule is part of the cause, and said so.
    r = zoo("export", "tinylstm", "--random-init", "--target", "short", "--onnx", "--device", "cpu", "--out", tmp_path / "short")
    one_line_error(r, 1, "axis 'seq' of input 'tokens'", "fixed the axis at 1", "nn.LSTM (lstm)", "size of 1")


def test_an_exporter_the_format_does_not_offer_is_refused(zoo, lstm, tmp_path):
    r = zoo("export", "tinylstm", "--random-init", "--target", "typo", "--device", "cpu", "--out", tmp_path / "typo")
    one_line_error(r, 1, "target 'typo' asks for exporter 'torchscrpit' for onnx, which offers dynamo, torchscript")


@pytest.mark.slow
def test_recurrent_target_in_zoo_run_and_node(zoo, lstm_export, build_cache, monkeypatch):
    """The same artifacts in libtorch C++ and onnxruntime-node, at every seq size; the
    skipped .pt2 shows as skipped in zoo-run, which would have run it."""
    monkeypatch.setenv("ZOO_BUILD_CACHE", str(build_cache))
    out, _, _ = lstm_export
    r = zoo("verify", out, "--runtime", "all", "--device", "cpu", "--no-latency", "--json")
    assert r.exit_code == 0, r
    parity = r.json()["parity"]
    for runtime, fmt in (("cpp", "torchscript"), ("node", "onnx"), ("python", "onnx")):
        checked = [row for row in parity if (row["runtime"], row["format"]) == (runtime, fmt)]
        assert sorted(row["axes"]["seq"] for row in checked) == [1, 5, 8, 8, 8], checked  # batches 1, 2, 5 at seq 8
        assert all(row["status"] == "passed" for row in checked), checked
    assert {row["runtime"] for row in parity if row["format"] == "pt2"} == {"python", "cpp"}
    assert all(row["status"] == "skipped" for row in parity if row["format"] == "pt2")


# --------------------------------------------------------------------------- integer ranges


def test_python_artifacts_refuse_integers_outside_their_range(zoo, lstm_export):
    out, _, _ = lstm_export
    good = np.array([[0, VOCAB - 1, 3]])
    for fmt in ("torchscript", "onnx"):
        art = artifacts.load(out / f"logits.{fmt}")
        assert art(good)[0].shape == (1, 3, VOCAB)  # both ends of the range are valid
        for bad, value in ((-1, -1), (VOCAB, VOCAB)):
            tokens = good.copy()
            tokens[0, 1] = bad
            with pytest.raises(ZooError) as err:
                art(tokens)
            assert str(err.value) == f"input 'tokens' of logits.{fmt} must be in [0, {VOCAB - 1}], got {value}"
            with pytest.raises(ZooError, match=r"must be in \[0, 10\]"):
                art(torch.from_numpy(tokens))  # tensors are checked too


def test_cgan_labels_are_range_checked_from_the_exported_metadata(zoo, tmp_path):
    """A built-in plugin's range (cgan's label: 0..num_classes-1, decided by the config) is
    resolved at export, recorded in the metadata and enforced when the file runs."""
    out = tmp_path / "cgan"
    r = zoo("export", "cgan", "--random-init", "--onnx", "--device", "cpu", "--no-latency", "--batch-sizes", "2", "--out", out)
    assert r.exit_code == 0, r
    art = artifacts.load(out / "generator.onnx")
    label = next(i for i in art.metadata["inputs"] if i["name"] == "label")
    assert label["value_range"] == [0, 9]
    z = np.random.default_rng(0).random((2, art.metadata["inputs"][0]["shape"][1]), dtype=np.float32)
    assert art(z, np.array([0, 9]))[0].shape[0] == 2
    with pytest.raises(ZooError, match=r"input 'label' of generator.onnx must be in \[0, 9\], got -1"):
        art(z, np.array([-1, 3]))
    with pytest.raises(ZooError, match=r"must be in \[0, 9\], got 10"):
        art(z, np.array([3, 10]))


# --------------------------------------------------------------------------- declarations that contradict the module

BAD_TARGETS_MODULE = '''
"""Three targets whose declarations their examples or modules contradict."""
from dataclasses import dataclass

import torch
from torch import nn

from zoo.plugin import DataRequest, ExportTarget, Plugin, TensorSpec, Trainer, TrainConfig


@dataclass
class BadConfig(TrainConfig):
    pass


class Recurrent(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gru = nn.GRU(3, 4)  # (seq, batch, features): the batch is dimension 1

    def forward(self, x):
        return self.gru(x)[0]


class Nested(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True)

    def forward(self, x):
        return self.lstm(x)  # (output, (h, c)): nested


def _make(name, build, target):
    return Plugin(
        name=name,
        summary="a target that contradicts itself",
        config_class=BadConfig,
        build=build,
        trainer_class=Trainer,
        data_request=lambda config: DataRequest(size=2),
        default_dataset="digits",
        datasets=("digits",),
        export_targets=(target,),
    )


dtype = _make("baddtype", Recurrent, ExportTarget(
    name="halves", module=lambda m: m, inputs=(TensorSpec("x"),), outputs=(TensorSpec("y"),),
    example_inputs=lambda config, batch, gen: (torch.randn(5, batch, 3, generator=gen).double(),),
))
batch_axis = _make("badbatch", Recurrent, ExportTarget(
    name="sequence", module=lambda m: m, inputs=(TensorSpec("x"),), outputs=(TensorSpec("y", batch_axis=1),),
    example_inputs=lambda config, batch, gen: (torch.randn(5, batch, 3, generator=gen),),
))
nested = _make("badnested", Nested, ExportTarget(
    name="state", module=lambda m: m, inputs=(TensorSpec("x"),), outputs=(TensorSpec("y"), TensorSpec("h"), TensorSpec("c")),
    example_inputs=lambda config, batch, gen: (torch.randn(batch, 5, 3, generator=gen),),
))
'''

BAD_CASES = {
    "baddtype": ("input 'x' is declared float32 but the example gives float64",),
    "badbatch": ("input 'x': the size that follows the batch is dimension 1", "TensorSpec('x', batch_axis=1)"),
    "badnested": ("output 1 is a tuple, not a tensor", "return them flat"),
}


@pytest.mark.parametrize("plugin_name", list(BAD_CASES))
def test_contradicting_targets_are_one_line_in_export_and_info(zoo, install_dist, tmp_path, plugin_name):
    install_dist(
        "zoo-bad-targets",
        "1.0",
        {"zoo_bad_targets": BAD_TARGETS_MODULE},
        {"baddtype": "zoo_bad_targets:dtype", "badbatch": "zoo_bad_targets:batch_axis", "badnested": "zoo_bad_targets:nested"},
    )
    needles = BAD_CASES[plugin_name]
    r = zoo("export", plugin_name, "--random-init", "--device", "cpu", "--out", tmp_path / "out")
    one_line_error(r, 1, *needles)
    assert not list((tmp_path / "out").glob("*.onnx")) and not (tmp_path / "out" / "export.json").exists()
    r = zoo("info", plugin_name)
    one_line_error(r, 1, *needles)
