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


def test_the_catalog_identifies_the_fitted_parameters_without_any_one_workload():
    """On the catalog at the stored fit: the GEMM, attention, HBM, overlap and ring-step
    parameters keep at least a tenth of their information whichever workload is left out. No
    fitted parameter is MoE-specific: the grouped-GEMM factors and the router skew, each of
    which only one workload informed, are held, and so is the knee's peak scaling, which
    rested on GB200. The NCCL bus efficiency is the exception: MaxText's FSDP rows carry 0.90
    of it."""
    lost = information_lost(cal.samples(default_catalog()), cal.stored_efficiency())
    assert set(lost) == set(cal.BOUNDS)
    assert not {"expert_gemm", "expert_knee", "expert_fp8", "expert_load_cv", "knee_exponent"} & set(cal.BOUNDS)
    for name in set(cal.BOUNDS) - {"link"}:
        assert max(lost[name].values()) < 0.9, (name, lost[name])
    assert lost["link"]["llama2-maxtext"] < 0.95
    assert lost["attention_flash"]["megatron-llama3"] < 0.1  # it never selects flash-attn


def test_calibrate_reports_the_identification(capsys):
    from llmb.cli import main

    assert main(["calibrate", "--json"]) == 0
    ident = json.loads(capsys.readouterr().out)["identification"]
    assert set(ident["information_lost_without"]) == set(cal.BOUNDS)
    assert ident["unidentified_without"] == {"link": ["llama2-maxtext"]}
    # GB200's 24 rows alone cannot identify the fitted parameters; H100's rows identify them
    # all, none losing more than 0.9 without GB200's.
    by_gpu = ident["information_lost_without_gpu_type"]
    assert all(v["h100"] >= 0.95 for v in by_gpu.values())
    assert all(v["gb200"] < 0.9 for v in by_gpu.values())
