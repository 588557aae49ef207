"""`llmb data prepare` / `llmb data info`: the shipped sample, tokenizer training, bad input."""

import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from llmb.cli import main
from llmb.data import (
    IndexedDataset,
    sample_dir,
    sample_prefix,
    sample_tokenizer_path,
)
from llmb.data.prepare import prepare
from llmb.engine.data import TokenBatches

SAMPLE_JSONL = sample_dir() / "prose.jsonl"


def test_shipped_sample_is_real_text_ready_to_train():
    ds = IndexedDataset(sample_prefix())
    texts = [json.loads(line)["text"] for line in SAMPLE_JSONL.read_text().splitlines()]
    assert ds.num_documents == len(texts) >= 250
    assert ds.num_tokens > 20_000 and ds.dtype == np.uint16
    tokenizer = Tokenizer.from_file(str(sample_tokenizer_path()))
    eod = tokenizer.token_to_id("<|endoftext|>")
    for i in (0, 123, len(texts) - 1):
        assert ds[i][-1] == eod
        assert tokenizer.decode(ds[i][:-1].tolist()) == texts[i]
    assert ds.vocab_bound() <= tokenizer.get_vocab_size() <= 4096
    tokens, labels = next(TokenBatches(ds, seq_len=256, micro_batch=2, seed=0))
    assert tokens.shape == (2, 256) and int(labels.max()) < 4096


def test_prepare_reproduces_the_shipped_files(tmp_path):
    # The shipped .bin/.idx and tokenizer are exactly what the documented command makes.
    prefix = tmp_path / "prose"
    code = main([
        "data", "prepare", str(SAMPLE_JSONL), "--output-prefix", str(prefix), "--append-eod",
        "--train-tokenizer", "--vocab-size", "4096", "--tokenizer-out", str(tmp_path / "tok.json"),
    ])
    assert code == 0
    for suffix in (".bin", ".idx"):
        shipped = sample_prefix().with_suffix(suffix)
        assert (tmp_path / f"prose{suffix}").read_bytes() == shipped.read_bytes()
    assert (tmp_path / "tok.json").read_bytes() == sample_tokenizer_path().read_bytes()


def test_prepare_with_a_tokenizer_file_and_json_summary(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"body": "Hello there, world."}\n\n{"body": ""}\n{"body": "A second line."}\n')
    code = main([
        "data", "prepare", str(src), "--output-prefix", str(tmp_path / "out" / "ds"),
        "--json-key", "body", "--tokenizer", str(sample_tokenizer_path()), "--json",
    ])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["documents"] == 2 and summary["skipped_empty_documents"] == 1
    assert summary["eod_id"] is None and summary["dtype"] == "uint16"
    ds = IndexedDataset(tmp_path / "out" / "ds")
    assert summary["tokens"] == ds.num_tokens
    tokenizer = Tokenizer.from_file(str(sample_tokenizer_path()))
    assert ds[1].tolist() == tokenizer.encode("A second line.").ids

    assert main(["data", "info", str(tmp_path / "out" / "ds"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["documents"] == 2 and info["tokens"] == ds.num_tokens
    assert info["vocab_bound"] == int(ds.tokens.max()) + 1


def test_trained_tokenizer_defaults_next_to_the_output(tmp_path):
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": f"line {i} of a tiny corpus"}) for i in range(50)]
    src.write_text("\n".join(lines) + "\n")
    summary = prepare(
        src, tmp_path / "ds", train_vocab_size=300, save_tokenizer=tmp_path / "t.json",
        append_eod=True,
    )
    assert summary.documents == 50 and summary.eod_id == 0
    assert Tokenizer.from_file(str(tmp_path / "t.json")).get_vocab_size() <= 300
    assert main(["data", "prepare", str(src), "--output-prefix", str(tmp_path / "ds2"),
                 "--train-tokenizer", "--vocab-size", "300"]) == 0
    assert (tmp_path / "ds2.tokenizer.json").is_file()


def one_line_error(capsys, argv, fragment):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and fragment in err, err


@pytest.mark.parametrize(
    "content, extra, fragment",
    [
        (None, [], "not found"),
        ('{"text": "ok"}\n{"text": "broken\n', [], ":2: not valid JSON"),
        ('{"text": "ok"}\n["a list"]\n', [], ":2: a line must be a JSON object"),
        ('{"text": "ok"}\n{"body": "x"}\n', [], ":2: no key 'text'"),
        ('{"text": 7}\n', [], ":1: 'text' is int"),
        ("", [], "has no documents"),
        ("\n\n", [], "has no documents"),
        (b'{"text": "\xff"}\n', [], ":1: not valid"),
    ],
)
def test_bad_input_is_one_line_exit_1(tmp_path, capsys, content, extra, fragment):
    src = tmp_path / "in.jsonl"
    if isinstance(content, bytes):
        src.write_bytes(content)
    elif content is not None:
        src.write_text(content)
    argv = ["data", "prepare", str(src), "--output-prefix", str(tmp_path / "ds"),
            "--train-tokenizer", "--vocab-size", "300", *extra]
    one_line_error(capsys, argv, fragment)
    assert not (tmp_path / "ds.bin").exists() and not (tmp_path / "ds.idx").exists()


@pytest.mark.parametrize(
    "options, fragment",
    [
        ([], "give exactly one"),
        (["--tokenizer", "{sample_tok}", "--vocab-size", "500"], "go with --train-tokenizer"),
        (["--tokenizer", "{tmp}/no.json"], "tokenizer file"),
        (["--tokenizer", "{tmp}/junk.json"], "is not a tokenizer.json"),
        (["--tokenizer", "{sample_tok}", "--append-eod", "--eod-token", "<no>"], "no token '<no>'"),
        (["--train-tokenizer", "--vocab-size", "100"], "--vocab-size must be a whole number from 257"),
    ],
)
def test_bad_options_are_one_line_exit_1(tmp_path, capsys, options, fragment):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "hello"}\n')
    (tmp_path / "junk.json").write_text("{}")
    options = [o.format(tmp=tmp_path, sample_tok=sample_tokenizer_path()) for o in options]
    argv = ["data", "prepare", str(src), "--output-prefix", str(tmp_path / "ds"), *options]
    one_line_error(capsys, argv, fragment)


def test_unwritable_output_and_missing_dataset_are_one_line_exit_1(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "hello"}\n')
    # Not writable even as root: the output's parent folder is a file.
    (tmp_path / "afile").write_text("")
    argv = ["data", "prepare", str(src), "--output-prefix", str(tmp_path / "afile" / "ds"),
            "--train-tokenizer", "--vocab-size", "300"]
    one_line_error(capsys, argv, "cannot write")
    one_line_error(capsys, ["data", "info", str(tmp_path / "nothing")], "not found")
