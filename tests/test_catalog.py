"""The catalog holds every seed row, validates it, and our layout algebra agrees with the seeds."""

from __future__ import annotations

import json
import re

import pytest

from llmb.catalog import Workload
from llmb.plan import derive, resolve
from llmb.plan.recipe import layout_from_row


def all_layout_rows(catalog):
    for wl in catalog.workloads.values():
        for size, spec in wl.sizes.items():
            for row in spec.layouts:
                yield wl, size, spec, row


def test_row_counts_match_the_seed_tables(catalog):
    def count(name, kind):
        return sum(len(getattr(s, kind)) for s in catalog.workload(name).sizes.values())

    # Layout rows and baseline columns as printed in ../shared/seeds, plus the rows of
    # ../shared/published/more_published_runs.csv (Llama 3.1 405B GB200: 3 layouts, 6 baselines;
    # Grok-1: 9 NeMo 1 layouts shared by 24.11.1 and 25.02, 1 NeMo 2 layout, 40 baselines),
    # and dgxc-benchmarking v25.05's NeMo 2 tables (Grok-1 GB200: 3 layouts, 6 baselines;
    # Nemotron-4 340B: GB200 3 layouts, H100 1, 8 baselines).
    assert count("llama3.1", "layouts") == 5 + 12 + 3 + 3 + 3
    assert count("llama3.1", "baselines") == 10 + 12 + 12 + 6
    assert count("grok1", "layouts") == 9 + 1 + 3
    assert count("grok1", "baselines") == 36 + 4 + 6
    assert count("llama2-maxtext", "layouts") == 6
    assert count("llama2-maxtext", "baselines") == 12
    assert count("nemotron4", "layouts") == 5 + 4
    assert count("nemotron4", "baselines") == 10 + 8
    assert count("llama4-maverick", "layouts") == 4
    assert count("llama4-maverick", "baselines") == 8
    assert count("megatron-llama3", "layouts") == 3
    assert count("megatron-llama3", "baselines") == 3


def test_every_layout_row_validates_and_matches_the_printed_dp_and_ga(catalog):
    checked = 0
    for wl, size, spec, row in all_layout_rows(catalog):
        model = spec.model.with_layers(row.layers) if row.layers else spec.model
        derived = derive(layout_from_row(row), model)
        if row.published.dp is not None:
            assert derived.dp == row.published.dp, (wl.name, size, row.gpus)
        if row.published.ga is not None:
            assert derived.ga == row.published.ga, (wl.name, size, row.gpus)
        checked += 1
    assert checked == 41 + 3 + 10 + 7


def test_every_baseline_has_a_layout_row(catalog):
    for wl in catalog.workloads.values():
        for size, spec in wl.sizes.items():
            for b in spec.baselines:
                assert any(
                    r.gpu_type == b.gpu_type and b.dtype in r.dtypes and r.gpus == b.gpus
                    and (not r.releases or b.release in r.releases)
                    for r in spec.layouts
                ), (wl.name, size, b.dtype, b.gpus, b.release)


def test_baselines_cite_a_seed_document(catalog):
    for wl in catalog.workloads.values():
        for source in wl.sources.values():
            tagged = re.fullmatch(r"NVIDIA/dgxc-benchmarking \(git tag v([0-9.]+)\) \S+/README\.md", source.document)
            assert (source.document.startswith("seeds/") and source.document.endswith(".md")) or (
                source.document == "published/more_published_runs.csv"
            ) or (tagged is not None and tagged.group(1) == source.release), source.document
            assert source.release, (wl.name, source.document)


def test_every_baseline_names_its_release(catalog):
    # From the seed's container (nemo:25.04.01 -> 25.04.01) or the CSV's release column.
    releases = {(wl.name, b.release) for wl, _, b in catalog.baselines()}
    assert ("llama4-maverick", "25.04.01") in releases
    assert ("nemotron4", "24.09") in releases
    assert ("llama3.1", "25.05") in releases and ("llama3.1", "unstated") in releases
    assert {r for w, r in releases if w == "grok1"} == {"24.11.1", "25.02", "25.05", "25.05.01", "25.05.02"}
    assert {r for w, r in releases if w == "nemotron4"} == {"24.09", "25.05"}
    # One scale of one workload can carry several releases' numbers.
    at512 = [b for b in catalog.workload("grok1").sizes["314b"].baselines if b.gpus == 512 and b.dtype == "bf16" and b.gpu_type == "h100"]
    assert sorted(b.step_time_s for b in at512) == [15.933, 16.930, 20.83, 21.01]


def test_workloads_round_trip_through_json(catalog):
    for wl in catalog.workloads.values():
        again = Workload.model_validate_json(json.dumps(wl.model_dump(mode="json")))
        assert again == wl


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("llama3.1", "llama3.1"),
        ("Llama-3.1", "llama3.1"),
        ("LLAMA31", "llama3.1"),
        ("nemotron4", "nemotron4"),
        ("Nemotron", "nemotron4"),
        ("llama4", "llama4-maverick"),
        ("maverick", "llama4-maverick"),
        ("maxtext", "llama2-maxtext"),
        ("megatron", "megatron-llama3"),
    ],
)
def test_short_names(catalog, typed, expected):
    assert catalog.workload(typed).name == expected


def test_seed_specific_facts(catalog):
    maverick = catalog.workload("llama4").sizes["400b"].model
    assert maverick.moe is not None and maverick.moe.num_experts == 128 and maverick.moe.top_k == 1
    assert maverick.moe_layers == 24
    nemotron = catalog.workload("nemotron4").sizes["340b"].model
    assert nemotron.activation == "squared_relu" and not nemotron.gated
    proxy_rows = catalog.workload("llama3.1").sizes["405b-proxy"].layouts
    assert [r.layers for r in proxy_rows] == [8, 30, 62]
    assert catalog.gpu("gb200").peak_tflops["bf16"] == 2450 and catalog.gpu("gb200").nvlink_domain == 72
    assert catalog.gpu("h100").peak_tflops == {"bf16": 989, "fp8": 1979, "fp32": 67}


def test_405b_needs_embedding_and_loss_in_the_pipeline_split(catalog):
    recipe = resolve(catalog, "llama3.1", "405b", "bf16", 512)
    assert recipe.derived.pipeline_chunks == 64
    assert sum(recipe.derived.layers_per_chunk) == 126
    assert recipe.derived.layers_per_chunk[0] == 1 and recipe.derived.layers_per_chunk[-1] == 1
    # Without Megatron's option 126 layers do not split into 64 chunks.
    from llmb.errors import LayoutError
    from llmb.plan import Layout

    plain = Layout(gpus=512, tp=8, pp=8, cp=2, vp=8, mbs=1, gbs=256)
    with pytest.raises(LayoutError, match=r"layers \(126\) must be divisible by PP\*VP = 8\*8 = 64"):
        derive(plain, recipe.model)


def test_maverick_h100_vp_without_pp_is_a_warning(catalog):
    recipe = resolve(catalog, "llama4", "400b", "fp8", 512, "h100")
    assert recipe.derived.vp == 1
    assert any("no effect with PP=1" in n for n in recipe.notes)
    assert recipe.derived.edp == 1 and recipe.derived.dp == 128
