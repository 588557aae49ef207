"""Bad input never produces a traceback: one readable line on stderr and exit code 1."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from llmb.cli import main

BAD_COMMANDS = [
    ["show", "gpt5", "-s", "8b"],
    ["show", "llama3.1", "-s", "3b"],
    ["show", "llama3.1", "-s", "8b", "-d", "fp16"],
    ["show", "llama3.1", "-s", "8b", "-g", "tpu-v5"],
    ["show", "llama3.1", "-s", "8b", "-n", "0"],
    ["show", "llama3.1", "-s", "8b", "-n", "-8"],
    ["show", "llama3.1", "-s", "8b", "-n", "8.5"],
    ["show", "llama3.1", "-s", "8b", "-n", "eight"],
    ["show", "llama3.1", "-s", "8b", "-n", "1e9"],
    ["show", "llama3.1", "-s", "8b", "-n", "9"],
    ["show", "llama3.1", "-s", "8b", "-n", "8", "--gbs", "102"],
    ["show", "llama3.1", "-s", "8b", "-n", "64", "--tp", "64"],
    ["show", "llama3.1", "-s", "8b", "-n", "24", "--tp", "3"],
    ["show", "llama3.1", "-s", "8b", "-n", "48", "--pp", "3"],
    ["show", "llama3.1", "-s", "8b", "--ep", "2"],
    ["show", "llama3.1", "-s", "8b", "--etp", "2"],
    ["show", "llama3.1", "-s", "8b", "-n", "4"],
    ["show", "llama3.1", "-s", "8b", "--mbs", "0"],
    ["show", "llama3.1", "-s", "8b", "--tp", "-1"],
    ["show", "llama3.1", "-s", "8b", "--gbs", "0"],
    ["show", "llama3.1", "-s", "405b-proxy", "-n", "256"],
    ["show", "llama3.1", "-s", "8b", "-d", "fp32"],
    ["show", "llama3.1", "-s", "8b", "-d", "fp8", "-g", "a100"],
    ["show", "llama3.1"],
    ["show", "llama3.1", "-s", "70b", "-n", "64", "--gbs", "68"],
    ["show", "llama4", "--ep", "3"],
    ["show", "llama4", "-n", "128", "--ep", "128"],
    ["show", "llama4", "--etp", "3", "--tp", "2", "-n", "256"],
    ["show", "llama3.1", "--frobnicate"],
    ["show"],
    ["frobnicate"],
    ["flops", "gpt5"],
    ["flops", "llama3.1", "-s", "3b"],
]


@pytest.mark.parametrize("argv", BAD_COMMANDS, ids=lambda a: " ".join(a) or "empty")
def test_bad_command_gives_one_line_and_exit_1(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err + out


VALID_WORKLOAD = textwrap.dedent(
    """\
    name: toy
    title: Toy workload
    framework: llmb
    recipe_flops: llama
    sources:
      doc: {document: seeds/toy.md}
    sizes:
      1b:
        model:
          family: llama
          layers: 4
          hidden: 256
          ffn_hidden: 512
          heads: 4
          query_groups: 2
          vocab: 1000
          seq_len: 128
          activation: swiglu
          norm: rmsnorm
        layouts:
          - {gpu_type: h100, dtypes: [bf16], gpus: 8, mbs: 1, gbs: 8, source: doc}
    """
)

BAD_FILES = {
    "malformed_yaml": VALID_WORKLOAD.replace("sources:\n", "sources: [\n"),
    "missing_field": VALID_WORKLOAD.replace("    title: Toy workload\n", "").replace("title: Toy workload\n", ""),
    "unknown_key": VALID_WORKLOAD.replace("framework: llmb", "framework: llmb\nfrobnicate: 1"),
    "string_for_int": VALID_WORKLOAD.replace("gpus: 8,", "gpus: '8',"),
    "float_for_int": VALID_WORKLOAD.replace("layers: 4", "layers: 4.5"),
    "negative_size": VALID_WORKLOAD.replace("hidden: 256", "hidden: -256"),
    "unknown_activation": VALID_WORKLOAD.replace("activation: swiglu", "activation: relu6"),
    "name_mismatch": VALID_WORKLOAD.replace("name: toy", "name: other"),
    "unknown_source": VALID_WORKLOAD.replace("source: doc}", "source: nowhere}"),
    "unknown_gpu_type": VALID_WORKLOAD.replace("gpu_type: h100", "gpu_type: tpu"),
    "heads_not_divisible": VALID_WORKLOAD.replace("query_groups: 2", "query_groups: 3"),
    "not_a_mapping": "- just\n- a list\n",
    "empty_file": "",
    "date_value": VALID_WORKLOAD.replace("title: Toy workload", "title: 2024-01-01"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_catalog_file_names_the_file(case, tmp_path, monkeypatch, capsys):
    (tmp_path / "toy.yaml").write_text(BAD_FILES[case])
    monkeypatch.setenv("LLMB_CATALOG_PATH", str(tmp_path))
    code = main(["list"])
    out, err = capsys.readouterr()
    assert code == 1, (case, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "toy.yaml" in lines[0], (case, err)
    assert "Traceback" not in err


def test_missing_catalog_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMB_CATALOG_PATH", str(tmp_path / "nowhere"))
    assert main(["list"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_adding_a_workload_needs_no_code(tmp_path, monkeypatch, capsys):
    (tmp_path / "toy.yaml").write_text(VALID_WORKLOAD)
    monkeypatch.setenv("LLMB_CATALOG_PATH", str(tmp_path))
    assert main(["show", "toy", "-n", "8", "--json"]) == 0
    assert '"workload": "toy"' in capsys.readouterr().out


def test_field_error_names_the_field(tmp_path, monkeypatch, capsys):
    (tmp_path / "toy.yaml").write_text(BAD_FILES["string_for_int"])
    monkeypatch.setenv("LLMB_CATALOG_PATH", str(tmp_path))
    main(["list"])
    assert "sizes.1b.layouts[0].gpus" in capsys.readouterr().err


def test_console_script_end_to_end():
    """The installed entry point itself: exit code and one line, in a real process."""
    proc = subprocess.run(
        [sys.executable, "-c", "from llmb.cli import run; run()", "show", "llama3.1", "-s", "8b", "-n", "9"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "must be divisible" in proc.stderr
