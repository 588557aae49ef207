"""The cluster configuration (``cluster_config.yaml``) written by ``llmb init``.

It says where experiments go, what hardware the nodes have, how to talk to Slurm (account,
partition, QoS, reservation, extra sbatch arguments), an optional container (Pyxis/enroot) and
environment variables for every job. Secrets (e.g. ``HF_TOKEN``) are kept apart in
``secrets.env`` beside it, mode 0600, and jobs source that file: their values never appear in
scripts or logs.

Lookup order: ``--config PATH`` > ``LLMB_CLUSTER_CONFIG`` > ``$LLMB_INSTALL/cluster_config.yaml``
> ``$LLMB_HOME/cluster_config.yaml``.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmb.datafile import load_model
from llmb.errors import LlmbError, SystemFailure
from llmb.paths import install_dir

CONFIG_NAME = "cluster_config.yaml"
SECRETS_NAME = "secrets.env"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_env_names(env: dict[str, str]) -> dict[str, str]:
    for key in env:
        if not _ENV_NAME.match(key):
            raise ValueError(f"{key!r} is not a valid environment variable name")
    return env


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# What sbatch accepts in these settings (sbatch(1)): names of letters, digits and _.:,=@%/+-;
# --time as minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, or UNLIMITED.
_SLURM_NAME = re.compile(r"^[A-Za-z0-9_.:,=@%/+\-]+$")
_TIME_LIMIT = re.compile(r"^(?:\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d{1,2}(?::\d{1,2}(?::\d{1,2})?)?|UNLIMITED|INFINITE)$",
                         re.IGNORECASE)


class SlurmSettings(_Strict):
    account: str | None = None
    partition: str | None = None
    qos: str | None = None
    reservation: str | None = None
    time_limit: str = Field(default="01:00:00", description="sbatch --time")

    @field_validator("account", "partition", "qos", "reservation")
    @classmethod
    def _slurm_name(cls, value: str | None) -> str | None:
        if value is not None and not _SLURM_NAME.match(value):
            raise ValueError(f"{value!r} is not a Slurm name (letters, digits and _.:,=@%/+- only)")
        return value

    @field_validator("time_limit")
    @classmethod
    def _time(cls, value: str) -> str:
        if not _TIME_LIMIT.match(value.strip()):
            raise ValueError(f"{value!r} is not a Slurm time limit (minutes, HH:MM:SS, D-HH:MM:SS or UNLIMITED)")
        return value.strip()
    gpus_per_node_flag: bool = Field(
        default=False, description="pass --gpus-per-node (clusters configured with GRES)"
    )
    extra_args: list[str] = Field(default_factory=list, description="more sbatch arguments")


class ContainerSettings(_Strict):
    image: str
    mounts: list[str] = Field(default_factory=list)

    @field_validator("mounts")
    @classmethod
    def _mounts(cls, mounts: list[str]) -> list[str]:
        return check_mounts(mounts)


def check_mounts(mounts: list[str]) -> list[str]:
    for m in mounts:
        src, sep, dst = m.partition(":")
        if not sep or not src or not dst.split(":")[0] or not _SLURM_NAME.match(m):
            raise ValueError(f"container mount {m!r} must be SRC:DST (optionally :FLAGS), paths without blanks")
    return mounts


class BackendSettings(_Strict):
    """``backends.<name>`` in cluster_config.yaml: how this cluster runs one framework."""

    image: str | None = Field(default=None, description="container image (default: the seed recipe's)")
    mounts: list[str] = Field(default_factory=list, description="more container mounts SRC:DST")
    python: str | None = Field(default=None, description="interpreter inside the job (default: python)")
    #: Megatron-LM: the checkout (host path) mounted into the container and run from
    source: str | None = None
    #: NeMo 1: the SentencePiece tokenizer model it needs even on mock data
    tokenizer_model: str | None = None
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("mounts")
    @classmethod
    def _mounts(cls, mounts: list[str]) -> list[str]:
        return check_mounts(mounts)

    @field_validator("image", "source", "tokenizer_model", "python")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        if value is not None and not _SLURM_NAME.match(value.replace("#", "")):
            raise ValueError(f"{value!r} must be a path or image name without blanks or shell characters")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return _check_env_names(env)


class ClusterConfig(_Strict):
    version: Literal[1] = 1
    install_path: str
    experiments_path: str
    gpu_type: str = "h100"
    gpus_per_node: int = Field(default=8, gt=0)
    launcher: Literal["slurm", "local"] = "slurm"
    #: "cpu" for clusters without GPUs (like the local test cluster): jobs then train the
    #: engine's CPU proxy on gloo unless a run asks for full size
    accelerator: Literal["gpu", "cpu"] = "gpu"
    python: str = Field(default_factory=lambda: sys.executable, description="interpreter jobs use")
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)
    container: ContainerSettings | None = None
    env: dict[str, str] = Field(default_factory=dict)
    #: per framework llmb can launch (megatron, nemo2, nemo1, maxtext, torchtitan)
    backends: dict[str, BackendSettings] = Field(default_factory=dict)

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return _check_env_names(env)

    @field_validator("backends")
    @classmethod
    def _backend_names(cls, backends: dict[str, BackendSettings]) -> dict[str, BackendSettings]:
        known = ("megatron", "nemo2", "nemo1", "maxtext", "torchtitan")
        for name in backends:
            if name not in known:
                raise ValueError(f"unknown backend {name!r} (backends: {', '.join(known)})")
        return backends

    def knob_defaults(self) -> dict[str, object]:
        """What the configuration contributes to a run request (below env and CLI)."""
        return {
            "gpu_type": self.gpu_type,
            "gpus_per_node": self.gpus_per_node,
            "account": self.slurm.account,
            "partition": self.slurm.partition,
        }


def config_path(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get("LLMB_CLUSTER_CONFIG")
    if env:
        return Path(env).expanduser()
    return install_dir() / CONFIG_NAME


def load_config(path: Path | None = None, required: bool = False) -> ClusterConfig | None:
    """Load the configuration; ``None`` when there is none and it is not ``required``. A file
    named by ``--config`` or ``LLMB_CLUSTER_CONFIG`` must exist: silently using the defaults
    would send jobs to the wrong partition."""
    named = path is not None or bool(os.environ.get("LLMB_CLUSTER_CONFIG"))
    path = config_path(path)
    if not path.exists():
        if named:
            how = "--config" if os.environ.get("LLMB_CLUSTER_CONFIG") is None else "LLMB_CLUSTER_CONFIG"
            raise LlmbError(f"no cluster configuration at {path} ({how} names it): check the path, or run `llmb init`")
        if required:
            raise LlmbError(f"no cluster configuration at {path}: run `llmb init` first")
        return None
    return load_model(path, ClusterConfig, strict=False)


def save_config(config: ClusterConfig, path: Path | None = None) -> Path:
    """Write atomically (a reader never sees half a file)."""
    path = config_path(path)
    if path.is_dir():
        raise LlmbError(f"{path} is a folder: give the configuration's file name, e.g. {path / CONFIG_NAME}")
    tmp = path.with_suffix(".yaml.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True) if tmp.parent.is_dir() else None
        raise SystemFailure(f"cannot write the cluster configuration {path}: {exc.strerror or exc}") from None
    return path


def secrets_path(config_file: Path) -> Path:
    return config_file.parent / SECRETS_NAME


def _quote_env_value(value: str) -> str:
    # Single-quoted for `source`; a single quote inside becomes '\''.
    return "'" + value.replace("'", "'\\''") + "'"


def save_secrets(secrets: dict[str, str], config_file: Path) -> Path:
    """Store secrets as KEY='value' lines, readable by the owner only (0600 from creation)."""
    for key in secrets:
        if not _ENV_NAME.match(key):
            raise LlmbError(f"{key!r} is not a valid environment variable name for a secret")
        if "\n" in secrets[key] or "\0" in secrets[key]:
            raise LlmbError(f"secret {key} contains a newline or NUL byte")
    path = secrets_path(config_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = read_secret_names(path)
    merged = {**{k: v for k, v in _read_secrets(path).items() if k in existing}, **secrets}
    tmp = path.with_suffix(".env.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# llmb secrets: sourced by jobs, never printed\n")
        for key, value in merged.items():
            fh.write(f"{key}={_quote_env_value(value)}\n")
    os.chmod(tmp, stat.S_IRUSR | stat.S_IWUSR)
    os.replace(tmp, path)
    return path


def _read_secrets(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" not in line or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        if value.startswith("'") and value.endswith("'"):
            value = value[1:-1].replace("'\\''", "'")
        out[key.strip()] = value
    return out


def read_secret_names(path: Path) -> list[str]:
    """Names only: llmb never needs to show a secret's value."""
    return list(_read_secrets(path))


def mask(text: str, secrets: dict[str, str]) -> str:
    """Replace any secret value occurring in ``text`` by ``***``."""
    for value in secrets.values():
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text
