"""Every published layout is accepted: the tables' Layers column (--layers) and both ways of
splitting layers into pipeline chunks (with or without counting the embedding and the loss)."""

from __future__ import annotations

import json

import pytest

from llmb.catalog import default_catalog
from llmb.cli import main
from llmb.errors import LayoutError
from llmb.plan.layout import Layout, choose_pipeline_split
from llmb.plan.recipe import resolve


def test_nemo1_405b_layout_splits_126_layers_without_accounting():
    """NeMo 1's 405B rows: TP8 PP9 VP7, 126 layers = 63 chunks of 2 (the NeMo 2 rows count the
    embedding and loss: 126 + 2 = 128 = PP8 x VP8 x 2)."""
    r = resolve(default_catalog(), "llama3.1", "405b", "bf16", 1008, None, {"tp": 8, "pp": 9, "vp": 7, "cp": 2, "gbs": 504})
    assert not r.layout.embedding_in_pipeline_split and r.derived.layers_per_chunk == (2,) * 63
    assert any("embedding and loss not counted" in n for n in r.notes)
    with pytest.raises(LayoutError, match=r"layers \(126\+2 = 128\) must be divisible by PP\*VP = 9\*7 = 63"):
        resolve(default_catalog(), "llama3.1", "405b", "bf16", 1008, None,
                {"tp": 8, "pp": 9, "vp": 7, "cp": 2, "gbs": 504}, pp_split="account")
    # The published NeMo 2 rows keep their accounting (auto changes nothing that divides).
    nemo2 = resolve(default_catalog(), "llama3.1", "405b", "bf16", 512)
    assert nemo2.layout.embedding_in_pipeline_split and nemo2.derived.layers_per_chunk[0] == 1


def test_the_split_is_inferred_only_when_one_way_divides():
    lay = Layout(gpus=8, pp=4, vp=None, gbs=8)
    assert choose_pipeline_split(lay, 30, "auto")[0].embedding_in_pipeline_split  # only 30 + 2 divides by 4
    assert not choose_pipeline_split(lay, 32, "auto")[0].embedding_in_pipeline_split  # 32 divides: kept as is
    both = Layout(gpus=8, pp=2, gbs=8, embedding_in_pipeline_split=True, loss_in_pipeline_split=True)
    assert choose_pipeline_split(both, 30, "auto")[0].embedding_in_pipeline_split  # both divide: the recipe's
    assert not choose_pipeline_split(both, 30, "plain")[0].embedding_in_pipeline_split  # the flag decides
    with pytest.raises(LayoutError, match="unknown pipeline split"):
        choose_pipeline_split(lay, 30, "sideways")


def test_layers_extend_a_table_whose_rows_change_the_layer_count(capsys):
    with pytest.raises(LayoutError, match="give --layers N"):
        resolve(default_catalog(), "llama3.1", "405b-proxy", "bf16", 256)
    r = resolve(default_catalog(), "llama3.1", "405b-proxy", "bf16", 256, None, {"layers": 62, "gbs": 128})
    assert r.model.layers == 62 and r.layout.gbs == 128 and r.baseline is None
    # At a published scale, another layer count is not the published run: no baseline.
    same = resolve(default_catalog(), "llama3.1", "405b-proxy", "bf16", 128)
    other = resolve(default_catalog(), "llama3.1", "405b-proxy", "bf16", 128, None, {"layers": 30})
    assert same.baseline is not None and other.baseline is None and other.model.layers == 30
    for argv in (["show", "llama3.1", "-s", "405b-proxy", "-n", "256", "--layers", "62", "--gbs", "128", "--json"],
                 ["predict", "llama3.1", "-s", "405b-proxy", "-n", "256", "--layers", "62", "--gbs", "128", "--json"],
                 ["search", "llama3.1", "-s", "405b-proxy", "-n", "128", "--layers", "62", "--top", "1", "--json"]):
        capsys.readouterr()
        assert main(argv) == 0, capsys.readouterr().err
        json.loads(capsys.readouterr().out)


def test_run_takes_layers_for_its_proxy(capsys):
    assert main(["run", "--proxy", "cpu-tiny", "--layers", "6", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["layers"] == 6
    assert main(["run", "--proxy", "cpu-tiny", "--layers", "0", "--dry-run"]) == 1
    assert "LAYERS must be a positive whole number" in capsys.readouterr().err
