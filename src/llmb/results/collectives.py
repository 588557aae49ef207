"""Collective-communication summaries (``llmb trace``): type, count, bytes and time of the
collectives a run issued, from NCCL ``INFO`` log lines (``NCCL_DEBUG=INFO
NCCL_DEBUG_SUBSYS=COLL``) or from a torch.profiler chrome trace.

NCCL logs of a traced run easily exceed 1 GB: they are streamed line by line in binary and
decoded leniently. NCCL's lines carry no durations, so a log summary has counts and bytes only;
a profiler trace adds time (host time of the ``gloo:``/``nccl:`` record functions, or device
time of NCCL kernels when CUDA activity was recorded).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from llmb.errors import LlmbError
from llmb.results.reader import FileRange, ScanState, chunks

# ncclDataType_t, in enum order (nccl.h): element sizes in bytes.
NCCL_DTYPE_BYTES = {0: 1, 1: 1, 2: 4, 3: 4, 4: 8, 5: 8, 6: 2, 7: 4, 8: 8, 9: 2, 10: 1, 11: 1}
NCCL_DTYPE_NAMES = {0: "int8", 1: "uint8", 2: "int32", 3: "uint32", 4: "int64", 5: "uint64", 6: "float16",
                    7: "float32", 8: "float64", 9: "bfloat16", 10: "float8e4m3", 11: "float8e5m2"}
TORCH_DTYPE_BYTES = {"float": 4, "float32": 4, "c10::Half": 2, "c10::BFloat16": 2, "double": 8, "long int": 8,
                     "int": 4, "signed char": 1, "unsigned char": 1, "bool": 1, "Float": 4, "BFloat16": 2,
                     "Half": 2, "Double": 8, "Long": 8, "Int": 4, "Byte": 1, "Char": 1,
                     "c10::Float8_e4m3fn": 1, "c10::Float8_e5m2": 1}

# A collective as NCCL logs it (NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=COLL): at the start of a line,
# after a launcher's prefix if any (torchrun's "[rank3]:" / "[default3]:", srun's "3: "), NCCL's
# own "host:pid:tid [cudaDev] NCCL INFO <Op>: opCount ...". Matched whole lines at a time in C
# (findall over multi-MB chunks): possessive quantifiers, no backtracking.
_COLLECTIVE = re.compile(
    rb"[\n\r](?:\[\w{1,20}\]:|\d{1,6}: )?(?:([^ \n\r]*+) )?\[(\d++)\] NCCL INFO ([A-Za-z]++): opCount [0-9a-fA-F]++ "
    rb"sendbuff [^ \n\r]++ recvbuff [^ \n\r]++ count (\d++) datatype (\d++) op \d++ root -?\d++ "
    rb"comm 0x[0-9a-fA-F]++(?: \[nranks=(\d++)\])?"
)
# NCCL's prefix: host:pid:tid
_HOST_PID = re.compile(rb"^([\w.\-]+):(\d+):\d+$")

# Profiler names of collectives: gloo:all_reduce, nccl:all_reduce, ncclDevKernel_AllReduce_Sum_f32...
_PROFILER_NAME = re.compile(r"^(?:gloo|nccl|mpi|ucc):(?P<op>\w+)$")
_KERNEL_NAME = re.compile(r"^nccl(?:Dev)?Kernel_(?P<op>[A-Za-z]+)")


@dataclass
class CollectiveStats:
    op: str
    nranks: int | None
    calls: int = 0
    bytes: int = 0
    time_s: float | None = None
    dtypes: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["dtypes"] = sorted(self.dtypes)
        return d


@dataclass
class TraceSummary:
    source: str
    kind: str  # "nccl-log" or "profiler"
    stats: dict[tuple[str, int | None], CollectiveStats] = field(default_factory=dict)
    lines: int = 0
    ranks: set[str] = field(default_factory=set)
    #: profiler events of a collective left out because a field was not a number
    skipped: int = 0
    files: int = 1

    def merge(self, other: TraceSummary) -> None:
        """Add another file's summary (another rank's trace or log of the same run)."""
        for key, s in other.stats.items():
            mine = self.stats.setdefault(key, CollectiveStats(s.op, s.nranks))
            mine.calls += s.calls
            mine.bytes += s.bytes
            mine.dtypes |= s.dtypes
            if s.time_s is not None:
                mine.time_s = (mine.time_s or 0.0) + s.time_s
        self.lines += other.lines
        self.ranks |= {f"{other.source}:{r}" for r in other.ranks} if other.kind == "profiler" else other.ranks
        self.skipped += other.skipped
        self.files += other.files
        if other.kind != self.kind:
            self.kind = "mixed"

    def add(self, op: str, nranks: int | None, nbytes: int, dtype: str, time_s: float | None = None,
            calls: int = 1) -> None:
        """Count ``calls`` collectives of ``nbytes`` each (and ``time_s`` in all)."""
        key = (op, nranks)
        s = self.stats.setdefault(key, CollectiveStats(op, nranks))
        s.calls += calls
        s.bytes += nbytes * calls
        s.dtypes.add(dtype)
        if time_s is not None:
            s.time_s = (s.time_s or 0.0) + time_s

    def rows(self) -> list[CollectiveStats]:
        return sorted(self.stats.values(), key=lambda s: (-s.bytes, s.op))

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "kind": self.kind, "lines": self.lines, "ranks": len(self.ranks),
                "files": self.files, "skipped_events": self.skipped,
                "collectives": [s.as_dict() for s in self.rows()]}


_CANONICAL = {"allreduce": "all_reduce", "allgather": "all_gather", "reducescatter": "reduce_scatter",
              "alltoall": "all_to_all", "alltoallv": "all_to_all"}


def _canonical(op: str) -> str:
    """AllReduce / all_reduce / _allgather_base -> all_reduce / all_gather."""
    key = op.lower().strip("_").replace("_", "").removesuffix("base")
    return _CANONICAL.get(key, key)


def count_collectives(stream: BinaryIO) -> Counter[tuple[bytes, ...]]:
    """Each distinct collective line shape (NCCL prefix, device, collective, count, type,
    communicator size) with how often it occurs, read in chunks at C speed (``findall`` over
    multi-MB chunks into a :class:`~collections.Counter`)."""
    shapes: Counter[tuple[bytes, ...]] = Counter()
    state = ScanState(pattern=re.compile(""))
    before = b"\n"  # a chunk ends at a line break, so the next one starts a line
    for _, chunk in chunks(stream, state):
        shapes.update(_COLLECTIVE.findall(before + chunk))
        before = chunk[-1:]
    return shapes


def summarize_nccl_log(stream: BinaryIO, source: str = "<stream>") -> TraceSummary:
    """Collectives of an NCCL INFO log."""
    return summarize_shapes(count_collectives(stream), source)


def summarize_shapes(shapes: Counter[tuple[bytes, ...]], source: str) -> TraceSummary:
    """The summary of :func:`count_collectives`' shapes.

    A rank is one GPU of one process: NCCL's host and pid with its device number (a process
    driving several GPUs, as JAX does, is several ranks); ``dev<N>`` when the line has no
    host:pid:tid prefix."""
    summary = TraceSummary(source, "nccl-log")
    ranks: dict[tuple[bytes, bytes], str] = {}
    for (token, dev, op, count, dtype, nranks), calls in shapes.items():
        code = int(dtype)
        rank = ranks.get((token, dev))
        if rank is None:
            m = _HOST_PID.match(token)
            rank = ranks[(token, dev)] = (f"{m[1].decode()}:{m[2].decode()}:{dev.decode()}" if m
                                          else f"{token.decode(errors='replace')}:{dev.decode()}" if token
                                          else f"dev{dev.decode()}")
        summary.add(_canonical(op.decode()), int(nranks) if nranks else None, int(count) * NCCL_DTYPE_BYTES.get(code, 0),
                    NCCL_DTYPE_NAMES.get(code, f"type{code}"), calls=calls)
        summary.lines += calls
    summary.ranks.update(ranks.values())
    return summary


def summarize_nccl_file(path: Path) -> TraceSummary:
    """:func:`summarize_nccl_log` of a file; a big one is read by one process per core
    (:mod:`llmb.results.split`), the counts added up."""
    from llmb.results import split

    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        workers = split.workers_for(size)
        cuts = split.boundaries(fh, size, workers) if workers > 1 else None
        if cuts is not None and len(cuts) > 2:
            try:
                shapes: Counter[tuple[bytes, ...]] = Counter()
                for part in split.map_ranges(str(path), fh, cuts, count_collectives):
                    shapes.update(part)
                return summarize_shapes(shapes, str(path))
            except split.Fallback:
                pass
        return summarize_nccl_log(FileRange(fh, 0, size), str(path))  # type: ignore[arg-type]


def _numel(dims: object) -> int:
    if not isinstance(dims, list) or not dims or not isinstance(dims[0], list):
        return 0
    n = 1
    for d in dims[0]:
        n *= int(d)
    return n


def _number(value: object, kind: type = float) -> float | int | None:
    """A trace field as a number; None when it is not one (a hand-edited or foreign trace)."""
    if isinstance(value, bool):
        return None
    try:
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        return None


def summarize_profiler_trace(events: Iterable[dict], source: str = "<trace>") -> TraceSummary:
    summary = TraceSummary(source, "profiler")
    for ev in events:
        if not isinstance(ev, dict) or ev.get("ph") != "X":
            continue
        name = str(ev.get("name", ""))
        args = ev.get("args") or {}
        op = None
        if (m := _PROFILER_NAME.match(name)) is not None:
            op = m["op"]
        elif (k := _KERNEL_NAME.match(name)) is not None:
            op = k["op"]
        if op is None:
            continue
        types = args.get("Input type")
        dtype = str(types[0]) if isinstance(types, list) and types else str(args.get("dtype", "?"))
        try:
            elems = _number(args.get("In msg nelems", 0) or 0, int)
            elems = elems if elems else _numel(args.get("Input Dims"))
        except (TypeError, ValueError):
            elems = None
        group = args.get("Group size")
        nranks = _number(group, int) if group else None
        dur = _number(ev.get("dur", 0.0))
        if elems is None or dur is None or (group and nranks is None):
            summary.skipped += 1
            continue
        nbytes = elems * TORCH_DTYPE_BYTES.get(str(dtype), 0)
        summary.add(_canonical(op), nranks, nbytes, str(dtype), dur / 1e6)
        summary.lines += 1
        summary.ranks.add(str(ev.get("pid", "?")))
    return summary


def summarize_path(path: Path) -> TraceSummary:
    """Summarize a profiler trace (``*.json``, ``*.json.gz``), an NCCL log (anything else), or a
    run's experiment folder (its ``profiles/`` traces and ``nccl/`` logs, every rank's together).
    Refused when nothing in it is a collective."""
    if not path.exists():
        raise LlmbError(f"no such file: {path}")
    if path.is_dir():
        files = sorted([*path.glob("profiles/*.json"), *path.glob("profiles/*.json.gz"), *path.glob("nccl/*.log")])
        if not files:
            raise LlmbError(f"{path}: no profiler traces (profiles/) or NCCL logs (nccl/) in this folder; "
                            "run with --profile or --nccl-trace, or name a trace file")
        total = _summarize_file(files[0])
        total.source = str(path)
        for f in files[1:]:
            total.merge(_summarize_file(f))
    else:
        total = _summarize_file(path)
    if not total.stats:
        what = "profiler trace events of collectives" if total.kind == "profiler" else "NCCL INFO collective lines"
        extra = f" ({total.skipped} with non-numeric fields were skipped)" if total.skipped else ""
        raise LlmbError(f"{path.name}: no {what}{extra}")
    return total


def _summarize_file(path: Path) -> TraceSummary:
    name = path.name
    if name.endswith((".json", ".json.gz", ".pt.trace.json")):
        import gzip

        opener = gzip.open if name.endswith(".gz") else open
        try:
            with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            raise LlmbError(f"{name}: not a readable chrome trace ({exc})") from None
        events = data.get("traceEvents", []) if isinstance(data, dict) else data
        if not isinstance(events, list):
            raise LlmbError(f"{name}: no traceEvents list in this JSON")
        return summarize_profiler_trace(events, str(path))
    return summarize_nccl_file(path)
