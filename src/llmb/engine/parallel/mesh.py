"""The device mesh of a run, built from its layout.

Dimensions, outermost first: ``pp``, ``dp``, ``cp``, ``tp`` (TP innermost so its heavy traffic
stays on the fastest links, as in Megatron and torchtitan). ``dp`` and ``cp`` are flattened
into ``dp_cp``: FSDP shards over it, the loss is summed over it (CP ranks hold different
tokens of the same samples). Expert parallelism is carved from ``dp_cp`` (ETP = 1): blocks of
EP consecutive ``dp_cp`` ranks form an EP group; ranks with the same position in their blocks
form an expert-data-parallel (EDP) group.

With one process there is no process group and no mesh: every handle is ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from llmb.errors import LlmbError


@dataclass(frozen=True)
class ParallelDims:
    pp: int = 1
    dp: int = 1
    cp: int = 1
    tp: int = 1
    ep: int = 1

    @property
    def world(self) -> int:
        return self.pp * self.dp * self.cp * self.tp

    @property
    def dp_cp(self) -> int:
        return self.dp * self.cp

    @property
    def edp(self) -> int:
        return self.dp_cp // self.ep


@dataclass
class Parallel:
    dims: ParallelDims
    rank: int = 0
    mesh: DeviceMesh | None = None
    dp_cp_mesh: DeviceMesh | None = None  # the flattened dp x cp mesh (kept: torch wants it)
    ep_group: dist.ProcessGroup | None = None
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
    if dims.ep > 1:
        if dims.dp_cp % dims.ep:
            raise LlmbError(f"DP*CP ({dims.dp_cp}) must be divisible by EP ({dims.ep})")
        # Enumerate every dp_cp group of the world (one per pp, tp coordinate), split each.
        ranks = torch.arange(dims.world).view(dims.pp, dims.dp * dims.cp, dims.tp)
        ep_lists, edp_lists = [], []
        for p in range(dims.pp):
            for t in range(dims.tp):
                row = ranks[p, :, t].view(dims.edp, dims.ep)
                ep_lists += [r.tolist() for r in row]
                edp_lists += [c.tolist() for c in row.t()]
        par.ep_group, _ = dist.new_subgroups_by_enumeration(ep_lists)
        if dims.edp > 1:
            par.edp_group, _ = dist.new_subgroups_by_enumeration(edp_lists)
    return par
