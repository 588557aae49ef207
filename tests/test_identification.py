"""Which workloads identify which fitted parameter (llmb.plan.identification): the measure on
matrices whose answer is known, then on the catalog."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmb.catalog import default_catalog
from llmb.plan import calibrate as cal
from llmb.plan.identification import conditional_information, information_lost, lost_shares


def test_a_parameter_only_one_group_moves_is_lost_without_it():
    # Parameter 0 moves group A's rows only, parameter 1 group B's only.
    jac = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    shares = lost_shares(jac, np.ones(4), ["A", "A", "B", "B"])
    assert shares == pytest.approx(np.array([[1.0, 0.0], [0.0, 1.0]]))  # rows: without A, without B
    # Both groups move parameter 1, B's row three times as much: 9 of its 10 units of information.
    jac = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    shares = lost_shares(jac, np.ones(3), ["A", "A", "B"])
    assert shares == pytest.approx(np.array([[1.0, 0.1], [0.0, 0.9]]))


def test_collinear_parameters_need_the_group_that_separates_them():
    """Conditional information: two parameters that group A moves alike (a product, say) are
    told apart only by group B, so each is lost without B although B moves only one of them."""
    jac = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    shares = lost_shares(jac, np.ones(3), ["A", "A", "B"])
    assert shares[1] == pytest.approx([1.0, 1.0])
    assert conditional_information(jac[:2].T @ jac[:2]) == pytest.approx([0.0, 0.0], abs=1e-9)


def test_the_catalog_identifies_the_dense_parameters_without_any_one_workload():
    """On the catalog at the stored fit: GEMM, attention, HBM and overlap parameters keep most
    of their information whichever workload is left out; the router skew is unidentified
    without Llama 4 Maverick (Grok-1's capacity factor 1.0 makes its rows blind to it)."""
    lost = information_lost(cal.samples(default_catalog()), cal.stored_efficiency())
    assert set(lost) == set(cal.BOUNDS)
    for name in ("gemm_bf16", "gemm_fp8", "gemm_knee", "knee_exponent", "attention", "hbm", "overlap"):
        assert max(lost[name].values()) < 0.9, (name, lost[name])
    assert lost["expert_load_cv"]["llama4-maverick"] >= 0.9
    assert lost["attention_flash"]["megatron-llama3"] < 0.1  # it never selects flash-attn


def test_calibrate_reports_the_identification(capsys):
    from llmb.cli import main

    assert main(["calibrate", "--json"]) == 0
    ident = json.loads(capsys.readouterr().out)["identification"]
    assert set(ident["information_lost_without"]) == set(cal.BOUNDS)
    assert "llama4-maverick" in ident["unidentified_without"]["expert_load_cv"]
    # GB200's rows alone cannot identify thirteen parameters; without them the knee's peak
    # scaling (H100 FP8's doubled peak aside) is mostly the prior's.
    by_gpu = ident["information_lost_without_gpu_type"]
    assert all(v["h100"] >= 0.99 for v in by_gpu.values())
    assert by_gpu["knee_exponent"]["gb200"] >= 0.9 > by_gpu["link"]["gb200"]
