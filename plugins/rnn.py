"""Character-level recurrent language model (Karpathy's char-rnn; EECS-498 lecture 12).

embedding -> `--layers` recurrent layers of `--cell rnn|lstm|gru` with `--hidden` units
(dropout between layers, Zaremba et al. 2014) -> linear over the vocabulary. Trained
with cross-entropy on the next character, either on windows of `--block-size`
characters at random offsets, or, with `--tbptt`, by truncated backpropagation
through time as the lecture describes: consecutive windows of `--batch-size`
parallel streams of the text, the recurrent state carried from one batch to the next
(detached, so gradients stop at the window's start) and kept in the trainer's
checkpointed state.

The vocabulary comes from the training data (DataInfo.vocabulary) and travels into
checkpoints, weights and every exported file's metadata, so a runtime can encode a
prompt and decode output without Python. Export targets:
- `logits`: token ids (batch, seq) -> logits (batch, seq, vocab), both axes dynamic;
- `step`: (token (batch, 1), state) -> (logits (batch, vocab), new state), so a runtime
  generates one character at a time without recomputing the prefix. The state is one
  tensor: (layers, batch, hidden) for rnn and gru; (2 x layers, batch, hidden) for lstm,
  every layer's h, then every layer's c (the metadata's `state` input says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo import DataRequest, ExportTarget, Plugin, TensorSpec, Tokens, TrainConfig, Trainer, Weights, hparam, tasks
from zoo.optim import SCHEDULES, OptimizerOptions, optimization

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
# Streams the validation text is read in (state carried along each): enough to batch the
# work, few enough that each stream is long (about 22 windows of the default split).
EVAL_LANES = 16


@dataclass
class RNNConfig(OptimizerOptions, TrainConfig):
    # Measured here on the default pydoc split (24 passes, one thread, zero-state windows):
    # batch 64 ended at 1.55 bits per character, batch 32 at 1.545, batch 16 at 1.484 (1.436
    # read as streams, the val_bpc below): at this size more, smaller steps learn more per
    # character, and a step costs the same per character. benchmarks/lm_quality.py times it.
    epochs: int = hparam(24, "passes over the training text (each about one pass of random windows)")
    batch_size: int = hparam(16, "windows per step (char-rnn: 50); with --tbptt, the number of parallel streams")
    lr: float = hparam(2e-3, "peak learning rate (char-rnn: 2e-3 with RMSprop, decayed after 10 epochs; Adam trains faster here)")
    schedule: str = hparam(
        "cosine", "learning-rate schedule over the run (char-rnn decays its rate; cosine: Loshchilov & Hutter 2017)", choices=SCHEDULES
    )
    cell: str = hparam(
        "lstm", "recurrent cell: vanilla rnn (tanh), lstm (Hochreiter & Schmidhuber 1997) or gru (Cho et al. 2014)", choices=tuple(CELLS)
    )
    layers: int = hparam(2, "stacked recurrent layers (char-rnn: 2)", at_least=1)
    hidden: int = hparam(256, "units per recurrent layer (char-rnn: 128; 256 fits the CPU budget)", at_least=1)
    embedding: int = hparam(64, "size of the character embedding (char-rnn feeds one-hot vectors)", at_least=1)
    dropout: float = hparam(
        0.25, "dropout between recurrent layers and before the output (Zaremba et al. 2014: 0.2-0.5)", at_least=0.0, below=1.0
    )
    block_size: int = hparam(128, "characters per training window (char-rnn seq_length: 50)", at_least=1)
    tbptt: bool = hparam(False, "truncated backpropagation through time: carry the state across consecutive windows")
    grad_clip: float = hparam(5.0, "clip the gradient norm to this (char-rnn: 5; 0 turns it off)", at_least=0.0)


class CharRNN(nn.Module):
    def __init__(self, config: RNNConfig, data):
        super().__init__()
        vocab = len(data.vocabulary) if data.vocabulary else 1
        self.cell = config.cell
        self.embed = nn.Embedding(vocab, config.embedding)
        self.rnn = CELLS[config.cell](
            config.embedding, config.hidden, config.layers, batch_first=True, dropout=config.dropout if config.layers > 1 else 0.0
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, vocab)

    def forward(self, tokens: torch.Tensor, state: tuple[torch.Tensor, ...] | None = None):
        x = self.embed(tokens)  # (B, T) -> (B, T, embedding)
        if state is None:
            out, new = self.rnn(x)
        else:
            out, new = self.rnn(x, state if self.cell == "lstm" else state[0])
        logits = self.head(self.drop(out))  # (B, T, hidden) -> (B, T, vocab)
        return logits, (new if isinstance(new, tuple) else (new,))

    def zero_state(self, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        shape = (self.rnn.num_layers, batch, self.rnn.hidden_size)
        return tuple(torch.zeros(shape, device=device) for _ in range(2 if self.cell == "lstm" else 1))


class Logits(nn.Module):
    """tokens (B, T) -> logits (B, T, vocab), from a zero state. Holds the model's layers
    (not the model), so TorchScript compiles only what the target runs."""

    def __init__(self, model: CharRNN):
        super().__init__()
        self.embed, self.rnn, self.head = model.embed, model.rnn, model.head

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.rnn(self.embed(tokens))[0]  # (B, T, hidden)
        return self.head(out)


class StepLSTM(nn.Module):
    """(token (B, 1), state (2 x layers, B, hidden)) -> (logits (B, vocab), new state).
    The state's first `layers` rows are the LSTM's h, the next `layers` its c."""

    def __init__(self, model: CharRNN):
        super().__init__()
        self.embed, self.rnn, self.head = model.embed, model.rnn, model.head
        self.layers = model.rnn.num_layers

    def forward(self, token: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state[: self.layers], state[self.layers :]
        out, (h, c) = self.rnn(self.embed(token), (h.contiguous(), c.contiguous()))
        return self.head(out[:, -1]), torch.cat([h, c], 0)


class StepOne(nn.Module):
    """(token (B, 1), state (layers, B, hidden)) -> (logits (B, vocab), new state), rnn and gru."""

    def __init__(self, model: CharRNN):
        super().__init__()
        self.embed, self.rnn, self.head = model.embed, model.rnn, model.head

    def forward(self, token: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, h = self.rnn(self.embed(token), state)
        return self.head(out[:, -1]), h


def step_module(model: CharRNN) -> nn.Module:
    return StepLSTM(model) if model.cell == "lstm" else StepOne(model)


def bits_per_character(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy in bits."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum") / math.log(2)


class RNNTrainer(Trainer):
    def configure_optimizers(self):
        self.state = None  # the carried recurrent state under --tbptt
        return optimization(self.config, self.model.parameters(), self.plan)

    def on_epoch_start(self, progress):
        if progress.step_in_epoch == 0:
            self.state = None  # every epoch starts the streams from the beginning

    def train_step(self, batch, optimizers, progress):
        tokens = batch["tokens"]  # (B, block + 1)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        state = self.state if self.config.tbptt else None
        if state is not None and state[0].shape[1] != inputs.shape[0]:
            state = None  # the last, shorter batch of an epoch
        logits, new = self.model(inputs, state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        (opt,) = optimizers.values()
        opt.zero_grad(set_to_none=True)
        self.backward(loss)
        if self.config.grad_clip > 0:
            self.clip_grad_norm(opt, self.config.grad_clip)
        self.step(opt)
        if self.config.tbptt:
            self.state = tuple(s.detach() for s in new)  # truncated: no gradient flows back past this window
        return {"loss": loss.detach(), "bpc": loss.detach() / math.log(2)}

    def evaluate(self, batches):
        """val_bpc: the validation text read as streams, the recurrent state carried from
        each window to the next, as char-rnn evaluates (a recurrent model deployed through
        `step` reads text that way). The windows come in text order (consecutive ones
        overlap by a character); they are dealt into EVAL_LANES streams of consecutive
        windows (with --tbptt they come dealt into --batch-size lanes already)."""
        windows = torch.cat([b["tokens"] for b in batches])  # (N, block + 1)
        lanes = self.config.batch_size if self.config.tbptt else EVAL_LANES
        lanes = max(1, min(lanes, len(windows)))
        per = len(windows) // lanes
        head = windows[: per * lanes]
        # grid[j] holds window j of every lane: with --tbptt row j * lanes + i is window j of
        # lane i; otherwise lane i is the i-th run of `per` consecutive windows.
        grid = head.view(per, lanes, -1) if self.config.tbptt else head.view(lanes, per, -1).transpose(0, 1)
        bits, count, state = 0.0, 0, None
        for step in grid:
            logits, state = self.model(step[:, :-1], state)
            bits += float(bits_per_character(logits, step[:, 1:]))
            count += step[:, 1:].numel()
        # The windows past the last full lane follow the last lane's text (in text order).
        rest = windows[per * lanes :]
        carry = tuple(s[:, -1:].contiguous() for s in state) if state is not None and not self.config.tbptt else None
        for window in rest.split(1):
            logits, carry = self.model(window[:, :-1], carry)
            bits += float(bits_per_character(logits, window[:, 1:]))
            count += window[:, 1:].numel()
        return {"val_bpc": bits / count}

    def state_dict(self):
        return {"state": list(self.state) if self.state is not None else None}

    def load_state_dict(self, state):
        saved = state.get("state")
        self.state = tuple(s.to(self.device) for s in saved) if saved is not None else None

    def sample_text(self, generator, val_batch):
        """200 characters after the first 16 of a validation window, at temperature 0.8."""
        from zoo.textgen import generate, step_reader

        vocabulary = self.data_info.vocabulary
        step = step_module(self.model)

        def run(token, state):
            logits, new = step(token.to(self.device), state)
            return logits[0].cpu(), new

        zero = torch.zeros(state_rows(self.config), 1, self.config.hidden, device=self.device)
        prompt = "".join(vocabulary[i] for i in val_batch["tokens"][0, :16].tolist())
        return generate(step_reader(run, [zero]), vocabulary, prompt, length=200, temperature=0.8, top_k=None, generator=generator)


def state_rows(config: RNNConfig) -> int:
    return config.layers * (2 if config.cell == "lstm" else 1)


def _vocab_range(config, data):
    return (0, len(data.vocabulary) - 1) if data is not None and data.vocabulary else (0, 0)


def _tokens(config: RNNConfig, batch: int, gen: torch.Generator, sizes: dict[str, int], data) -> tuple[torch.Tensor]:
    vocab = len(data.vocabulary or "x")
    return (torch.randint(0, vocab, (batch, sizes["seq"]), generator=gen),)


def _step_inputs(config: RNNConfig, batch: int, gen: torch.Generator, data) -> tuple[torch.Tensor, torch.Tensor]:
    vocab = len(data.vocabulary or "x")
    token = torch.randint(0, vocab, (batch, 1), generator=gen)
    return token, torch.randn(state_rows(config), batch, config.hidden, generator=gen) * 0.5


def _stepped_bits(run, batch, context) -> tasks.Measure:
    """Bits per character of validation windows fed one character at a time through
    `step`, the state carried from each step to the next (32 windows: one call a step)."""
    window = batch["tokens"]  # (B, T + 1)
    state = torch.zeros(state_rows(context.config), window.shape[0], context.config.hidden, device=window.device)
    bits = 0.0
    for t in range(window.shape[1] - 1):
        logits, state = run(window[:, t : t + 1], state)
        bits += float(F.cross_entropy(logits.float(), window[:, t + 1], reduction="sum")) / math.log(2)
    return tasks.Measure(bits, window[:, 1:].numel())


TOKENS = TensorSpec(
    "tokens", dtype="int64", range="character ids, indices into the metadata's data_info.vocabulary", value_range=_vocab_range
)
STATE = (
    "the recurrent state, zeros to start: (layers, batch, hidden) for rnn and gru; (2 x layers, batch, hidden) for lstm, "
    "rows 0 to layers-1 the h of each layer, rows layers to 2 x layers-1 its c"
)

PYDOC_V1 = Weights(
    name="PYDOC_V1",
    source="package:rnn-pydoc_v1-d9e54caf.safetensors",
    sha256="d9e54caf951be5aeb6bc84041c2e7fea8ff63dc928de939fc3064810bf0cbe87",
    meta={
        "dataset": "pydoc",
        "metrics": {"val_bpc": 1.4328193851345965},
        "input": {
            "tensors": [{"name": "tokens", "kind": "tokens", "dtype": "int64", "shape": [129]}],
            "normalization": "none",
        },
        "num_params": 889127,
        "license": "BSD-3-Clause; trained on the English documentation bundled with CPython (pydoc_data.topics, PSF License)",
        "command": "zoo train rnn --data pydoc --seed 0 --device cpu --epochs 24 --batch-size 16 --lr 0.002 --optimizer adam --momentum 0.9 --weight-decay 0.0 --schedule cosine --milestones 0.5,0.75 --gamma 0.1 --cell lstm --layers 2 --hidden 256 --embedding 64 --dropout 0.25 --block-size 128 --no-tbptt --grad-clip 5.0",
        "config": {
            "epochs": 24,
            "batch_size": 16,
            "lr": 0.002,
            "optimizer": "adam",
            "momentum": 0.9,
            "weight_decay": 0.0,
            "schedule": "cosine",
            "milestones": [0.5, 0.75],
            "gamma": 0.1,
            "cell": "lstm",
            "layers": 2,
            "hidden": 256,
            "embedding": 64,
            "dropout": 0.25,
            "block_size": 128,
            "tbptt": False,
            "grad_clip": 5.0,
        },
        "data_info": {
            "vocabulary": [
                "\n",
                " ",
                "!",
                '"',
                "#",
                "%",
                "&",
                "'",
                "(",
                ")",
                "*",
                "+",
                ",",
                "-",
                ".",
                "/",
                "0",
                "1",
                "2",
                "3",
                "4",
                "5",
                "6",
                "7",
                "8",
                "9",
                ":",
                ";",
                "<",
                "=",
                ">",
                "?",
                "@",
                "A",
                "B",
                "C",
                "D",
                "E",
                "F",
                "G",
                "H",
                "I",
                "J",
                "K",
                "L",
                "M",
                "N",
                "O",
                "P",
                "Q",
                "R",
                "S",
                "T",
                "U",
                "V",
                "W",
                "X",
                "Y",
                "Z",
                "[",
                "\\",
                "]",
                "^",
                "_",
                "a",
                "b",
                "c",
                "d",
                "e",
                "f",
                "g",
                "h",
                "i",
                "j",
                "k",
                "l",
                "m",
                "n",
                "o",
                "p",
                "q",
                "r",
                "s",
                "t",
                "u",
                "v",
                "w",
                "x",
                "y",
                "z",
                "{",
                "|",
                "}",
                "~",
                "°",
                "ß",
                "–",
                "—",
                "‘",
                "’",
                "“",
                "”",
                "…",
            ],
            "train_size": 3281,
        },
        "stored_dtype": "float16",
        "description": "2x256 LSTM char-rnn on CPython's bundled documentation; the float32 training result stored in float16 (float32 run: val_bpc 1.43281)",
    },
)


plugin = Plugin(
    name="rnn",
    summary="character-level RNN/LSTM/GRU language model (char-rnn), trained on CPython's bundled docs",
    config_class=RNNConfig,
    build=CharRNN,
    trainer_class=RNNTrainer,
    data_request=lambda config: DataRequest(
        Tokens(
            "tokens",
            length=config.block_size + 1,
            windows="consecutive" if config.tbptt else "random",
            lanes=config.batch_size if config.tbptt else None,
        ),
        shuffle=not config.tbptt,
    ),
    default_dataset="pydoc",
    datasets=("pydoc", "text"),
    export_targets=(
        ExportTarget(
            name="logits",
            module=Logits,
            inputs=(TOKENS,),
            outputs=(TensorSpec("logits", range="unnormalised scores of the next character at every position"),),
            example_inputs=_tokens,
            dynamic_dims={"tokens": {1: "seq"}, "logits": {1: "seq"}},
            axis_sizes=lambda config: {"seq": (config.block_size, 1, 17)},
            # torch.export (and so the dynamo ONNX exporter and .pt2) unrolls nn.LSTM/GRU/RNN
            # over time, fixing the sequence length; the TorchScript-based ONNX exporter keeps
            # it dynamic with ONNX's own LSTM/GRU/RNN operators.
            exporters={"onnx": "torchscript"},
            task_check=tasks.bits_per_token(),  # val_bpc within 1e-4 relative
            skip_formats={
                "pt2": "torch.export unrolls the recurrent layer over time, fixing the sequence length; "
                "deploy the `step` target's .pt2, which generates one character at a time"
            },
            description="token ids -> next-character logits at every position, from a zero state",
        ),
        ExportTarget(
            name="step",
            module=step_module,
            inputs=(
                TensorSpec("token", dtype="int64", range="the current character's id", value_range=_vocab_range),
                TensorSpec("state", range=STATE, batch_axis=1),
            ),
            outputs=(
                TensorSpec("logits", range="unnormalised scores of the next character"),
                TensorSpec("next_state", range="the state after this character; feed it back as `state` with the next", batch_axis=1),
            ),
            example_inputs=_step_inputs,
            task_check=tasks.TaskCheck(
                "val_bpc", _stepped_bits, min_agreement=None, samples=32, description="bits per character, one character a step"
            ),
            description="(character, state) -> (next-character logits, new state): generation one character at a time",
        ),
    ),
    weights=(PYDOC_V1,),
    default_weights="PYDOC_V1",
    sample_target="step",
    reference="Karpathy, char-rnn (2015); Hochreiter & Schmidhuber 1997; Cho et al. 2014; EECS-498 lecture 12",
    task="language model",
)
