"""``llmb submit``: plan, write and submit Slurm jobs, and record them in the job store.

One submission = one experiment folder holding the resolved run's ``config.json`` (what the
workers run, :class:`llmb.records.RunConfig`), the batch script ``launch.sbatch`` and, later,
the run's log, metrics and summary. The job store gets the run (keyed by the run id its log will have) only after
``sbatch`` accepted the job: a refused submission leaves neither a record nor a folder.

Precedence of every knob: command line > environment variable (the recipes' names) > cluster
configuration > the recipe.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llmb.catalog.loader import Catalog
from llmb.errors import LlmbError
from llmb.launch import backends, sbatch
from llmb.launch.bulk import PlannedRun
from llmb.launch.cluster import ClusterConfig, check_mounts, config_path, secrets_path
from llmb.launch.experiment import experiment_base, fresh_stamp_dir, utc_stamp
from llmb.launch.knobs import BY_FIELD, LAYOUT_ENV_KNOBS, run_options
from llmb.launch.local import WORKER_MODULE, worker_env
from llmb.plan.request import RunRequest
from llmb.records import CONFIG_FILE, RunConfig

SCRIPT_NAME = "launch.sbatch"


@dataclass(frozen=True)
class Prepared:
    """A submission ready to go: nothing has touched the disk or the scheduler yet."""

    planned: PlannedRun
    config: RunConfig  # the resolved run the workers execute
    title: str
    size_label: str
    world: int
    job: sbatch.SlurmJob
    script: str
    device: str = "cuda"  # what the cluster's nodes compute on: "cpu" or "cuda"
    backend: str = "llmb"  # llmb's engine, or the framework launched (llmb.launch.backends)
    #: the framework's launch (None for llmb's engine); its files go into the experiment folder
    launch: Any = None
    rebuild: Any = None  # exp_dir -> (job, launch): the same submission bound to another folder

    @property
    def experiment_dir(self) -> Path:
        return self.job.experiment_dir

    @property
    def log_path(self) -> Path:
        return self.experiment_dir / "log.txt"


def nodes_for(gpus: int, gpus_per_node: int) -> tuple[int, int]:
    """(nodes, ranks per node) for a job of ``gpus`` ranks."""
    if gpus <= gpus_per_node:
        return 1, gpus
    if gpus % gpus_per_node:
        raise LlmbError(f"{gpus} GPUs do not fill whole nodes of {gpus_per_node} (GPUS_PER_NODE)")
    return gpus // gpus_per_node, gpus_per_node


def prepare(
    planned: PlannedRun,
    cluster: ClusterConfig,
    knobs: Mapping[str, Any],
    environ: Mapping[str, str],
    experiments_root: Path | None = None,
    max_restarts: int = 0,
    backend: str | None = None,
    container: bool = True,
    data: str | None = None,
    release: str | None = None,
) -> Prepared:
    """Resolve one planned run into a batch job (validating everything the engine would).
    ``backend``: ``llmb`` (default), a framework, or ``recipe`` (the workload's own framework);
    ``container``: run a framework in its container image (Pyxis), else in the nodes' own
    environment; ``data``: an indexed dataset prefix (default: mock data); ``release``: the
    recipe release to follow (default: the newest at that scale)."""
    gpus_per_node = int(knobs.get("gpus_per_node") or cluster.gpus_per_node)
    nodes, ranks_per_node = nodes_for(planned.gpus, gpus_per_node)
    proxy = planned.proxy if planned.proxy is not None else ("default" if cluster.accelerator == "cpu" else None)
    if proxy is not None and proxy.lower() == "none":
        proxy = None
    overrides = {k: v for k, v in {**{f: knobs.get(f) for f in LAYOUT_ENV_KNOBS}, **planned.overrides}.items()
                 if k in LAYOUT_ENV_KNOBS and v is not None}
    steps = planned.overrides.get("max_steps", knobs.get("max_steps"))
    options = run_options({"max_restarts": max_restarts, "profile": knobs.get("profile")}, environ)
    request = RunRequest(
        workload=planned.workload, size=planned.size, dtype=planned.dtype, proxy=proxy, nproc=planned.gpus,
        gpus=planned.gpus if proxy is None else None, gpu_type=planned.gpu_type or knobs.get("gpu_type"),
        overrides=overrides, steps=steps, options=options, data=data, release=release,
    )
    root = experiments_root or Path(cluster.experiments_path)
    # Every configuration mistake surfaces here, before sbatch: fp8 on a CPU cluster too.
    run, name = backends.resolve(request, backend, accelerator=_device(cluster), experiments_root=root)
    if name != backends.ENGINE:
        return _prepare_framework(planned, cluster, knobs, run, name, container, root, nodes, ranks_per_node)
    config = run.config()
    size_label, dtype, world = run.size_label, run.recipe.dtype, run.world
    exp_dir = experiment_base(config, root) / utc_stamp()

    env = worker_env(ranks_per_node, max_restarts)  # one thread per rank: a node's core count is unknown here
    if cluster.accelerator != "cpu":
        env.pop("OMP_NUM_THREADS")  # GPU nodes: torchrun's own default
    env.update(cluster.env)  # the cluster configuration's settings win over the defaults
    secrets = secrets_path(config_path())
    title = f"{run.recipe.workload.name} {size_label} {dtype}, {world} rank(s) on {nodes} node(s)"
    job = sbatch.SlurmJob(
        name=f"llmb-{run.recipe.workload.name}-{size_label}-{dtype}-{world}",
        nodes=nodes,
        ranks_per_node=ranks_per_node,
        experiment_dir=exp_dir,
        command=["-m", WORKER_MODULE, str(exp_dir)],
        python=cluster.python,
        title=title,
        env=env,
        account=knobs.get("account") or cluster.slurm.account,
        partition=knobs.get("partition") or cluster.slurm.partition,
        qos=cluster.slurm.qos,
        reservation=cluster.slurm.reservation,
        time_limit=cluster.slurm.time_limit,
        gpus_per_node=(knobs.get("sbatch_gpus_per_node") or ranks_per_node)
        if (cluster.slurm.gpus_per_node_flag or knobs.get("sbatch_gpus_per_node")) else None,
        extra_args=list(cluster.slurm.extra_args),
        container_image=cluster.container.image if cluster.container else None,
        container_mounts=list(cluster.container.mounts) if cluster.container else [],
        secrets_file=secrets if secrets.exists() else None,
        max_restarts=max_restarts,
    )
    return Prepared(planned, config, title, size_label, world, job, sbatch.render(job), _device(cluster))


def _prepare_framework(planned: PlannedRun, cluster: ClusterConfig, knobs: Mapping[str, Any], run, name: str,
                       container: bool, root: Path, nodes: int, ranks_per_node: int) -> Prepared:
    """A batch job that runs framework ``name`` itself (its command, its container)."""
    settings = cluster.backends.get(name)
    config = run.config().model_copy(update={"backend": name})
    exp_dir = experiment_base(config, root) / utc_stamp()
    device = _device(cluster)
    probe = backends.render(name, run, backends.Target(str(exp_dir), nodes, ranks_per_node, device), settings)
    image = (settings.image if settings and settings.image else probe.image) if container else None
    if container and image is None:
        raise LlmbError(f"--backend {name}: no published container image for {name}; set backends.{name}.image in "
                        "cluster_config.yaml, or use --no-container (the framework importable on the nodes)")
    python = (settings.python if settings and settings.python else ("python" if image else cluster.python))
    title = (f"{run.recipe.workload.name} {run.size_label} {run.recipe.dtype} with {name}, {run.world} rank(s) "
             f"on {nodes} node(s)")

    def rebuild(folder: Path):
        target = backends.Target(str(folder), nodes, ranks_per_node, device)
        # In a container, Megatron-LM's checkout is mounted at a fixed path; outside, it is run
        # from where it is.
        own = settings.model_copy(update={"source": None}) if (settings and image) else settings
        launch = backends.render(name, run, target, own)
        mounts: list[str] = []
        if image:
            exp_root = str(Path(root).resolve())
            mounts = [f"{exp_root}:{exp_root}", *(cluster.container.mounts if cluster.container else []),
                      *(settings.mounts if settings else [])]
            if name == "megatron" and settings and settings.source:
                mounts.append(f"{settings.source}:{backends.megatron.SOURCE_IN_CONTAINER}")
            if run.request.data:
                data_dir = str(Path(run.request.data).resolve().parent)
                mounts.append(f"{data_dir}:{data_dir}")
            try:
                check_mounts(mounts)
            except ValueError as exc:
                raise LlmbError(f"--backend {name}: {exc}; Pyxis cannot mount it (use --no-container, or a path "
                                "without blanks or shell characters)") from None
        # CPU clusters: one thread per rank, as for engine jobs (a node's core count is unknown here).
        threads = {"OMP_NUM_THREADS": "1"} if device == "cpu" else {}
        env = {**threads, **cluster.env, **launch.env, **(settings.env if settings else {})}
        job = sbatch.SlurmJob(
            name=f"llmb-{name}-{run.recipe.workload.name}-{run.size_label}-{run.recipe.dtype}-{run.world}",
            nodes=nodes, ranks_per_node=ranks_per_node, experiment_dir=folder, command=list(launch.command),
            python=python, title=title, env=env,
            account=knobs.get("account") or cluster.slurm.account,
            partition=knobs.get("partition") or cluster.slurm.partition,
            qos=cluster.slurm.qos, reservation=cluster.slurm.reservation, time_limit=cluster.slurm.time_limit,
            gpus_per_node=(knobs.get("sbatch_gpus_per_node") or ranks_per_node)
            if (cluster.slurm.gpus_per_node_flag or knobs.get("sbatch_gpus_per_node")) else None,
            extra_args=list(cluster.slurm.extra_args), container_image=image, container_mounts=mounts,
            launcher=launch.launcher, wrapper=list(launch.wrapper), workdir=launch.workdir,
            log_file=folder / "log.txt",
        )
        return job, launch

    job, launch = rebuild(exp_dir)
    return Prepared(planned, config, title, run.size_label, run.world, job, sbatch.render(job), device,
                    backend=name, launch=launch, rebuild=rebuild)


def _device(cluster: ClusterConfig) -> str:
    return "cuda" if cluster.accelerator == "gpu" else "cpu"


def write(prepared: Prepared) -> Prepared:
    """Create a fresh experiment folder (a new timestamp even when another submission took
    the planned one) holding the request and the script; returns the submission bound to it."""
    planned_dir = prepared.experiment_dir
    exp = fresh_stamp_dir(planned_dir.parent)
    if prepared.rebuild is not None:  # a framework's launch: its paths name the folder
        job, launch = prepared.rebuild(exp)
        prepared = replace(prepared, job=job, launch=launch, script=sbatch.render(job))
        backends.write_files(exp, launch)
    else:
        job = replace(prepared.job, experiment_dir=exp, command=["-m", WORKER_MODULE, str(exp)])
        prepared = replace(prepared, job=job, script=sbatch.render(job))
    prepared.config.write(exp / CONFIG_FILE)
    script = exp / SCRIPT_NAME
    script.write_text(prepared.script, encoding="utf-8")
    script.chmod(0o750)
    return prepared


def submit(prepared: Prepared, store, cluster_name: str | None = None) -> tuple[Prepared, str, str]:
    """Write, ``sbatch``, record; returns (the written submission, job id, run id). A refused
    job leaves nothing behind."""
    from llmb.launch.slurm import cancel
    from llmb.results.analysis import run_id_for_log
    from llmb.results.store import utc_now

    backends.check_device(prepared.backend, prepared.device)
    prepared = write(prepared)
    try:
        job_id = sbatch.submit(prepared.experiment_dir / SCRIPT_NAME)
    except BaseException:
        _remove(prepared.experiment_dir)
        raise
    run_id = run_id_for_log(prepared.log_path)
    p = prepared.planned
    try:
        store.put({
            "run_id": run_id, "workload": prepared.config.workload, "size": prepared.config.size,
            "proxy": prepared.config.proxy, "device": prepared.device, "dtype": p.dtype, "gpus": prepared.world,
            "gpu_type": prepared.config.hardware.gpu_type, "cluster": cluster_name,
            "format": prepared.launch.log_format if prepared.launch is not None else "llmb", "status": "NO_DATA",
            "log_path": str(prepared.log_path.resolve()),
            "job_id": job_id, "state": "PENDING", "experiment_dir": str(prepared.experiment_dir.resolve()),
            "submitted_at": utc_now(),
        })
    except BaseException:
        # The job exists but could not be recorded: take it back rather than lose track of it.
        try:
            cancel(job_id)
        finally:
            _remove(prepared.experiment_dir)
        raise
    return prepared, job_id, run_id


def _remove(exp_dir: Path) -> None:
    """Take back an experiment folder, and its parent if that leaves it empty."""
    shutil.rmtree(exp_dir, ignore_errors=True)
    try:
        exp_dir.parent.rmdir()
    except OSError:
        pass  # other runs of the same configuration live there


def knobs_for(cli: Mapping[str, Any], cluster: ClusterConfig, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """CLI > environment > cluster config, for the knobs a submission reads."""
    from llmb.launch.knobs import resolve_knobs

    values, _ = resolve_knobs(cli, environ if environ is not None else os.environ, cluster.knob_defaults())
    unknown = set(values) - set(BY_FIELD)
    if unknown:  # pragma: no cover - guarded by the CLI's options
        raise LlmbError(f"unknown knob(s): {', '.join(sorted(unknown))}")
    return values


def default_cluster() -> ClusterConfig:
    """The configuration used when ``llmb init`` was never run: local paths, no account."""
    from llmb.paths import experiments_root, install_dir

    return ClusterConfig(install_path=str(install_dir()), experiments_path=str(experiments_root().resolve()))


def planned_from(catalog: Catalog, workload: str, size: str | None, dtype: str | None, scales: list[int],
                 repeats: int, gpu_type: str | None, proxy: str | None, overrides: dict[str, Any]) -> list[PlannedRun]:
    wl = catalog.workload(workload)
    size_key = catalog.size(wl, size)[0] if size else next(iter(wl.sizes))
    d = (dtype or wl.default_dtype).lower()
    return [PlannedRun(wl.name, size_key, d, n, r, gpu_type, proxy, dict(overrides))
            for n in scales for r in range(1, repeats + 1)]


__all__ = ["Prepared", "default_cluster", "knobs_for", "nodes_for", "planned_from",
           "prepare", "submit", "write"]
