"""Decoder-only Transformer language model (Vaswani et al. 2017, as EECS-498 lecture 13
teaches it; the GPT-2 / nanoGPT layout).

token embedding + learned position embedding -> `--layers` blocks of masked multi-head
self-attention and an MLP, each with a residual connection and layer norm before it
(pre-norm: GPT-2, Radford et al. 2019; nanoGPT) -> a final layer norm -> logits over the
vocabulary through the token embedding's own weights (weight tying, Press & Wolf 2017,
as GPT-2 and nanoGPT do). The attention is written out (scores, causal mask, softmax,
weighted sum) rather than through a fused kernel, so it reads like the lecture and
exports to every format.

Export target `logits`: token ids (batch, seq) -> logits (batch, seq, vocab), seq up to
`--block-size`; a runtime generates by sliding a window of that length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo import DataRequest, ExportTarget, Plugin, Schedule, TensorSpec, Tokens, TrainConfig, Trainer, Weights, hparam, tasks


@dataclass
class TransformerConfig(TrainConfig):
    # nanoGPT's shakespeare_char trains 6 x 384 at block 256 on a GPU; a CPU needs a model
    # a few times smaller. Measured by benchmarks/lm_quality.py (see the README).
    # Measured here (one thread, 24 epochs, interleaved pydoc split): lr 1e-3 with dropout
    # 0.1 ended at 1.74 bits per character; lr 3e-3 without dropout at 1.53 (1.60 by epoch 16).
    epochs: int = hparam(18, "passes over the training text (each about one pass of random windows)")
    batch_size: int = hparam(32, "windows per step (nanoGPT shakespeare_char: 64)")
    lr: float = hparam(3e-3, "peak AdamW learning rate (nanoGPT shakespeare_char: 1e-3 for a 6 x 384 model; a 4 x 128 one takes 3e-3)")
    min_lr: float = hparam(1e-4, "learning rate at the end of the cosine decay (nanoGPT: lr / 10)", at_least=0.0)
    warmup_steps: int = hparam(100, "linear warm-up steps before the cosine decay (nanoGPT shakespeare_char: 100)", at_least=0)
    weight_decay: float = hparam(
        0.1, "AdamW weight decay on matrices, none on biases, norms and embeddings' positions (nanoGPT)", at_least=0.0
    )
    beta2: float = hparam(0.99, "AdamW beta2 (nanoGPT shakespeare_char: 0.99, for small batches)", at_least=0.0, below=1.0)
    layers: int = hparam(4, "Transformer blocks (nanoGPT shakespeare_char: 6)", at_least=1)
    heads: int = hparam(4, "attention heads per block (nanoGPT shakespeare_char: 6)", at_least=1)
    width: int = hparam(128, "embedding width, a multiple of --heads (nanoGPT shakespeare_char: 384)", at_least=1)
    dropout: float = hparam(
        0.0,
        "dropout on attention weights and residual branches (nanoGPT shakespeare_char: 0.2 over 5,000 iterations; "
        "in 18 passes this model is still improving on validation without it)",
        at_least=0.0,
        below=1.0,
    )
    block_size: int = hparam(128, "context length in characters (nanoGPT shakespeare_char: 256)", at_least=1)
    grad_clip: float = hparam(1.0, "clip the gradient norm to this (nanoGPT: 1.0; 0 turns it off)", at_least=0.0)


class SelfAttention(nn.Module):
    """Masked multi-head self-attention: each position attends to itself and the past."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)
        self.attn_drop = nn.Dropout(config.dropout)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)  # each (B, T, C)
        # (B, T, C) -> (B, heads, T, C / heads)
        q = q.view(batch, seq, self.heads, width // self.heads).transpose(1, 2)
        k = k.view(batch, seq, self.heads, width // self.heads).transpose(1, 2)
        v = v.view(batch, seq, self.heads, width // self.heads).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])  # (B, heads, T, T)
        # The causal mask, made at this length (slicing a stored block-size mask would fix
        # the exported graph's length at the block size: at that size a slice is the whole).
        causal = torch.ones(seq, seq, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        weights = self.attn_drop(F.softmax(scores, dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(batch, seq, width)  # (B, T, C)
        return self.resid_drop(self.proj(out))


class Block(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.width)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.width)
        self.mlp = nn.Sequential(
            nn.Linear(config.width, 4 * config.width),  # the 4x expansion of Vaswani et al. and GPT-2
            nn.GELU(),
            nn.Linear(4 * config.width, config.width),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))  # pre-norm residual branches
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, config: TransformerConfig, data):
        super().__init__()
        from zoo.errors import UsageError

        if config.width % config.heads:
            raise UsageError(f"--width {config.width} must be a multiple of --heads {config.heads}")
        vocab = len(data.vocabulary) if data.vocabulary else 1
        self.block_size = config.block_size
        self.tokens = nn.Embedding(vocab, config.width)
        self.positions = nn.Embedding(config.block_size, config.width)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln = nn.LayerNorm(config.width)
        self.apply(_init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                # GPT-2: residual projections scaled down by the depth, so the sum stays small.
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * config.layers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        seq = tokens.shape[1]
        positions = torch.arange(seq, device=tokens.device)
        x = self.drop(self.tokens(tokens) + self.positions(positions))  # (B, T) -> (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.ln(x) @ self.tokens.weight.t()  # tied output layer: (B, T, C) -> (B, T, vocab)


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 0.02)


def warmup_cosine(optimizer, config: TransformerConfig, total_steps: int):
    """Linear warm-up over --warmup-steps, then a cosine down to --min-lr (nanoGPT).
    Built from schedulers that keep their shape in their state, so a resumed run
    continues the schedule it started."""
    warmup = max(1, config.warmup_steps)
    rise = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup), eta_min=config.min_lr)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [rise, decay], milestones=[warmup])


class TransformerTrainer(Trainer):
    def configure_optimizers(self):
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2 and not n.startswith("positions")]
        rest = [p for n, p in self.model.named_parameters() if p.dim() < 2 or n.startswith("positions")]
        adamw = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.config.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=self.config.lr,
            betas=(0.9, self.config.beta2),
        )
        schedule = warmup_cosine(adamw, self.config, self.plan.total_steps)
        return {"adamw": adamw}, {"warmup_cosine": Schedule(schedule, interval="step")}

    def train_step(self, batch, optimizers, progress):
        tokens = batch["tokens"]
        # Inputs and targets as contiguous (B, T) tensors, as nanoGPT's get_batch makes them:
        # the embedding's backward on a strided view of the window costs a few percent a step.
        inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
        logits = self.model(inputs)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
        opt = optimizers["adamw"]
        opt.zero_grad(set_to_none=True)
        self.backward(loss)
        if self.config.grad_clip > 0:
            self.clip_grad_norm(opt, self.config.grad_clip)
        self.step(opt)
        return {"loss": loss.detach(), "bpc": loss.detach() / math.log(2)}

    def evaluate(self, batches):
        bits, count = 0.0, 0
        for batch in batches:
            tokens = batch["tokens"]
            logits = self.model(tokens[:, :-1])
            bits += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="sum")) / math.log(2)
            count += tokens[:, 1:].numel()
        return {"val_bpc": bits / count}

    def sample_text(self, generator, val_batch):
        """200 characters after the first 16 of a validation window, at temperature 0.8."""
        from zoo.textgen import generate, window_reader

        vocabulary = self.data_info.vocabulary
        prompt = "".join(vocabulary[i] for i in val_batch["tokens"][0, :16].tolist())
        read = window_reader(lambda ids: self.model(ids.to(self.device))[0, -1].cpu(), self.config.block_size)
        return generate(read, vocabulary, prompt, length=200, temperature=0.8, top_k=None, generator=generator)


def _vocab_range(config, data):
    return (0, len(data.vocabulary) - 1) if data is not None and data.vocabulary else (0, 0)


def _tokens(config: TransformerConfig, batch: int, gen: torch.Generator, sizes: dict[str, int], data) -> tuple[torch.Tensor]:
    return (torch.randint(0, len(data.vocabulary or "x"), (batch, sizes["seq"]), generator=gen),)


def _seq_sizes(config: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """Captured at half the block size, checked at 1, an odd length and the full block."""
    block = config.block_size
    sizes = [max(2, block // 2) if block >= 2 else 1, 1, min(17, block), block]  # captured at 2 or more: torch.export fixes a size of 1
    return {"seq": tuple(dict.fromkeys(sizes))}


PYDOC_V1 = Weights(
    name="PYDOC_V1",
    source="package:transformer-pydoc_v1-c4971f5a.safetensors",
    sha256="c4971f5a72be5515b929676f69cdc0b14368032a822adbdcd337f14b6b57b14a",
    meta={
        "dataset": "pydoc",
        "metrics": {"val_bpc": 1.551460412823182},
        "input": {
            "tensors": [{"name": "tokens", "kind": "tokens", "dtype": "int64", "shape": [129]}],
            "normalization": "none",
        },
        "num_params": 822912,
        "license": "BSD-3-Clause; trained on the English documentation bundled with CPython (pydoc_data.topics, PSF License)",
        "command": "zoo train transformer --data pydoc --seed 0 --device cpu --epochs 18 --batch-size 32 --lr 0.003 --min-lr 0.0001 --warmup-steps 100 --weight-decay 0.1 --beta2 0.99 --layers 4 --heads 4 --width 128 --dropout 0.0 --block-size 128 --grad-clip 1.0",
        "config": {
            "epochs": 18,
            "batch_size": 32,
            "lr": 0.003,
            "min_lr": 0.0001,
            "warmup_steps": 100,
            "weight_decay": 0.1,
            "beta2": 0.99,
            "layers": 4,
            "heads": 4,
            "width": 128,
            "dropout": 0.0,
            "block_size": 128,
            "grad_clip": 1.0,
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
        "description": "4-layer, 128-wide pre-norm Transformer on CPython's bundled documentation; the float32 training result stored in float16 (float32 run: val_bpc 1.55147)",
    },
)


plugin = Plugin(
    name="transformer",
    summary="decoder-only Transformer language model (GPT-2/nanoGPT layout), trained on CPython's bundled docs",
    config_class=TransformerConfig,
    build=GPT,
    trainer_class=TransformerTrainer,
    data_request=lambda config: DataRequest(Tokens("tokens", length=config.block_size + 1)),
    default_dataset="pydoc",
    datasets=("pydoc", "text"),
    export_targets=(
        ExportTarget(
            name="logits",
            module=lambda model: model,
            inputs=(
                TensorSpec(
                    "tokens",
                    dtype="int64",
                    range="character ids, indices into the metadata's data_info.vocabulary; at most block_size of them",
                    value_range=_vocab_range,
                ),
            ),
            outputs=(TensorSpec("logits", range="unnormalised scores of the next character at every position"),),
            example_inputs=_tokens,
            dynamic_dims={"tokens": {1: "seq"}, "logits": {1: "seq"}},
            axis_sizes=_seq_sizes,
            max_sizes=lambda config: {"seq": config.block_size},  # learned positions: no more than the context
            task_check=tasks.bits_per_token(),  # val_bpc within 1e-4 relative
            description="token ids -> next-character logits at every position (causal: each sees only its past)",
        ),
    ),
    weights=(PYDOC_V1,),
    default_weights="PYDOC_V1",
    sample_target="logits",
    reference="Vaswani et al. 2017; Radford et al. 2019 (GPT-2); Karpathy, nanoGPT; EECS-498 lecture 13",
    task="language model",
)
