"""Hugging Face checkpoints in and out, and ``llmb eval``, against transformers 5.23.0.

- export: a trained llmb checkpoint -> ``llmb ckpt export --to hf`` ->
  ``AutoModelForCausalLM.from_pretrained`` gives the engine's logits (every family);
- in: ``save_pretrained`` of a tiny random transformers model -> ``llmb eval --init-from
  hf:DIR`` gives transformers' own loss on the same windows (1e-4), and ``llmb run --init-from
  hf:DIR`` starts from exactly those weights (its first loss is transformers' on that batch);
- every mistake planning can see is one line before anything loads.
The multi-rank loads (each rank reading its shards only) are in ``test_engine_parity.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from llmb.cli import main  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOL = 1e-5
EVAL_TOL = 1e-4


def _cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _trained_checkpoint(tmp_path: Path, workload: str, steps: int = 2) -> Path:
    from llmb.engine.checkpoint import Checkpointer
    from llmb.engine.parallel import build_parallel
    from llmb.engine.train import Trainer
    from llmb.plan.run import RunRequest, resolve_run

    run = resolve_run(RunRequest(workload=workload, proxy="cpu-tiny", dtype="fp32", nproc=1, steps=4,
                                 overrides={"mbs": 2, "gbs": 2}))
    trainer = Trainer(run, build_parallel(run.parallel_dims), torch.device("cpu"))
    for _ in range(steps):
        trainer.step()
    root = tmp_path / "run" / "checkpoints"
    Checkpointer(root, 0, {"model": run.model.model_dump(mode="json")}, log=lambda _: None).save(
        trainer.state_dict(), steps)
    return root / f"step_{steps:08d}"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("workload", ["llama3.1", "llama2-maxtext", "llama4-maverick", "nemotron4"])
def test_export_then_transformers_gives_the_engines_logits(workload, tmp_path, capsys):
    from llmb.engine.pretrained import checkpoint_spec, load_pretrained
    from llmb.plan.pretrained import parse_init_source

    ckpt = _trained_checkpoint(tmp_path, workload)
    out = tmp_path / "hf"
    code, stdout, err = _cli(["ckpt", "export", str(ckpt), "--to", "hf", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    written = json.loads(stdout)
    assert {Path(f).name for f in written["files"]} == {"config.json", "model.safetensors"}
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), attn_implementation="eager").float()
    spec = checkpoint_spec(ckpt)
    engine = load_pretrained(parse_init_source(str(ckpt)), spec)
    tokens = torch.randint(0, spec.vocab, (2, spec.seq_len), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        rel = _rel(engine(tokens), hf(input_ids=tokens).logits)
    print(f"{workload}: export -> transformers logits, max rel diff {rel:.2e}")
    assert rel <= TOL


def test_export_in_bf16_and_sharded(tmp_path):
    from llmb.engine.checkpoint import model_tensor_names, read_model_tensors
    from llmb.engine.hf import INDEX_FILE, export_hf
    from llmb.engine.pretrained import checkpoint_spec

    ckpt = _trained_checkpoint(tmp_path, "llama4-maverick", steps=1)
    spec = checkpoint_spec(ckpt)
    files = export_hf(spec, lambda names: read_model_tensors(ckpt, names), model_tensor_names(ckpt),
                      tmp_path / "hf", torch.bfloat16, shard_bytes=200_000)
    assert (tmp_path / "hf" / INDEX_FILE) in files and len(files) > 3
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    assert hf.dtype == torch.bfloat16
    want = read_model_tensors(ckpt, ["layers.1.feed_forward.experts.w3"])["layers.1.feed_forward.experts.w3"]
    got = hf.model.layers[1].feed_forward.experts.gate_up_proj[..., want.shape[-1]:]
    assert torch.equal(got, want.to(torch.bfloat16))


# -- transformers checkpoints in -----------------------------------------------------------------

def _hf_tiny(kind: str):
    common = dict(vocab_size=256, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=64)
    if kind == "llama3.1":
        cfg = transformers.LlamaConfig(**common, intermediate_size=160, rms_norm_eps=1e-5, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    elif kind == "nemotron4":
        cfg = transformers.NemotronConfig(**common, intermediate_size=256)
    else:
        cfg = transformers.Llama4TextConfig(**common, head_dim=16, intermediate_size=96, intermediate_size_mlp=192,
                                            num_local_experts=4, interleave_moe_layer_step=2, use_qk_norm=False)
    torch.manual_seed(1)
    model = {"llama3.1": transformers.LlamaForCausalLM, "nemotron4": transformers.NemotronForCausalLM,
             "llama4-maverick": transformers.Llama4ForCausalLM}[kind](cfg).float()
    with torch.no_grad():  # transformers' init leaves norms at 1 (Nemotron's 1P at 0): move them
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _dataset(prefix: Path, vocab: int, tokens: int = 2000) -> np.ndarray:
    from llmb.data.indexed import IndexedDatasetWriter

    rng = np.random.default_rng(3)
    stream = rng.integers(0, vocab, tokens)
    with IndexedDatasetWriter(prefix, vocab_size=vocab) as w:
        for doc in np.array_split(stream, 17):  # documents of unequal length: the stream ignores them
            w.add_document(doc)
    return stream


@pytest.mark.parametrize("kind", ["llama3.1", "llama4-maverick", "nemotron4"])
def test_eval_of_a_transformers_checkpoint_gives_transformers_loss(kind, tmp_path, capsys):
    hf = _hf_tiny(kind)
    hf.save_pretrained(tmp_path / "hf")
    stream = _dataset(tmp_path / "data", 256)
    n, s = 5, 24
    code, out, err = _cli(["eval", "--init-from", f"hf:{tmp_path / 'hf'}", "--data", str(tmp_path / "data"),
                           "--batches", str(n), "--seq-len", str(s), "--mbs", "2", "--json"], capsys)
    assert code == 0, err
    got = json.loads(out)
    hf.eval()
    with torch.no_grad():  # window k: tokens k*s .. k*s+s (s+1 tokens); transformers shifts the labels
        windows = torch.tensor(np.stack([stream[k * s : k * s + s + 1] for k in range(n)]))
        want = float(hf(input_ids=windows, labels=windows).loss)
    print(f"{kind}: llmb eval {got['loss']:.8f}, transformers {want:.8f}")
    assert got["tokens_scored"] == n * s and got["seq_len"] == s
    assert abs(got["loss"] - want) <= EVAL_TOL * want


def test_eval_of_a_llmb_checkpoint_equals_eval_of_its_export(tmp_path, capsys):
    ckpt = _trained_checkpoint(tmp_path, "llama4-maverick", steps=2)
    assert _cli(["ckpt", "export", str(ckpt), "--out", str(tmp_path / "hf")], capsys)[0] == 0
    _dataset(tmp_path / "data", 512)
    args = ["--data", str(tmp_path / "data"), "--batches", "3", "--json"]
    results = {}
    for name, source, extra in [("llmb", str(ckpt), []), ("hf", f"hf:{tmp_path / 'hf'}", ["--seq-len", "64"]),
                                ("llmb-bf16", str(ckpt), ["--dtype", "bf16"])]:
        code, out, err = _cli(["eval", "--init-from", source, *args, *extra], capsys)
        assert code == 0, err
        results[name] = json.loads(out)
    assert results["llmb"]["seq_len"] == 64  # the checkpoint's own sequence length by default
    assert abs(results["llmb"]["loss"] - results["hf"]["loss"]) <= 1e-6 * results["hf"]["loss"]
    assert abs(results["llmb-bf16"]["loss"] - results["llmb"]["loss"]) <= 2e-2 * results["llmb"]["loss"]


def test_run_init_from_hf_starts_from_those_weights(tmp_path, capsys, monkeypatch):
    """The first step's loss (before any update) is transformers' loss on that batch."""
    import torch.nn.functional as F

    from llmb.engine.data.synthetic import SyntheticTokens
    from llmb.engine.hf import to_hf
    from llmb.engine.models.transformer import build_model
    from llmb.plan.run import RunRequest, resolve_run

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "exp"))
    run = resolve_run(RunRequest(workload="llama4-maverick", proxy="cpu-tiny", dtype="fp32", nproc=1, steps=1,
                                 overrides={"mbs": 2, "gbs": 4}))
    spec = run.model
    model = build_model(spec, "cpu")
    model.init_weights(seed=99)  # other weights than the run's own seed would give
    weights: dict[str, torch.Tensor] = {}
    for fqn, p in model.named_parameters():
        to_hf(spec, fqn, p.detach(), weights)
    from llmb.catalog.hf_config import hf_config_from_spec

    cfg = transformers.AutoConfig.for_model(**hf_config_from_spec(spec))
    hf = transformers.AutoModelForCausalLM.from_config(cfg).float()
    hf.load_state_dict(weights, strict=True)
    hf.save_pretrained(tmp_path / "hf")
    code, out, err = _cli(["run", "llama4-maverick", "--proxy", "cpu-tiny", "--dtype", "fp32", "--steps", "1",
                           "--mbs", "2", "--gbs", "4", "--init-from", f"hf:{tmp_path / 'hf'}", "--json"], capsys)
    assert code == 0, err
    first = json.loads(out)["first_loss"]
    data = SyntheticTokens(vocab=spec.vocab, seq_len=spec.seq_len, micro_batch=2, ga=2, dp_rank=0, dp_size=1,
                           seed=run.request.seed)
    batches = data.step_batches(0)
    with torch.no_grad():
        total = sum(F.cross_entropy(hf(input_ids=t).logits.flatten(0, 1), lab.flatten(), reduction="sum")
                    for t, lab in batches) / (4 * spec.seq_len)
    assert "Initialized from hf:" in err
    assert abs(first - float(total)) <= TOL * float(total), (first, float(total))


def test_run_init_from_a_llmb_checkpoint_takes_its_weights_only(tmp_path, capsys, monkeypatch):
    """Weights from a llmb checkpoint, optimizer and data anew: the first loss is that of the
    checkpoint's model on the run's first batch."""
    import torch.nn.functional as F

    from llmb.engine.data.synthetic import SyntheticTokens
    from llmb.engine.pretrained import checkpoint_spec, load_pretrained
    from llmb.plan.pretrained import parse_init_source

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "exp"))
    ckpt = _trained_checkpoint(tmp_path, "nemotron4", steps=2)
    code, out, err = _cli(["run", "nemotron4", "--proxy", "cpu-tiny", "--dtype", "fp32", "--steps", "1", "--mbs", "2",
                           "--gbs", "2", "--init-from", str(ckpt), "--json"], capsys)
    assert code == 0, err
    spec = checkpoint_spec(ckpt)
    model = load_pretrained(parse_init_source(str(ckpt)), spec)
    ((tokens, labels),) = SyntheticTokens(vocab=spec.vocab, seq_len=spec.seq_len, micro_batch=2, ga=1,
                                          seed=1234).step_batches(0)
    with torch.no_grad():
        want = float(F.cross_entropy(model(tokens).flatten(0, 1), labels.flatten()))
    assert abs(json.loads(out)["first_loss"] - want) <= TOL * want


# -- one-line refusals ---------------------------------------------------------------------------

def test_init_from_and_eval_mistakes_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "exp"))
    hf = _hf_tiny("llama3.1")
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "empty").mkdir()
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    _dataset(tmp_path / "data", 256, tokens=100)
    hfdir = f"hf:{tmp_path / 'hf'}"
    capsys.readouterr()  # transformers' own progress output from saving
    cases = [
        (["run", "--proxy", "cpu-tiny", "--init-from", "hf:" + str(tmp_path / "missing"), "--dry-run"], "no such folder"),
        (["run", "--proxy", "cpu-tiny", "--init-from", "hf:" + str(tmp_path / "empty"), "--dry-run"], "no config.json"),
        (["run", "--proxy", "cpu-tiny", "--init-from", "hf:" + str(tmp_path / "noweights"), "--dry-run"], "the weights"),
        (["run", "--proxy", "cpu-tiny", "--init-from", hfdir, "--dry-run"], "is another model than this run's: ffn_hidden"),
        (["run", "--proxy", "cpu-tiny", "--init-from", hfdir, "--resume", "--dry-run"], "give one"),
        (["eval", "--init-from", hfdir, "--data", str(tmp_path / "data"), "--batches", "9"], "need 577"),
        (["eval", "--init-from", hfdir, "--data", str(tmp_path / "data"), "--batches", "0"], "--batches must be"),
        (["eval", "--init-from", hfdir, "--data", str(tmp_path / "nodata"), "--batches", "1"], "no indexed dataset"),
        (["ckpt", "export", str(tmp_path / "exp"), "--out", str(tmp_path / "x")], "does not exist"),
        (["ckpt", "export", str(tmp_path), "--to", "gguf", "--out", str(tmp_path / "x")], "the one export format is hf"),
    ]
    for argv, needle in cases:
        code, out, err = _cli(argv, capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 1 and len(lines) == 1 and needle in lines[0], (argv, code, err)
    assert not (tmp_path / "exp").exists()  # nothing was written


def test_export_refuses_a_non_empty_folder(tmp_path, capsys):
    ckpt = _trained_checkpoint(tmp_path, "llama3.1", steps=1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    code, _, err = _cli(["ckpt", "export", str(ckpt), "--out", str(tmp_path / "out")], capsys)
    assert code == 1 and "not an empty folder" in err
