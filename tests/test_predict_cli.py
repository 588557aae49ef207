"""`llmb predict`, `llmb search`, `llmb calibrate`: output, every workload, bad inputs."""

import json

import pytest

from llmb.catalog import default_catalog
from llmb.cli import main


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_json_shows_predicted_next_to_published(capsys):
    out = _json(capsys, ["predict", "llama3.1", "--size", "8b", "--dtype", "bf16", "--gpus", "8", "--json"])
    assert out["baseline"]["step_time_s"] == 12.27
    assert out["baseline"]["error_pct"] == pytest.approx(100 * (out["step_time_s"] / 12.27 - 1))
    lo, hi = out["step_time_band_s"]
    assert lo < out["step_time_s"] < hi
    assert out["memory"]["fits"] is True
    assert out["metrics"]["days_per_1t_tokens"] > 0


def test_predict_layout_overrides_and_recompute(capsys):
    out = _json(
        capsys,
        ["predict", "llama3.1", "-s", "70b", "-n", "64", "--tp", "8", "--pp", "2", "--cp", "1", "--vp", "5", "--recompute", "full", "--json"],
    )
    assert out["layout"]["tp"] == 8 and out["recompute"] == "full"
    assert out["breakdown"]["step_time_s"] == pytest.approx(out["step_time_s"])


def _sizes():
    cat = default_catalog()
    return [(wl.name, size) for wl in cat.workloads.values() for size in wl.sizes]


@pytest.mark.parametrize(("workload", "size"), _sizes())
def test_predict_and_search_work_for_every_catalog_workload(capsys, workload, size):
    out = _json(capsys, ["predict", workload, "--size", size, "--json"])
    assert out["step_time_s"] > 0
    res = _json(capsys, ["search", workload, "--size", size, "--top", "2", "--json"])
    assert res["fitting"] >= 1 and len(res["ranked"]) >= 1
    assert res["ranked"][0]["step_time_s"] <= res["recipe"]["step_time_s"] + 1e-9 or not res["recipe"]["memory"]["fits"]


def test_human_readable_outputs(capsys):
    assert main(["predict", "nemotron4", "-s", "340b", "-n", "256"]) == 0
    text = capsys.readouterr().out
    assert "published" in text and "pipeline bubble" in text
    assert main(["search", "llama3.1", "-s", "8b", "--top", "3"]) == 0
    assert "winner vs the recipe" in capsys.readouterr().out
    assert main(["calibrate"]) == 0
    text = capsys.readouterr().out
    assert "constant_mfu" in text and "roofline" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "no-such-workload", "-s", "8b"],
        ["predict", "llama3.1", "-s", "8b", "--tp", "3"],
        ["predict", "llama3.1", "-s", "8b", "--recompute", "sometimes"],
        ["predict", "llama3.1", "-s", "8b", "--gpu-type", "tpu"],
        ["predict", "llama3.1", "-s", "8b", "--gpus", "0"],
        ["predict", "nemotron4", "-s", "340b", "--dtype", "fp8", "--gpu-type", "a100"],
        ["search", "llama3.1", "-s", "8b", "--top", "0"],
        ["calibrate", "--write"],
    ],
)
def test_bad_inputs_are_one_line_errors_with_exit_1(capsys, argv):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_predict_on_a_gpu_without_a_published_layout_borrows_the_recipe(capsys):
    h100 = _json(capsys, ["predict", "llama3.1", "-s", "70b", "-n", "64", "--json"])
    b200 = _json(capsys, ["predict", "llama3.1", "-s", "70b", "-n", "64", "--gpu-type", "b200", "--json"])
    assert any("no published b200 layout" in n for n in b200["notes"])
    assert b200["baseline"] is None and b200["layout"] == h100["layout"]
    # More peak FLOP/s, HBM bandwidth and NVLink: a shorter step; more memory: more headroom.
    assert b200["step_time_s"] < h100["step_time_s"]
    assert b200["memory"]["capacity_bytes"] > h100["memory"]["capacity_bytes"]


def test_cli_recompute_choices_match_the_library():
    from llmb.cli import predict_cmds
    from llmb.plan.forecast import RECOMPUTE_CHOICES

    assert predict_cmds.RECOMPUTE_CHOICES == RECOMPUTE_CHOICES
