"""Launch plumbing: the recipes' env-var knobs, cluster config, and batch scripts that never let
a value reach the shell unquoted."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from llmb.errors import LlmbError
from llmb.launch.cluster import ClusterConfig, load_config, read_secret_names, save_config, save_secrets
from llmb.launch.knobs import knobs_from_env, resolve_knobs
from llmb.launch.sbatch import SlurmJob, job_name, render

NASTY = [
    "it's \"quoted\"",
    "$(touch PWNED)",
    "`touch PWNED`",
    "a; touch PWNED",
    "line1\nline2; touch PWNED",
    "spaces  and\ttabs",
    "${HOME} $$ !! \\ *",
]


def test_env_knobs_parse_the_recipe_names():
    env = {"DTYPE": "FP8", "MODEL_SIZE": "70b", "JOB_TOTAL_GPUS": "256", "GPUS_PER_NODE": "8",
           "ENABLE_PROFILE": "true", "ENABLE_CHECKPOINT": "0", "TP": "4", "UNRELATED": "x"}
    assert knobs_from_env(env) == {"dtype": "fp8", "size": "70b", "gpus": 256, "gpus_per_node": 8,
                                   "profile": True, "checkpoint": False, "tp": 4}


@pytest.mark.parametrize("env, message", [
    ({"JOB_TOTAL_GPUS": "abc"}, "JOB_TOTAL_GPUS must be a positive whole number, got 'abc'"),
    ({"JOB_TOTAL_GPUS": "-8"}, "JOB_TOTAL_GPUS must be a positive whole number"),
    ({"MAX_STEPS": "1.5"}, "MAX_STEPS must be a positive whole number"),
    ({"ENABLE_PROFILE": "maybe"}, "ENABLE_PROFILE must be true or false, got 'maybe'"),
])
def test_env_knobs_bad_values(env, message):
    with pytest.raises(LlmbError, match=message):
        knobs_from_env(env)


def test_precedence_cli_over_env_over_cluster_over_recipe():
    values, origin = resolve_knobs(
        cli={"gpus": 16, "dtype": None},
        environ={"JOB_TOTAL_GPUS": "32", "DTYPE": "fp8", "GPUS_PER_NODE": "4"},
        cluster={"gpus_per_node": 8, "gpu_type": "h100", "partition": "batch"},
        recipe={"dtype": "bf16", "gpus": 8, "max_steps": 50},
    )
    assert values == {"gpus": 16, "dtype": "fp8", "gpus_per_node": 4, "gpu_type": "h100",
                      "partition": "batch", "max_steps": 50}
    assert origin["gpus"] == "command line" and origin["dtype"] == "environment"
    assert origin["gpu_type"] == "cluster config" and origin["max_steps"] == "recipe"


def test_cluster_config_round_trip_and_secrets(tmp_path):
    path = tmp_path / "cluster_config.yaml"
    cfg = ClusterConfig(install_path=str(tmp_path), experiments_path=str(tmp_path / "exp"), env={"A": "1"})
    save_config(cfg, path)
    assert load_config(path) == cfg
    secrets = save_secrets({"HF_TOKEN": "hf_secret_value"}, path)
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert read_secret_names(secrets) == ["HF_TOKEN"]
    assert "hf_secret_value" not in path.read_text()


def test_bad_cluster_config_is_one_line(tmp_path):
    path = tmp_path / "cluster_config.yaml"
    path.write_text("install_path: /x\nexperiments_path: /y\ngpus_per_node: -1\n")
    with pytest.raises(LlmbError, match=r"gpus_per_node: Input should be greater than 0"):
        load_config(path)
    path.write_text("install_path: /x\nexperiments_path: /y\nbogus: 1\n")
    with pytest.raises(LlmbError, match="bogus"):
        load_config(path)
    with pytest.raises(LlmbError, match=r"\(--config names it\): check the path, or run `llmb init`"):
        load_config(tmp_path / "none.yaml", required=True)


def _job(tmp_path: Path, **kw) -> SlurmJob:
    base = dict(
        name="llama3.1 8b; rm -rf /", nodes=2, ranks_per_node=2, experiment_dir=tmp_path,
        command=["-m", "llmb.engine.worker", "--name", NASTY[1]], python=str(tmp_path / "python"),
        env={f"V{i}": v for i, v in enumerate(NASTY)}, partition="debug",
    )
    base.update(kw)
    return SlurmJob(**base)


def test_job_names_are_sanitized():
    assert job_name("llama3.1 8b; rm -rf / `x`") == "llama3.1-8b-rm-rf-x"
    assert job_name("\n$()") == "llmb"


def test_script_is_valid_bash(tmp_path):
    script = tmp_path / "job.sbatch"
    script.write_text(render(_job(tmp_path)))
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --partition=debug" in text
    assert "#SBATCH --job-name=llama3.1-8b-rm-rf" in text


@pytest.mark.parametrize("field, value", [
    ("partition", "debug\n#SBATCH --uid=0"), ("account", "a b"), ("qos", "$(id)"),
    ("extra_args", ["--comment=$(id)"]), ("extra_args", ["not-a-flag"]),
])
def test_unsafe_directive_values_are_refused(tmp_path, field, value):
    with pytest.raises(LlmbError):
        render(_job(tmp_path, **{field: value}))


def test_hostile_values_arrive_intact_and_run_nothing(tmp_path):
    """Run the script with stand-ins for srun/scontrol/python: every value arrives as one
    argument or variable, byte for byte, and no injected command runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/bash\nif [ \"$2\" = hostnames ]; then echo node1; else echo 'NodeName=node1 NodeAddr=127.0.0.1 x'; fi\n")
    # srun: drop its own options, run the rest.
    (bin_dir / "srun").write_text("#!/bin/bash\nwhile [[ \"$1\" == --* ]]; do shift; done\nexec \"$@\"\n")
    out = tmp_path / "argv.txt"
    (tmp_path / "python").write_text(
        "#!/bin/bash\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > " + str(out) + "\n"
        "for i in 0 1 2 3 4 5 6; do v=V$i; printf '%s\\0' \"${!v}\"; done >> " + str(out) + "\n"
    )
    for f in list(bin_dir.iterdir()) + [tmp_path / "python"]:
        f.chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(render(_job(tmp_path)))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "node[1-2]"}
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.rglob("PWNED"))
    parts = out.read_bytes().decode().split("\0")[:-1]
    torchrun_args, values = parts[:-7], parts[-7:]
    assert values == NASTY
    assert torchrun_args[-4:] == ["-m", "llmb.engine.worker", "--name", NASTY[1]]
    assert "--rdzv-endpoint=127.0.0.1:29742" in torchrun_args and "--rdzv-id=4242" in torchrun_args


def test_init_writes_config_and_keeps_secrets_out_of_sight(tmp_path, monkeypatch, capsys):
    from llmb.cli import main

    monkeypatch.setenv("LLMB_HOME", str(tmp_path))
    monkeypatch.setenv("HF_TOKEN", "hf_do_not_print_me")
    code = main(["init", "-y", "--launcher", "local", "--gpu-type", "gb200", "--gpus-per-node", "4",
                 "--secret", "HF_TOKEN", "--env", "NCCL_DEBUG=WARN"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "hf_do_not_print_me" not in out + err
    cfg = load_config(tmp_path / "cluster_config.yaml")
    assert (cfg.gpu_type, cfg.gpus_per_node, cfg.env) == ("gb200", 4, {"NCCL_DEBUG": "WARN"})
    assert stat.S_IMODE((tmp_path / "secrets.env").stat().st_mode) == 0o600


@pytest.mark.parametrize("argv", [
    ["init", "-y", "--gpu-type", "tpu"],
    ["init", "-y", "--secret", "LLMB_TEST_UNSET_SECRET"],
    ["init", "-y", "--launcher", "kubernetes"],
    ["init", "-y", "--env", "NOEQUALS"],
    ["init", "-y", "--gpus-per-node", "0"],
    ["cancel", "abc"],
])
def test_init_bad_input_writes_nothing(argv, tmp_path, monkeypatch, capsys):
    from llmb.cli import main

    monkeypatch.setenv("LLMB_HOME", str(tmp_path))
    monkeypatch.delenv("LLMB_TEST_UNSET_SECRET", raising=False)
    assert main(argv) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "cluster_config.yaml").exists()


def test_bulk_spec_expands_dtypes_scales_and_repeats(tmp_path, catalog):
    from llmb.launch.bulk import expand, load_bulk

    spec = tmp_path / "runs.yaml"
    spec.write_text(
        "runs:\n"
        "  - {workload: llama3.1, size: 8b, dtype: [bf16, fp8], scales: [8, 16], repeats: 2, overrides: {max_steps: 20}}\n"
        "  - {workload: nemotron, size: 340b, dtype: fp8, max_scale: 256}\n"
    )
    runs = expand(load_bulk(spec), catalog)
    assert len(runs) == 2 * 2 * 2 + 2
    assert runs[0].overrides == {"max_steps": 20}
    assert [(r.workload, r.gpus) for r in runs[-2:]] == [("nemotron4", 128), ("nemotron4", 256)]


@pytest.mark.parametrize("text, message", [
    ("runs: []\n", "runs: List should have at least 1 item"),
    ("runs:\n  - {workload: llama3.1, size: 8b, bogus: 1}\n", "bogus"),
    ("runs:\n  - {workload: llama3.1, size: 8b, overrides: {frob: 1}}\n", "unknown override"),
    ("runs:\n  - {workload: llama3.1, size: 8b, scales: [0]}\n", "scales must be positive"),
    ("runs: [\n", "malformed YAML"),
])
def test_bulk_spec_errors(tmp_path, text, message):
    from llmb.launch.bulk import load_bulk

    spec = tmp_path / "runs.yaml"
    spec.write_text(text)
    with pytest.raises(LlmbError, match=message):
        load_bulk(spec)


def test_scale_discovery(catalog):
    from llmb.launch.bulk import discover_scales

    assert discover_scales(catalog, "llama3.1", "70b", "fp8", min_scale=256, max_scale=1024) == [256, 512, 1024]
    assert discover_scales(catalog, "llama4", "400b", "bf16", gpu_type="h100") == [512]
    assert discover_scales(catalog, "llama3.1", "8b", "bf16", exact=[32, 8]) == [8, 32]
    with pytest.raises(LlmbError, match="lies within"):
        discover_scales(catalog, "llama3.1", "8b", "bf16", min_scale=4096)


def _fake_slurm(tmp_path: Path) -> Path:
    """A stand-in sbatch that hands out increasing job ids (with a lock, like the real one)."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    counter = tmp_path / "jobid"
    counter.write_text("100")
    (bin_dir / "sbatch").write_text(
        "#!/bin/bash\nexec 9>" + str(counter) + ".lock\nflock 9\n"
        "n=$(( $(cat " + str(counter) + ") + 1 ))\necho $n > " + str(counter) + "\necho \"$n;llmblocal\"\n"
    )
    (bin_dir / "sbatch").chmod(0o755)
    return bin_dir


def test_submit_dry_run_writes_and_submits_nothing(tmp_path, monkeypatch, capsys):
    from llmb.cli import main

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "exp"))
    monkeypatch.setenv("PATH", "/nonexistent")  # no sbatch anywhere
    assert main(["submit", "llama3.1", "-s", "8b", "--scale", "16", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --nodes=2" in out and "--nproc-per-node=8" in out and "$ sbatch --parsable" in out
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("argv, message", [
    (["submit"], "name a workload"),
    (["submit", "llama3.1", "-s", "8b"], "give --scale N"),
    (["submit", "llama3.1", "-s", "8b", "--scale", "12"], "12 GPUs do not fill whole nodes of 8"),
    (["submit", "llama3.1", "-s", "8b", "--scale", "8", "--tp", "3"], "GPUs (8) must be divisible by TP*CP*PP = 3*2*1 = 6"),
    (["submit", "llama3.1", "-s", "8b", "--exact-scales", "8,x"], "positive whole numbers separated by commas"),
    (["submit", "llama3.1", "-s", "8b", "--min-scale", "4096"], "lies within"),
])
def test_submit_bad_input(argv, message, tmp_path, monkeypatch, capsys):
    from llmb.cli import main

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "exp"))
    monkeypatch.setenv("PATH", "/nonexistent")
    code = main(argv + ["--dry-run"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert message in err


def test_two_submits_at_once_keep_the_store_intact(tmp_path):
    """Two `llmb submit` processes racing on one store: every job recorded, integrity ok."""
    import sqlite3
    import sys

    env = {**os.environ, "PATH": f"{_fake_slurm(tmp_path)}:{os.environ['PATH']}", "LLMB_HOME": str(tmp_path / "home"),
           "LLMB_EXPERIMENTS_DIR": str(tmp_path / "exp")}
    cmd = [sys.executable, "-c", "from llmb.cli import run; run()", "submit", "llama3.1", "-s", "8b",
           "--proxy", "cpu-tiny", "--scale", "1", "--repeats", "4", "--json"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    db = sqlite3.connect(tmp_path / "home" / "jobs.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    job_ids = [r[0] for r in db.execute("SELECT job_id FROM runs")]
    assert sorted(job_ids) == [str(n) for n in range(101, 109)]
    assert len(list((tmp_path / "exp").rglob("launch.sbatch"))) == 8


def test_node_launcher_gives_each_node_maxtexts_rendezvous(tmp_path):
    """The one-process-per-node launcher (MaxText) hands every node's process what MaxText's
    ``hardware=gpu`` joins the job with (max_utils.initialize_jax_for_gpu @ 0fe43b75a285:
    JAX_COORDINATOR_IP/PORT, NNODES, NODE_RANK): the script runs here under a stub ``srun``
    that starts the command once per node with Slurm's per-task SLURM_NODEID."""
    import json
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(
        # a long node list (beyond a pipe's buffer): reading only its first line would kill
        # scontrol with SIGPIPE, and pipefail the job
        '#!/bin/bash\nif [ "$2" = hostnames ]; then echo node-a; echo node-b; for i in $(seq 30000); do echo node-x$i; done\n'
        'else echo "NodeName=node-a NodeAddr=10.0.0.7 State=IDLE"; fi\n')
    (bin_dir / "srun").write_text(  # drop srun's own options, then one task per node
        '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\n'
        'for i in $(seq 0 $((SLURM_JOB_NUM_NODES - 1))); do SLURM_NODEID=$i "$@"; done\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    probe = "import json, os; print(json.dumps({k: os.environ[k] for k in ('JAX_COORDINATOR_IP', " \
            "'JAX_COORDINATOR_PORT', 'NNODES', 'NODE_RANK')}))"
    job = _job(tmp_path, launcher="node", nodes=2, ranks_per_node=8, command=[sys.executable, "-c", probe])
    script = tmp_path / "job.sbatch"
    script.write_text(render(job))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_JOB_ID": "4321",
           "SLURM_JOB_NUM_NODES": "2"}
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout
    seen = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    port = str(29500 + 4321 % 1000)
    assert seen == [{"JAX_COORDINATOR_IP": "10.0.0.7", "JAX_COORDINATOR_PORT": port, "NNODES": "2", "NODE_RANK": r}
                    for r in ("0", "1")]
