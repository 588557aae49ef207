from llmb.catalog import load_catalog


def test_catalog_loads_every_workload():
    catalog = load_catalog()
    assert {"llama3.1", "llama2-maxtext", "nemotron4", "llama4-maverick", "megatron-llama3"} <= set(
        catalog.workloads
    )
    assert {"h100", "h200", "b200", "gb200", "a100"} <= set(catalog.gpus)
