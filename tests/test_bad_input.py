"""The failure policy, command by command: a user's mistake is exit 1 and one line naming the
value or file and what is allowed; nothing is created before the input is checked; never a
traceback. (System failures, exit 2, are in test_failures.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmb.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "llmb" / "data" / "sample" / "prose.jsonl"
TINY = ["--proxy", "cpu-tiny", "--steps", "2"]


def _files(tmp: Path) -> dict[str, str]:
    """Bad files, by name, for the cases below ({name} in an argument is replaced by its path)."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(12))
    made = {
        "bomb.yaml": bomb.encode(),
        "deep.yaml": b"[" * 5000 + b"]" * 5000,
        "utf16.yaml": "runs: []".encode("utf-16"),
        "binary.yaml": bytes(range(256)),
        "latin1.yaml": "runs: [caf\xe9]".encode("latin-1"),
        "malformed.yaml": b"runs: [\n  - {workload: llama3.1\n",
        "unknown_key.yaml": b"runs:\n  - {workload: llama3.1, size: 8b, colour: red}\n",
        "empty_runs.yaml": b"runs: []\n",
        "cpu_cluster.yaml": (f"version: 1\ninstall_path: {tmp}\nexperiments_path: {tmp / 'exp'}\n"
                             "accelerator: cpu\ngpus_per_node: 2\n").encode(),
        "not_a_log.txt": b"hello\nworld\n",
        "trace.json": json.dumps({"traceEvents": [{"name": "ncclKernel_AllReduce", "ph": "X", "ts": "soon",
                                                   "dur": "long", "args": {"In msg nelems": "many"}}]}).encode(),
        "garbage.db": b"this is not a database" * 100,
    }
    (tmp / "catalog_bomb").mkdir()
    (tmp / "catalog_bomb" / "w.yaml").write_bytes(made["bomb.yaml"])
    (tmp / "catalog_deep").mkdir()
    (tmp / "catalog_deep" / "w.yaml").write_bytes(made["deep.yaml"])
    (tmp / "catalog_binary").mkdir()
    (tmp / "catalog_binary" / "w.yaml").write_bytes(made["binary.yaml"])
    (tmp / "adir").mkdir()
    out = {}
    for name, data in made.items():
        (tmp / name).write_bytes(data)
        out[name.split(".")[0]] = str(tmp / name)
    out.update(catalog_bomb=str(tmp / "catalog_bomb"), catalog_deep=str(tmp / "catalog_deep"),
               catalog_binary=str(tmp / "catalog_binary"), adir=str(tmp / "adir"), tmp=str(tmp),
               sample=str(SAMPLE))
    return out


# (argv, environment, what the one line must say)
CASES = [
    # llmb run: numbers
    (["run", *TINY, "--nproc", "0"], {}, "--nproc must be a positive whole number, got 0"),
    (["run", *TINY, "--nproc", "-1"], {}, "--nproc must be a positive whole number"),
    (["run", *TINY, "--nproc", "100000"], {}, "a local CPU run takes at most"),
    (["run", *TINY, "--lr", "nan"], {}, "learning rate (--lr) must be a finite number > 0"),
    (["run", *TINY, "--lr", "inf"], {}, "learning rate (--lr) must be a finite number > 0"),
    (["run", *TINY, "--lr", "-1"], {}, "learning rate (--lr) must be a finite number > 0"),
    (["run", *TINY, "--lr", "0"], {}, "learning rate (--lr) must be a finite number > 0"),
    (["run", *TINY, "--lr", "abc"], {}, "Invalid value for '--lr'"),
    (["run", *TINY, "--seed", "-1"], {}, "--seed must be a whole number from 0"),
    (["run", *TINY, "--seed", "1e23"], {}, "Invalid value for '--seed'"),
    (["run", *TINY, "--seed", "100000000000000000000000"], {}, "--seed must be a whole number from 0"),
    (["run", "--proxy", "cpu-tiny", "--steps", "0"], {}, "--steps (MAX_STEPS) must be a whole number from 1"),
    (["run", "--proxy", "cpu-tiny", "--steps", "100000000000"], {}, "to 10,000,000"),
    (["run", "--proxy", "cpu-tiny", "--steps", "1e30"], {}, "Invalid value for '--steps'"),
    (["run", *TINY, "--warmup-steps", "-1"], {}, "--warmup-steps must be a whole number >= 0"),
    (["run", *TINY, "--warmup-steps", "5"], {}, "warm-up steps (5) must be fewer than the run's steps (2)"),
    (["run", *TINY, "--window", "0"], {}, "--window must be a positive whole number"),
    (["run", *TINY, "--pg-timeout-s", "0"], {}, "--pg-timeout-s must be a finite number of seconds > 0"),
    (["run", *TINY, "--pg-timeout-s", "inf"], {}, "--pg-timeout-s must be a finite number of seconds > 0"),
    # llmb run: layout
    (["run", *TINY, "--tp", "0"], {}, "TP must be a positive whole number"),
    (["run", *TINY, "--tp", "3", "--nproc", "3"], {}, "divisible"),
    (["run", *TINY, "--mbs", "0"], {}, "MBS must be a positive whole number"),
    (["run", *TINY, "--gbs", "3"], {}, "GBS (3) must be divisible by MBS*DP"),
    (["run", *TINY, "--ep", "2", "--nproc", "2"], {}, "EP (2) needs a mixture-of-experts model"),
    (["run", "llama3.1", "--size", "70b", *TINY, "--vp", "3", "--nproc", "2"], {}, "must be divisible by PP*VP"),
    # llmb run: names
    (["run", "nope", *TINY], {}, "nope"),
    (["run", *TINY, "--size", "3b"], {}, "3b"),
    (["run", *TINY, "--dtype", "fp16"], {}, "unknown dtype 'fp16'"),
    (["run", *TINY, "--dtype", "fp8"], {}, "fp8 needs a CUDA GPU"),
    (["run", "--proxy", "nope"], {}, "unknown proxy 'nope'"),
    (["run", *TINY, "--gpu-type", "tpu"], {}, "tpu"),
    (["run", *TINY, "--flops", "bogus"], {}, "unknown FLOPs convention 'bogus'"),
    (["run", "--proxy", "none", "--nproc", "3"], {}, "not expected to fit on 3"),
    (["run", "--proxy", "none", "--nproc", "3", "--tp", "1"], {}, "GPUs (3) must be divisible by TP*CP*PP"),
    # llmb run: files
    (["run", *TINY, "--load", "{tmp}/nothing"], {}, "does not exist"),
    (["run", *TINY, "--load", "{adir}"], {}, "no complete checkpoint in"),
    (["run", *TINY, "--resume"], {}, "--resume: no complete checkpoint in earlier runs"),
    (["run", *TINY, "--resume", "--load", "{adir}"], {}, "give one"),
    (["run", *TINY, "--data", "{tmp}/nothing"], {}, "no indexed dataset"),
    (["run", *TINY, "--data", "sample"], {}, "beyond the model's vocabulary of 512"),
    # llmb run: checkpoint and profiling options
    (["run", *TINY, "--keep-last", "2"], {}, "--keep-last needs checkpoints"),
    (["run", *TINY, "--async-save"], {}, "--async-save needs checkpoints"),
    (["run", *TINY, "--max-restarts", "1", "--nproc", "2"], {}, "add --save-every"),
    (["run", *TINY, "--max-restarts", "-1"], {}, "--max-restarts must be >= 0"),
    (["run", *TINY, "--save-every", "0"], {}, "save-every must be a positive whole number"),
    (["run", *TINY, "--profile", "--profile-ranks", "x"], {}, "--profile-ranks takes rank numbers"),
    (["run", *TINY, "--profile", "--profile-ranks", "5"], {}, "the run has ranks 0..0"),
    (["run", *TINY, "--profile", "--profile-start-step", "3"], {}, "must lie within the run's steps 1..2"),
    (["run", *TINY, "--memory-snapshot"], {}, "add --profile"),
    # llmb run: the recipes' environment variables
    (["run", *TINY], {"TP": "x"}, "TP must be a positive whole number, got 'x'"),
    (["run", "--proxy", "cpu-tiny"], {"MAX_STEPS": "0"}, "MAX_STEPS must be a positive whole number"),
    (["run", "--proxy", "cpu-tiny"], {"MAX_STEPS": "1.5"}, "MAX_STEPS must be a positive whole number"),
    (["run", *TINY], {"JOB_TOTAL_GPUS": "-1"}, "JOB_TOTAL_GPUS must be a positive whole number"),
    (["run", *TINY], {"JOB_TOTAL_GPUS": "16", "GPUS_PER_NODE": "8"}, "spans several nodes"),
    (["run", *TINY], {"ENABLE_PROFILE": "maybe"}, "ENABLE_PROFILE must be true or false"),
    (["run", *TINY], {"ENABLE_CHECKPOINT": "maybe"}, "ENABLE_CHECKPOINT must be true or false"),
    (["run", *TINY], {"DTYPE": "fp7"}, "unknown dtype 'fp7'"),
    (["run", *TINY], {"LOAD_CHECKPOINT_PATH": "{tmp}/nothing"}, "does not exist"),
    (["run", *TINY], {"GBS": "0"}, "GBS must be a positive whole number"),
    (["run", *TINY], {"CP": "-2"}, "CP must be a positive whole number"),
    (["run", *TINY], {"GPU_TYPE": "tpu"}, "tpu"),
    (["run", *TINY], {"MODEL_SIZE": "3b"}, "3b"),
    (["run", *TINY], {"PROFILE_START_STEP": "x"}, "PROFILE_START_STEP must be a positive whole number"),
    (["predict", "llama3.1", "-s", "8b", "--dtype", "fp9"], {}, "fp9"),
    (["search", "llama3.1", "-s", "8b", "--gpu-type", "nope"], {}, "nope"),
    (["show", "llama3.1", "-s", "8b", "--dtype", "fp4"], {}, "fp4"),
    # --release: one line naming the releases the workload publishes
    (["show", "grok1", "--release", "26.01"], {}, "grok1 314b has no release '26.01' (releases: 24.11.1, 25.02, 25.05, 25.05.01, 25.05.02)"),
    (["predict", "grok1", "-s", "314b", "-n", "512", "--release", "v9"], {}, "(releases: 24.11.1, 25.02, 25.05, 25.05.01, 25.05.02)"),
    (["search", "llama4", "-s", "400b", "--release", "25.02"], {}, "llama4-maverick 400b has no release '25.02' (releases: 25.04.01)"),
    (["compare", "--workload", "grok1", "--release", "1.0"], {}, "grok1 has no release '1.0' (releases: 24.11.1, 25.02, 25.05, 25.05.01, 25.05.02)"),
    (["report", "--workload", "nemotron4", "--release", "25.02"], {}, "nemotron4 has no release '25.02' (releases: 24.09, 25.05)"),
    (["run", "grok1", "--release", "24.01", "--dry-run"], {}, "grok1 314b has no release '24.01' (releases: 24.11.1, 25.02, 25.05, 25.05.01, 25.05.02)"),
    (["submit", "grok1", "-n", "512", "--release", "x", "--dry-run"], {}, "grok1 314b has no release 'x'"),
    (["show", "llama3.1", "-s", "405b-proxy", "-n", "256"], {}, "no rule extends them to 256 GPUs"),
    (["data", "info", "{not_a_log}"], {}, "no indexed dataset"),
    (["report", "{not_a_log}", "--out", "{not_a_log}"], {}, "cannot create"),
    (["parse", "{not_a_log}", "--gpus", "0"], {}, "Invalid value for '--gpus'"),
    # planning commands
    (["show", "llama3.1", "-s", "8b", "-n", "0"], {}, "GPUs must be a positive whole number"),
    (["show", "llama3.1", "-s", "8b", "-n", "100000000000000000000000000000"], {}, "GPUs must be at most 1,000,000"),
    (["show", "llama3.1", "-s", "8b", "-n", "1e30"], {}, "Invalid value for '--gpus'"),
    (["show", "nope"], {}, "nope"),
    (["show", "llama3.1"], {}, "choose one with --size"),
    (["show", "llama3.1", "-s", "70b", "-n", "64", "--tp", "3"], {}, "must be divisible by TP*CP*PP"),
    (["show", "llama3.1", "-s", "70b", "-n", "48", "--tp", "3", "--pp", "4", "--cp", "1", "--vp", "1"], {},
     "attention heads (64) must be divisible by TP (3)"),
    (["predict", "llama3.1", "-s", "8b", "--gpus", "100000000000000000000000000000"], {}, "GPUs must be at most"),
    (["predict", "llama3.1", "-s", "8b", "--recompute", "bogus"], {}, "bogus"),
    (["predict", "llama3.1", "-s", "8b", "--gpu-type", "tpu"], {}, "tpu"),
    (["search", "llama3.1", "-s", "8b", "--gpus", "100000000000000000000000000000"], {}, "GPUs must be at most"),
    (["search", "llama3.1", "-s", "8b", "--top", "0"], {}, "0"),
    # results commands
    (["parse", "{tmp}/nothing.log"], {}, "nothing.log"),
    (["parse", "{not_a_log}", "--format", "bogus"], {}, "bogus"),
    (["parse", "{not_a_log}", "--window", "9:3"], {}, "window 9:3 is empty or negative"),
    (["parse", "{not_a_log}", "--window", "x"], {}, "window 'x' must look like A:B"),
    (["parse", "{not_a_log}", "--layout", "tp=x"], {}, "layout 'tp=x' must look like tp=2,pp=4,gbs=256"),
    (["parse", "{not_a_log}", "--layout", "colour=1"], {}, "unknown layout knob 'colour'"),
    (["parse", "{not_a_log}", "--convention", "bogus"], {}, "unknown FLOPs convention 'bogus'"),
    (["parse", "{not_a_log}", "--json", "--csv"], {}, "choose one of --json and --csv"),
    (["compare"], {}, "holds no runs"),
    (["compare", "--convention", "bogus"], {}, "unknown FLOPs convention 'bogus'"),
    (["compare", "--window", "9:3"], {}, "window 9:3 is empty or negative"),
    (["compare", "--tolerance", "0"], {}, "--tolerance must be a fraction"),
    (["compare", "no-such-run"], {}, "no-such-run"),
    (["compare", "--against", "a", "--set", "b"], {}, "choose one of --against and --set"),
    (["report"], {}, "no stored runs match"),
    (["report", "--convention", "bogus"], {}, "unknown FLOPs convention 'bogus'"),
    (["report", "--tolerance", "-1"], {}, "--tolerance must be a fraction"),
    (["import", "{tmp}/nothing.log"], {}, "nothing.log"),
    (["jobs", "list", "--status", "BOGUS"], {}, "unknown status 'BOGUS'"),
    (["jobs", "show", "no-such-run"], {}, "no-such-run"),
    (["jobs", "log", "no-such-run"], {}, "no-such-run"),
    (["trace", "{tmp}/nothing"], {}, "nothing"),
    (["trace", "{not_a_log}"], {}, "not_a_log.txt: no NCCL INFO collective lines"),
    (["trace", "{trace}"], {}, "1 with non-numeric fields were skipped"),
    (["trace", "{adir}"], {}, "no profiler traces (profiles/) or NCCL logs (nccl/) in this folder"),
    # launching
    (["submit", "llama3.1", "-s", "8b", "--scale", "8", "--config", "{tmp}/nothing.yaml", "--dry-run"], {},
     "no cluster configuration at"),
    (["submit", "llama3.1", "-s", "8b", "--scale", "8", "--dry-run"], {"LLMB_CLUSTER_CONFIG": "{tmp}/nothing.yaml"},
     "LLMB_CLUSTER_CONFIG names it"),
    (["submit", "llama3.1", "-s", "8b", "--scale", "100000000000000000000000000000", "--dry-run"], {},
     "GPUs must be at most"),
    (["submit", "llama3.1", "-s", "8b", "--scale", "0", "--dry-run"], {}, "0"),
    (["submit", "llama3.1", "-s", "8b", "--scale", "12", "--gpus-per-node", "8", "--dry-run"], {},
     "12 GPUs do not fill whole nodes of 8"),
    (["submit", "llama3.1", "-s", "8b", "-d", "fp8", "--scale", "2", "--proxy", "cpu-tiny", "--config", "{cpu_cluster}",
      "--dry-run"], {}, "fp8 needs a CUDA GPU"),
    (["submit", "llama3.1", "-s", "8b", "--exact-scales", "8,x", "--dry-run"], {}, "--exact-scales takes positive"),
    (["submit", "llama3.1", "-s", "8b", "--dry-run"], {}, "give --scale N"),
    (["submit", "-f", "{tmp}/nothing.yaml", "--dry-run"], {}, "nothing.yaml"),
    (["submit", "-f", "{bomb}", "--dry-run"], {}, "uses more than 100 YAML aliases"),
    (["submit", "-f", "{deep}", "--dry-run"], {}, "nested more than 64 levels deep"),
    (["submit", "-f", "{utf16}", "--dry-run"], {}, "holds UTF-16 text"),
    (["submit", "-f", "{binary}", "--dry-run"], {}, "holds binary data"),
    (["submit", "-f", "{latin1}", "--dry-run"], {}, "not UTF-8 text"),
    (["submit", "-f", "{malformed}", "--dry-run"], {}, "malformed YAML"),
    (["submit", "-f", "{unknown_key}", "--dry-run"], {}, "colour"),
    (["submit", "-f", "{empty_runs}", "--dry-run"], {}, "runs"),
    (["submit", "-f", "{adir}", "--dry-run"], {}, "is a folder"),
    (["submit", "llama3.1", "-f", "{empty_runs}", "--dry-run"], {}, "not both"),
    (["init", "-y", "--partition", "a b;c"], {}, "'a b;c' is not a Slurm name"),
    (["init", "-y", "--time-limit", "forever"], {}, "'forever' is not a Slurm time limit"),
    (["init", "-y", "--container-image", "img", "--container-mount", "nocolon"], {}, "must be SRC:DST"),
    (["init", "-y", "--container-mount", "a:b"], {}, "--container-mount goes with --container-image"),
    (["init", "-y", "--config", "{adir}"], {}, "is a folder"),
    (["init", "-y", "--accelerator", "tpu"], {}, "accelerator must be gpu or cpu"),
    (["init", "-y", "--launcher", "pbs"], {}, "launcher must be slurm or local"),
    (["init", "-y", "--gpu-type", "nope"], {}, "nope"),
    (["init", "-y", "--env", "novalue"], {}, "--env takes KEY=VALUE"),
    (["init", "-y", "--env", "1BAD=x"], {}, "not a valid environment variable name"),
    (["cancel", "abc"], {}, "a Slurm job id is a number"),
    # data
    (["data", "prepare", "{sample}", "--output-prefix", "{tmp}/d", "--train-tokenizer", "--vocab-size", "0"], {},
     "--vocab-size must be a whole number from 257"),
    (["data", "prepare", "{sample}", "--output-prefix", "{tmp}/d", "--train-tokenizer", "--vocab-size",
      "100000000000000000000000000000"], {}, "--vocab-size must be a whole number from 257"),
    (["data", "prepare", "{sample}", "--output-prefix", "", "--train-tokenizer"], {}, "names no file"),
    (["data", "prepare", "{sample}", "--output-prefix", "{tmp}/", "--train-tokenizer"], {}, "names no file"),
    (["data", "prepare", "{tmp}/nothing.jsonl", "--output-prefix", "{tmp}/d", "--train-tokenizer"], {}, "not found"),
    (["data", "prepare", "{sample}", "--output-prefix", "{tmp}/d"], {}, "give exactly one of --tokenizer"),
    (["data", "prepare", "{sample}", "--output-prefix", "{tmp}/d", "--tokenizer", "{not_a_log}"], {}, "not_a_log"),
    (["data", "info", "{tmp}/nothing"], {}, "no indexed dataset"),
    # the catalog and the environment
    (["list"], {"LLMB_CATALOG_PATH": "{catalog_bomb}"}, "uses more than 100 YAML aliases"),
    (["list"], {"LLMB_CATALOG_PATH": "{catalog_deep}"}, "nested more than 64 levels deep"),
    (["list"], {"LLMB_CATALOG_PATH": "{catalog_binary}"}, "holds binary data"),
    (["list"], {"LLMB_CATALOG_PATH": "{tmp}/nothing"}, "nothing"),
    # the job store
    (["jobs", "list"], {"LLMB_HOME": "{tmp}/badhome"}, "jobs.db"),
    # framework backends (llmb.launch.backends): impossible pairs and knobs, before anything is written
    (["run", *TINY, "--backend", "jax"], {}, "unknown backend 'jax'"),
    (["run", "llama4-maverick", *TINY, "--backend", "megatron", "--dry-run"], {},
     "--backend megatron: cannot express llama4-maverick: Megatron-LM core_r0.12.0 has no flag for Llama 4's layers"),
    (["run", "nemotron4", *TINY, "--backend", "torchtitan"], {},
     "--backend torchtitan: cannot express nemotron4: torchtitan's Llama 3 model has RMSNorm, SwiGLU and full RoPE"),
    (["run", *TINY, "--backend", "maxtext", "--dry-run"], {},
     "--backend maxtext: cannot express llama3.1: MaxText 0fe43b75a285 (2024-12-09) has no Llama 3.1 RoPE scaling"),
    (["run", "llama2-maxtext", *TINY, "--backend", "nemo2", "--dry-run"], {},
     "NeMo v2.3.0 has no pretraining recipe for llama2-maxtext 70b"),
    (["run", *TINY, "--backend", "nemo1", "--dry-run"], {}, "--backend nemo1: cannot express llama3.1"),
    (["run", *TINY, "--backend", "torchtitan", "--save-every", "1"], {},
     "--backend torchtitan: --save-every is an option of llmb's own engine; torchtitan cannot honour it"),
    (["run", *TINY, "--backend", "torchtitan", "--compile"], {}, "--compile is an option of llmb's own engine"),
    (["run", *TINY, "--backend", "torchtitan", "--ddp"], {}, "--ddp is an option of llmb's own engine"),
    (["run", *TINY, "--backend", "torchtitan", "--profile", "--nccl-trace"], {},
     "ENABLE_PROFILE and ENABLE_NCCLTRACE are mutually exclusive"),
    (["run", "--proxy", "cpu-small", "--steps", "2", "--backend", "torchtitan", "--data", "sample"], {},
     "--data sample is llmb's shipped text"),
    (["run", *TINY, "--backend", "megatron"], {}, "--backend megatron: megatron needs CUDA GPUs"),
    (["run", *TINY, "--backend", "nemo2", "--dtype", "fp32", "--dry-run"], {},
     "the NeMo 2 recipes train in bf16 or fp8"),
    (["submit", "llama3.1", "--scale", "8", "--backend", "torchtitan", "--dry-run"], {},
     "no published container image for torchtitan; set backends.torchtitan.image"),
    (["submit", "llama3.1", "--scale", "8", "--backend", "megatron", "--config", "{cpu_cluster}"], {},
     "--backend megatron: megatron needs CUDA GPUs"),
    (["submit", "llama2-maxtext", "--scale", "512", "--backend", "megatron", "--dry-run"], {},
     "FSDP over groups of 128 of 512 data-parallel ranks (HSDP) has no flag in Megatron-LM core_r0.12.0"),
    (["submit", "llama2-maxtext", "--scale", "64", "--backend", "maxtext", "--data", "{tmp}/nothing", "--dry-run"],
     {}, "no indexed dataset"),
    # usage errors
    (["run", "--no-such-option"], {}, "No such option"),
    (["nosuchcommand"], {}, "No such command"),
]


@pytest.mark.parametrize("argv, env, needle", CASES, ids=[" ".join(c[0])[:60] + str(i) for i, c in enumerate(CASES)])
def test_a_mistake_is_one_line_and_exit_1(argv, env, needle, tmp_path, monkeypatch, capsys):
    files = _files(tmp_path)
    (tmp_path / "badhome").mkdir()
    (tmp_path / "badhome" / "jobs.db").write_bytes(b"this is not a database" * 100)
    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "experiments"))
    monkeypatch.delenv("LLMB_CLUSTER_CONFIG", raising=False)
    monkeypatch.setenv("LLMB_INSTALL", str(tmp_path / "install"))
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(**files))
    argv = [a.format(**files) for a in argv]
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 1, (code, err, captured.out[-500:])
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert needle.format(**files) in " ".join(err.split()), err
    assert not (tmp_path / "experiments").exists(), "a mistake created an experiment folder"

