"""Character-level text data: the offline CPython documentation, text files and folders,
the interleaved split, random and consecutive windows, and bad text in one line."""

from __future__ import annotations

import torch
from conftest import one_line_error

from zoo import DataRequest, Tokens, datasets
from zoo.datasets.text import pydoc_text, split_text


def request(length: int = 9, **kw) -> DataRequest:
    return DataRequest(Tokens("tokens", length=length, **kw), shuffle=kw.get("windows", "random") == "random")


def test_pydoc_is_cpythons_documentation_split_every_tenth_block():
    text = pydoc_text()
    assert len(text) > 400_000 and '"assert" statement' in text
    train, val = split_text(text)
    assert len(train) + len(val) == len(text) and len(val) == 22 * 2048  # 227 blocks: every tenth held out
    assert val[:2048] == text[9 * 2048 : 10 * 2048] and val[2048:4096] == text[19 * 2048 : 20 * 2048]
    splits = datasets.load("pydoc", request(257))
    vocabulary = splits.info.vocabulary
    assert vocabulary == tuple(sorted(set(train))) and len(vocabulary) == 103
    windows = splits.val.tensors["tokens"]
    decoded = "".join(vocabulary[i] for i in windows[0].tolist())
    assert decoded == val[:257]
    assert torch.equal(windows[1][0], windows[0][-1])  # windows overlap by one: every target is predicted once


def test_random_windows_are_resumable_and_cover_the_text():
    splits = datasets.load("pydoc", request(65))
    train = splits.train
    full = [b["tokens"] for b in train.batches(32, generator=torch.Generator().manual_seed(3))]
    rest = [b["tokens"] for b in train.batches(32, generator=torch.Generator().manual_seed(3), start=5)]
    assert all(torch.equal(a, b) for a, b in zip(full[5:], rest)) and len(rest) == len(full) - 5
    assert len(train) == (420070 - 1) // 64 and full[0].shape == (32, 65)
    stream = train.stream
    first = full[0][0]
    starts = [i for i in range(len(stream) - 64) if torch.equal(stream[i : i + 65], first)]
    assert starts  # a real window of the training text


def test_consecutive_windows_continue_each_stream(tmp_path):
    (tmp_path / "a.txt").write_text("abcdefghij" * 300)
    splits = datasets.load(f"text:{tmp_path / 'a.txt'}", request(5, windows="consecutive", lanes=3))
    rows = splits.train.tensors["tokens"]
    vocab = splits.info.vocabulary
    text = lambda row: "".join(vocab[i] for i in row.tolist())
    # Row j * 3 + i is window j of stream i: window j + 1 starts where window j ended.
    for i in range(3):
        assert text(rows[i])[-1] == text(rows[3 + i])[0]
        assert text(rows[i])[1:] + text(rows[3 + i])[1:] in "abcdefghij" * 300


def test_a_folder_of_text_files(tmp_path):
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "b.txt").write_text("second " * 400)
    (tmp_path / "books" / "a.txt").write_text("\ufeff" + "first " * 400)  # a byte-order mark is not text
    splits = datasets.load(f"text:{tmp_path / 'books'}", request())
    assert set(splits.info.vocabulary) == set("firstecond \n")  # a.txt, a blank line, b.txt


def test_bad_text_is_one_line(zoo, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    (tmp_path / "short.txt").write_text("too short")
    (tmp_path / "no-txt").mkdir()
    cases = [
        ("empty.txt", "the text is empty"),
        ("latin1.txt", "not UTF-8 text (byte 0xe9 at offset 3"),
        ("short.txt", "fewer than the 9 of one window"),
        ("no-txt", "has no .txt files"),
        ("missing.txt", "does not exist"),
    ]
    for name, needle in cases:
        try:
            datasets.load(f"text:{tmp_path / name}", request(9))
        except Exception as exc:  # noqa: BLE001
            assert needle in str(exc) and "\n" not in str(exc), (name, exc)
        else:
            raise AssertionError(f"{name} loaded")
    one_line_error(zoo("train", "vae", "--data", "pydoc"), 2, "dataset 'pydoc' yields tokens (tokens)", "vae needs image")
