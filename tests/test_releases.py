"""Recipe releases: every baseline names the release it is from, one workload carries several
releases' numbers, ``--release`` picks one (default: the newest published at that scale), and
show / predict / compare / report say which release a number is from."""

from __future__ import annotations

import json

from llmb.catalog.schema import newest_release, release_key
from llmb.cli import main
from llmb.plan.recipe import resolve


def test_release_order_is_numeric():
    assert sorted(["25.05.02", "24.11.1", "25.02", "25.05.01", "unstated"], key=release_key) == [
        "unstated", "24.11.1", "25.02", "25.05.01", "25.05.02"]
    assert newest_release(["25.02", "25.05.01", "24.11.1"]) == "25.05.01"
    assert newest_release([]) is None


def test_default_is_the_newest_release_at_that_scale(catalog):
    r = resolve(catalog, "grok1", "314b", "bf16", 512)
    assert (r.release, r.baseline.step_time_s, r.derived.etp) == ("25.05.02", 15.933, 1)
    # below 512 GPUs only NeMo 1 published (the reduced-layer proxies): its newest release
    r8 = resolve(catalog, "grok1", "314b", "bf16", 8)
    assert (r8.release, r8.baseline.step_time_s, r8.model.layers, r8.model.seq_len) == ("25.02", 24.0, 2, 4096)


def test_release_selects_layout_and_baseline(catalog):
    for release, step, etp in (("24.11.1", 20.83, 4), ("v25.02", 21.01, 4), ("25.05.01", 16.93, 1)):
        r = resolve(catalog, "grok1", "314b", "bf16", 512, release=release)
        assert (r.baseline.step_time_s, r.derived.etp) == (step, etp), release
        assert r.baseline.release == release.lstrip("v")
    # NeMo 2 published only 512 GPUs; its release weak-scales from that row
    r = resolve(catalog, "grok1", "314b", "fp8", 1024, release="25.05.02")
    assert r.baseline is None and r.layout.gbs == 2048 and r.derived.etp == 1


def test_existing_workloads_keep_their_defaults(catalog):
    r = resolve(catalog, "llama3.1", "405b", "bf16", 512)
    assert (r.release, r.baseline.step_time_s, r.gpu_type) == ("unstated", 19.78, "h100")
    g = resolve(catalog, "llama3.1", "405b", "fp8", 256, "gb200")
    assert (g.release, g.baseline.step_time_s, g.layout.tp, g.derived.ga) == ("25.05", 6.183, 4, 32)
    assert resolve(catalog, "llama4", "400b").release == "25.04.01"


def test_show_says_the_release(capsys):
    assert main(["show", "grok1", "-n", "512", "--release", "25.02"]) == 0
    out = capsys.readouterr().out
    assert "release: 25.02 (also published: 24.11.1, 25.05, 25.05.01, 25.05.02; --release)" in out
    assert "release 25.02" in out and "21.01" in out
    assert main(["show", "grok1", "-n", "512", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["release"] == "25.05.02" and data["baseline"]["release"] == "25.05.02"


def test_predict_says_the_release(capsys):
    assert main(["predict", "grok1", "-s", "314b", "-n", "512", "--release", "24.11.1"]) == 0
    assert "published (24.11.1)" in capsys.readouterr().out


def test_compare_reference_names_the_release(catalog):
    from llmb.results.compare import baseline_for

    run = {"workload": "grok1", "size": "314b", "dtype": "fp8", "gpus": 512, "gpu_type": "h100"}
    newest, _ = baseline_for(run, catalog)
    older, _ = baseline_for(run, catalog, "25.02")
    assert "release 25.05.02" in newest.label and newest.step_time_s == 13.433
    assert "release 25.02" in older.label and older.step_time_s == 16.90
