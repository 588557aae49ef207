"""The network model the step-time model (:mod:`llmb.plan.predict`) prices collectives with.

Two levels: NVLink inside a domain of ``domain`` GPUs (8 on HGX H100, 72 on GB200 NVL72) and
each GPU's NIC beyond it. A group is ``size`` ranks ``stride`` apart in the rank order
(TP-CP-DP-PP, Megatron's default), so inner groups land in one domain first. Costs:

* **ring** (all-gather or reduce-scatter): the NVLink part inside the domain, then the
  cross-domain part over the NICs, plus the latency of the ring's ``size - 1`` steps (NCCL's
  own latency model): ``step_s`` for each step that crosses the network, ``NVLINK_STEP_RATIO``
  of it for each NVLink step, so that at fixed bytes a larger group is slower;
* **all-to-all**: the slower of the NVLink and NIC shares of the exchange, plus one step
  latency per peer (the same ``step_s``, ``NVLINK_STEP_RATIO`` of it for a peer inside the
  domain): NCCL has no all-to-all kernel, callers (Megatron-Core's ``all_to_all``, torch's
  ``all_to_all_single``) issue a send and a receive to every peer in one group, so that at
  fixed bytes an exchange among more ranks is slower, as a ring of more ranks is;
* **p2p**: one transfer over NVLink or the NIC.

Units: bytes, seconds, bandwidths in bytes/s (the catalog's line rates are GB/s, 1e9 bytes/s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# NCCL's tuning model (src/graph/tuning.cc, hwLat, Ring/Simple): an NVLink ring step costs
# 3.4 us against 14 us for a network step.
NVLINK_STEP_RATIO = 3.4 / 14.0


class Links(Protocol):
    """A GPU's links as the catalog states them (:class:`~llmb.catalog.schema.GpuSpec` has them)."""

    @property
    def nvlink_gbps(self) -> float: ...

    @property
    def nic_gbps(self) -> float: ...

    @property
    def nvlink_domain(self) -> int: ...


@dataclass(frozen=True)
class Net:
    """Effective bandwidths (bytes/s) and ring-step latency of one GPU's links."""

    nvlink_bps: float
    nic_bps: float
    domain: int
    step_s: float = 0.0  # latency of one ring step across the network (seconds)

    @classmethod
    def of(cls, links: Links, link_eff: float, ring_step_us: float) -> Net:
        """The network of a GPU whose collectives reach ``link_eff`` of its line rates, with
        ``ring_step_us`` microseconds per network ring step."""
        return cls(
            nvlink_bps=links.nvlink_gbps * 1e9 * link_eff,
            nic_bps=links.nic_gbps * 1e9 * link_eff,
            domain=links.nvlink_domain,
            step_s=ring_step_us * 1e-6,
        )

    def per_domain(self, size: int, stride: int) -> int:
        """Members of a group (``size`` ranks, ``stride`` apart) that share one NVLink domain."""
        if size <= 1:
            return 1
        return max(1, min(size, self.domain // stride)) if stride < self.domain else 1

    def ring(self, nbytes: float, size: int, stride: int) -> float:
        """Reduce-scatter or all-gather of a tensor of ``nbytes`` (its full size) over the group:
        within the domain over NVLink, then across domains over each GPU's NIC; plus the
        latency of the ring's ``size - 1`` steps, ``outer - 1`` of them across the network
        (NCCL's latency model): the pipeline fill that makes large rings slower."""
        if size <= 1 or nbytes <= 0:
            return 0.0
        k = self.per_domain(size, stride)
        t = nbytes * (k - 1) / k / self.nvlink_bps
        outer = size // k
        if outer > 1:
            t += nbytes / k * (outer - 1) / outer / self.nic_bps
        t += self.step_s * ((outer - 1) + (size - outer) * NVLINK_STEP_RATIO)
        return t

    def all_to_all(self, nbytes: float, size: int, stride: int) -> float:
        """All-to-all where each GPU holds ``nbytes`` spread evenly over the group: the
        slower of its NVLink and NIC shares, plus one step latency per peer (``size - k``
        across the network, ``k - 1`` inside the domain at ``NVLINK_STEP_RATIO``)."""
        if size <= 1:
            return 0.0
        k = self.per_domain(size, stride)
        inside = nbytes * (k - 1) / size / self.nvlink_bps
        outside = nbytes * (size - k) / size / self.nic_bps
        return max(inside, outside) + self.step_s * ((size - k) + (k - 1) * NVLINK_STEP_RATIO)

    def p2p(self, nbytes: float, same_domain: bool) -> float:
        """One transfer of ``nbytes``, over NVLink when both ends share a domain."""
        return nbytes / (self.nvlink_bps if same_domain else self.nic_bps)
