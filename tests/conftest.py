from __future__ import annotations

import pytest

from llmb.catalog import Catalog, load_catalog


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's ~/.llmb."""
    monkeypatch.setenv("LLMB_HOME", str(tmp_path_factory.mktemp("llmb_home")))


@pytest.fixture
def one_torch_thread():
    """One torch thread per process: the machine's cores are shared by the ranks a test starts."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
