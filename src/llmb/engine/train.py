"""The training step: GA micro-batches (or a pipeline schedule), global gradient clipping,
AdamW with warm-up + cosine.

The loss of a micro-batch is its summed token cross-entropy divided by the number of tokens
in the whole global batch, and every gradient reduction is a SUM: so the gradients (and the
reported loss) are the global-batch mean whatever the layout, which is what makes one process
and any parallel layout agree step by step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.tensor import DTensor, Shard
from torch.distributed.tensor.parallel import loss_parallel

from llmb.engine.config import ResolvedRun
from llmb.engine.data.synthetic import MicroBatch, SyntheticTokens
from llmb.engine.optim import MasterWeights, align_grad_placements, build_optimizer, clip_grad_norm, lr_lambda
from llmb.engine.parallel import Parallel, build_model_parts, builtin_cp
from llmb.engine.parallel.context import builtin_context, slice_batch
from llmb.engine.parallel.expert import reduce_expert_grads
from llmb.errors import LlmbError


@dataclass(frozen=True)
class StepResult:
    loss: float  # global-batch mean token cross-entropy (nats)
    grad_norm: float  # global L2 norm before clipping
    lr: float  # learning rate used by this step


class Trainer:
    """One rank's model share, optimizer and data; :meth:`step` runs one training step."""

    def __init__(self, run: ResolvedRun, par: Parallel, device: torch.device, data=None):
        self.run, self.par, self.device = run, par, device
        model, derived = run.model, run.derived
        self.ga = derived.ga
        self.global_tokens = run.layout.gbs * model.seq_len
        if run.recipe.dtype == "fp8" and device.type != "cuda":
            raise LlmbError(
                "fp8 needs a CUDA GPU with FP8 tensor cores (H100 or newer) and torchao; "
                "on CPU use --dtype bf16 or fp32"
            )
        self._vocab_mesh = par.sub("tp") if par.dims.tp > 1 else None
        self.parts = build_model_parts(
            model, derived, par, device, run.recipe.dtype, run.request.seed,
            run.request.dp_mode, loss_fn=self._normalized_loss,
        )
        if run.request.compile:
            self._compile()
        params = self.parts.parameters()
        self.master = MasterWeights(params) if self.parts.low_precision_params else None
        opt_params = self.master.masters if self.master else params
        self.optimizer = build_optimizer(opt_params, run.request.lr, run.request.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(run.lr_warmup_steps, run.steps, run.request.min_lr_ratio)
        )
        self.data = data if data is not None else SyntheticTokens(
            vocab=model.vocab, seq_len=model.seq_len, micro_batch=run.layout.mbs, ga=self.ga,
            dp_rank=par.dp_rank, dp_size=par.dims.dp, seed=run.request.seed,
        )
        self._batches = iter(self.data)
        self._builtin_cp = builtin_cp(device, par.dims)

    def _compile(self) -> None:
        for m in self.parts.modules:
            for name, block in list(m.layers.items()):
                m.layers[name] = torch.compile(block)

    def _normalized_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.flatten(0, 1).float()
        if self._vocab_mesh is not None:
            # Under TP the output layer leaves each rank its vocabulary shard of the logits: a
            # vocab-parallel cross entropy (max, sum-exp and target logit reduced over TP)
            # never gathers [tokens, vocab] on one rank. Needs loss_context() around backward.
            logits = DTensor.from_local(logits, self._vocab_mesh, [Shard(1)], run_check=False)
        return F.cross_entropy(logits, labels.flatten(), reduction="sum") / self.global_tokens

    def loss_context(self):
        """Where the loss and its backward must run (torch's loss_parallel under TP)."""
        return loss_parallel() if self._vocab_mesh is not None else contextlib.nullcontext()

    def _next_micro_batches(self) -> list[MicroBatch]:
        cp = self.par.dims.cp
        out = []
        for _ in range(self.ga):
            tokens, labels = next(self._batches)
            if not self._builtin_cp:  # the built-in CP context shards the batch itself
                tokens, labels = slice_batch(tokens, labels, cp, self.par.cp_rank)
            out.append((tokens.to(self.device), labels.to(self.device)))
        return out

    def _forward_backward(self, batches: list[MicroBatch]) -> torch.Tensor:
        """Summed normalized loss of this rank's tokens (0 on non-last pipeline stages)."""
        parts = self.parts
        if parts.schedule is not None:
            tokens = torch.cat([t for t, _ in batches])
            labels = torch.cat([lab for _, lab in batches])
            losses: list[torch.Tensor] = []
            with self.loss_context():
                if parts.is_first_stage and parts.is_last_stage:
                    parts.schedule.step(tokens, target=labels, losses=losses)
                elif parts.is_first_stage:
                    parts.schedule.step(tokens)
                elif parts.is_last_stage:
                    parts.schedule.step(target=labels, losses=losses)
                else:
                    parts.schedule.step()
            total = torch.zeros((), dtype=torch.float64, device=self.device)
            for loss in losses:
                total += _value(loss)
            return total
        model = parts.runnable[0]
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for i, (tokens, labels) in enumerate(batches):
            last = i == len(batches) - 1
            # Reduce gradients once per step, not per micro-batch (as Megatron's distributed
            # optimizer does): DDP skips its all-reduce, FSDP accumulates unsharded gradients
            # and reduce-scatters after the last micro-batch. (Pipeline schedules do the same
            # for FSDP stages themselves.)
            sync = model.no_sync() if parts.ddp and not last else contextlib.nullcontext()
            if parts.fsdp:
                model.set_requires_gradient_sync(last)
            cp_ctx = (
                builtin_context(self.par.sub("cp"), parts.modules[0], tokens, labels)
                if self._builtin_cp else contextlib.nullcontext()
            )
            with sync, cp_ctx, self.loss_context():
                loss = self._normalized_loss(model(tokens), labels)
                loss.backward()
            total += _value(loss)
        return total

    def step(self) -> StepResult:
        lr = self.optimizer.param_groups[0]["lr"]
        total = self._forward_backward(self._next_micro_batches())
        par = self.par
        reduce_expert_grads(self.parts.expert_params, par.edp_group)
        align_grad_placements(self.parts.parameters())
        norm = clip_grad_norm(
            self.parts.parameters(), self.run.request.grad_clip, par.expert_groups, par.group("pp")
        )
        if self.master:
            self.master.grads_to_masters()
        self.optimizer.step()
        self.scheduler.step()
        if self.master:
            self.master.masters_to_params()
            for p in self.master.masters:
                p.grad = None
        for m in self.parts.modules:
            m.zero_grad(set_to_none=True)
        for name in ("dp_cp", "pp"):
            group = par.group(name)
            if group is not None:
                dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        return StepResult(loss=float(total), grad_norm=norm, lr=lr)


def _value(loss: torch.Tensor) -> torch.Tensor:
    """A loss as a plain float64 scalar (a vocab-parallel loss is a DTensor whose reduction
    over TP happens when it is materialized)."""
    loss = loss.detach()
    return (loss.full_tensor() if isinstance(loss, DTensor) else loss).double()
