"""What was run: workload, size, dtype, GPU count and GPU type of a log, given by the user or
read from the experiment folder it sits in.

Folder names understood (the first one found walking up from the log wins):

* llmb: ``experiments/llama3.1_8b_bf16_gpus8/<UTC timestamp>/...``
* the NeMo references: ``experiments/pretrain_llama3.1_8b_bf16_8/pretrain_llama3.1_8b_bf16_8_<timestamp>/...``
* the older references: ``results/<version>/<dtype>/<size>/<gpus>/log-*.out`` (the workload is
  then the only catalog workload of that size written by the log's framework).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from llmb.catalog.loader import Catalog
from llmb.catalog.schema import DTYPES
from llmb.errors import CatalogError, LlmbError
from llmb.plan.layout import LAYOUT_KNOBS

_SIZE = r"\d+(?:\.\d+)?[bBmMtT](?:-proxy)?"
_NAME = re.compile(
    rf"^(?P<wl>.+?)_(?P<size>{_SIZE})_(?P<dtype>{'|'.join(DTYPES)})_(?:gpus)?(?P<gpus>\d+)(?:_.*)?$",
    re.IGNORECASE,
)
_PREFIXES = ("pretrain_", "pretraining_")


@dataclass(frozen=True)
class RunSpec:
    """A run's identity; any field may be unknown (``None``)."""

    workload: str | None = None
    size: str | None = None
    dtype: str | None = None
    gpus: int | None = None
    gpu_type: str | None = None
    #: where the identity came from ("options", "folder <name>", ...)
    source: str = "options"
    #: layout knobs that differ from the catalog's row, e.g. (("gbs", 256),)
    layout: tuple[tuple[str, int], ...] = ()
    #: the engine proxy the run shrank the model to (llmb runs), e.g. "cpu-small"
    proxy: str | None = None
    #: what the ranks computed on, when known: "cpu" or "cuda"
    device: str | None = None

    @property
    def complete(self) -> bool:
        return None not in (self.workload, self.size, self.gpus)

    def merged_over(self, inferred: RunSpec) -> RunSpec:
        """This spec's known fields, the others from ``inferred``."""
        given = {k: v for k, v in asdict(self).items()
                 if v not in (None, ()) and k not in ("source", "layout", "proxy", "device")}
        if self.layout:
            inferred = replace(inferred, layout=self.layout)
        if not given:
            return inferred
        if not any(getattr(inferred, k) is not None for k in ("workload", "size", "dtype", "gpus")):
            return replace(self, source="options")
        if not given:
            return inferred
        return replace(inferred, **given, source=f"options + {inferred.source}")

    @property
    def size_label(self) -> str | None:
        """The size as experiment folders name it: ``8b``, or ``8b-cpu-small`` for a proxy."""
        if self.size is None:
            return None
        return f"{self.size}-{self.proxy}" if self.proxy else self.size

    def label(self) -> str:
        if self.device == "cpu":
            where = f"{self.gpus or '?'} CPU rank(s)" + (f" ({self.gpu_type} recipe)" if self.gpu_type else "")
        else:
            where = f"{self.gpus or '?'} GPUs" + (f" {self.gpu_type}" if self.gpu_type else "")
        return " ".join([self.workload or "?", self.size_label or "?", self.dtype or "?", where])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_layout(text: str | None) -> tuple[tuple[str, int], ...]:
    """``"tp=2,pp=4,gbs=256"`` -> ``(("tp", 2), ("pp", 4), ("gbs", 256))``."""
    if not text:
        return ()
    out = []
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise LlmbError(f"layout {text!r} must look like tp=2,pp=4,gbs=256")
        knob = key.strip().lower()
        if knob not in LAYOUT_KNOBS:
            raise LlmbError(f"unknown layout knob {knob!r} (choose from {', '.join(LAYOUT_KNOBS)})")
        out.append((knob, int(value)))
    return tuple(out)


def _workload_name(catalog: Catalog, raw: str) -> str | None:
    candidates = [raw] + [raw[len(p):] for p in _PREFIXES if raw.lower().startswith(p)]
    for name in candidates:
        try:
            return catalog.workload(name).name
        except CatalogError:
            continue
    return None


def _size_key(catalog: Catalog, workload: str, size: str) -> str | None:
    try:
        return catalog.size(catalog.workload(workload), size)[0]
    except CatalogError:
        return None


def spec_from_name(name: str, catalog: Catalog) -> RunSpec | None:
    """Read ``<workload>_<size>_<dtype>_[gpus]<N>`` (with optional ``pretrain_`` prefix and
    ``_<timestamp>`` suffix); ``None`` if the name does not fit or names nothing in the catalog."""
    m = _NAME.match(name)
    if m is None:
        return None
    workload = _workload_name(catalog, m.group("wl"))
    if workload is None:
        return None
    size = _size_key(catalog, workload, m.group("size"))
    if size is None:
        return None
    return RunSpec(workload, size, m.group("dtype").lower(), int(m.group("gpus")), source=f"folder {name}")


def _spec_from_parts(parts: tuple[str, ...], fmt: str | None, catalog: Catalog) -> RunSpec | None:
    for i in range(len(parts) - 2):
        dtype, size, gpus = parts[i : i + 3]
        if dtype.lower() not in DTYPES or not re.fullmatch(_SIZE, size) or not gpus.isdigit():
            continue
        matches = [
            wl.name
            for wl in catalog.workloads.values()
            if (fmt is None or wl.framework == fmt) and _size_key(catalog, wl.name, size) is not None
        ]
        if len(matches) == 1:
            return RunSpec(
                matches[0],
                _size_key(catalog, matches[0], size),
                dtype.lower(),
                int(gpus),
                source=f"path {'/'.join(parts[i:i + 3])}",
            )
    return None


def infer_spec(path: str | Path, fmt: str | None, catalog: Catalog) -> RunSpec:
    """The identity the log's location implies (all ``None`` when it implies nothing)."""
    p = Path(path).resolve()
    for folder in [p.parent, *p.parent.parents]:
        spec = spec_from_name(folder.name, catalog)
        if spec is not None:
            return spec
    spec = _spec_from_parts(p.parent.parts, fmt, catalog)
    return spec or RunSpec(source="nothing")
