"""The device mesh of a run, built from its layout.

Dimensions, outermost first: ``pp``, ``dp``, ``cp``, ``tp`` (TP innermost so its heavy traffic
stays on the fastest links, as in Megatron and torchtitan). ``dp`` and ``cp`` are flattened
into ``dp_cp``: FSDP shards over it, the loss is summed over it (CP ranks hold different
tokens of the same samples).

Experts are laid out over the ``dp x cp x tp`` ranks of each pipeline stage as Megatron-Core
folds them: those ranks, flattened with TP innermost, are reshaped to ``(edp, ep, etp)``.
ETP consecutive ranks (the TP group when ETP = TP) split each expert's FFN width; EP groups
hold disjoint sets of experts; ranks with the same (EP, ETP) position form an
expert-data-parallel (EDP) group that sums the experts' gradients. With ETP = 1 and TP > 1 the
EP groups take in TP ranks, which hold different tokens (sequence parallelism) as DP ranks do.

With one process there is no process group and no mesh: every handle is ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from llmb.errors import LlmbError
from llmb.plan.layout import ParallelDims


@dataclass
class Parallel:
    dims: ParallelDims
    rank: int = 0
    mesh: DeviceMesh | None = None
    dp_cp_mesh: DeviceMesh | None = None  # the flattened dp x cp mesh (kept: torch wants it)
    expert_mesh: DeviceMesh | None = None  # (pp, edp, ep, etp) when experts are split
    ep_group: dist.ProcessGroup | None = None
    etp_group: dist.ProcessGroup | None = None
    edp_group: dist.ProcessGroup | None = None

    def sub(self, *names: str) -> DeviceMesh | None:
        if self.mesh is None:
            return None
        if names == ("dp_cp",):
            return self.dp_cp_mesh
        return self.mesh[names[0]] if len(names) == 1 else self.mesh[names]

    def group(self, name: str) -> dist.ProcessGroup | None:
        """Process group of mesh dimension ``name`` (``pp``, ``dp``, ``cp``, ``tp``,
        ``dp_cp``), or None when that dimension has size 1 or there is no mesh."""
        if self.mesh is None:
            return None
        size = self.dims.dp_cp if name == "dp_cp" else getattr(self.dims, name)
        if size == 1:
            return None
        return self.sub(name).get_group()

    def coord(self, name: str) -> int:
        if self.mesh is None:
            return 0
        return self.sub(name).get_local_rank()

    @property
    def pp_rank(self) -> int:
        return self.coord("pp")

    @property
    def dp_rank(self) -> int:
        return self.coord("dp")

    @property
    def cp_rank(self) -> int:
        return self.coord("cp")

    @property
    def ep_rank(self) -> int:
        return dist.get_rank(self.ep_group) if self.ep_group is not None else 0

    @property
    def etp_rank(self) -> int:
        return dist.get_rank(self.etp_group) if self.etp_group is not None else 0

    @property
    def expert_groups(self) -> tuple[dist.ProcessGroup, ...]:
        """The groups over which experts hold different weights (EP, ETP): where a norm of
        expert gradients must be summed."""
        return tuple(g for g in (self.ep_group, self.etp_group) if g is not None)


def build_parallel(dims: ParallelDims, device_type: str = "cpu") -> Parallel:
    """Make the mesh (and EP/EDP groups) for ``dims``; the process group must already be
    initialized when ``dims.world > 1``."""
    if dims.world == 1:
        return Parallel(dims=dims)
    if not dist.is_initialized():
        raise LlmbError(f"the layout needs {dims.world} processes; start them with --nproc {dims.world}")
    if dist.get_world_size() != dims.world:
        raise LlmbError(
            f"the layout needs PP*DP*CP*TP = {dims.world} processes, but {dist.get_world_size()} were started"
        )
    mesh = init_device_mesh(
        device_type, (dims.pp, dims.dp, dims.cp, dims.tp), mesh_dim_names=("pp", "dp", "cp", "tp")
    )
    dp_cp_mesh = mesh["dp", "cp"]._flatten("dp_cp")
    par = Parallel(dims=dims, rank=dist.get_rank(), mesh=mesh, dp_cp_mesh=dp_cp_mesh)
    if dims.experts_split:
        stage = dims.dp_cp * dims.tp
        if stage % (dims.ep * dims.etp):
            raise LlmbError(
                f"DP*CP*TP ({stage}) must be divisible by EP*ETP ({dims.ep}*{dims.etp})"
            )
        ranks = torch.arange(dims.world).view(dims.pp, dims.edp, dims.ep, dims.etp)
        emesh = DeviceMesh(device_type, ranks, mesh_dim_names=("epp", "edp", "ep", "etp"))
        par.expert_mesh = emesh
        par.ep_group = emesh["ep"].get_group() if dims.ep > 1 else None
        par.etp_group = emesh["etp"].get_group() if dims.etp > 1 else None
        par.edp_group = emesh["edp"].get_group() if dims.edp > 1 else None
    return par
