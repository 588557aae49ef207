"""The training step: GA micro-batches (or a pipeline schedule), global gradient clipping,
AdamW with warm-up + cosine.

The loss of a micro-batch is its summed token cross-entropy divided by the number of tokens
in the whole global batch, and every gradient reduction is a SUM: so the gradients (and the
reported loss) are the global-batch mean whatever the layout, which is what makes one process
and any parallel layout agree step by step.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.tensor import DTensor, Shard
from torch.distributed.tensor.parallel import loss_parallel

from llmb.catalog.schema import ModelSpec
from llmb.engine.data.synthetic import MicroBatch, SyntheticTokens
from llmb.engine.optim import MasterWeights, align_grad_placements, build_optimizer, clip_grad_norm, lr_lambda
from llmb.engine.parallel import Parallel, build_model_parts, builtin_cp
from llmb.engine.parallel.context import builtin_context, slice_batch
from llmb.engine.parallel.expert import EXPERT_ATTR, reduce_expert_grads
from llmb.errors import LlmbError
from llmb.plan.run import ResolvedRun

_ADAMW_STATE = ("step", "exp_avg", "exp_avg_sq")
#: The state key holding the checkpoint's description (a JSON string), and its format version.
DESCRIPTION_KEY = "llmb"
DESCRIPTION_FORMAT = 1


@dataclass(frozen=True)
class StepResult:
    loss: float  # global-batch mean token cross-entropy (nats)
    grad_norm: float  # global L2 norm before clipping
    lr: float  # learning rate used by this step


class Trainer:
    """One rank's model share, optimizer and data; :meth:`step` runs one training step.

    Its state (:meth:`state_dict` / :meth:`load_state_dict`, torch's ``Stateful`` protocol) uses
    names that do not depend on the layout, so a checkpoint of one layout loads into another:

    - ``tensors``: ``model.<fqn>``, the fp32 weights (the fp32 master copies when the model
      holds bf16 weights), and ``optim.<fqn>.{step,exp_avg,exp_avg_sq}``, AdamW's state of that
      parameter; ``<fqn>`` is the parameter's name in one unparallelized model (pipeline
      chunks keep global layer numbers; ``torch.compile``'s ``_orig_mod.`` is removed).
      Sharded weights are DTensors (FSDP2 shards, TP slices); expert weights, plain per-rank
      slices ``[experts/EP, ...]`` with the FFN width split by ETP, are presented as DTensors
      sharded over the (EP, ETP) mesh;
    - ``train``: completed steps, LR scheduler state, data position, the layout that saved it;
    - ``rng.rank<r>``: this rank's torch RNG state;
    - ``llmb``: what the checkpoint is, as one JSON string (:func:`describe`): the llmb version,
      the model spec, the layout, workload, size and dtype. A checkpoint is self-describing:
      any DCP reader (``dcp_to_torch_save`` too) keeps it, and ``llmb ckpt export`` /
      ``llmb eval`` rebuild the model from it alone.
    """

    def __init__(self, run: ResolvedRun, par: Parallel, device: torch.device, data=None):
        self.run, self.par, self.device = run, par, device
        model, derived = run.model, run.derived
        self.ga = derived.ga
        self.global_tokens = run.layout.gbs * model.seq_len
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
        self.completed_steps = 0
        # Expert weights are plain local slices: their DTensor view for a state dict.
        self._expert_mesh = par.expert_mesh["ep", "etp"] if par.expert_mesh is not None else None

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
        self.completed_steps += 1
        return StepResult(loss=float(total), grad_norm=norm, lr=lr)

    # -- state ---------------------------------------------------------------------------------
    @property
    def rng_key(self) -> str:
        return f"rng.rank{self.par.rank}"

    def state_dict(self) -> dict[str, Any]:
        """The state after :attr:`completed_steps` steps (see the class docstring); tensors are
        the live ones, so loading into them restores the trainer in place."""
        self._ensure_optimizer_state()
        return {"tensors": self._tensors(), "train": self._train_state(), self.rng_key: self._rng(),
                DESCRIPTION_KEY: json.dumps(describe(self.run))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Finish restoring from ``state``, a :meth:`state_dict` whose tensors a checkpoint was
        loaded into and whose other values it replaced (without ``rng.rank<r>`` when the
        checkpoint had no RNG state for this rank)."""
        saved = state.get(DESCRIPTION_KEY)
        if saved is not None:  # checkpoints written before llmb recorded it have none
            check_fits(json.loads(saved), self.run.model)
        if self.master:
            self.master.masters_to_params()
        train = state["train"]
        self.scheduler.load_state_dict(train["scheduler"])
        for group, lr in zip(self.optimizer.param_groups, train["lr"]):
            group["lr"] = lr
        self._restore_data(train["data"])
        rng = state.get(self.rng_key)
        if rng is not None:
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"])
        self.completed_steps = int(train["step"])

    def _named(self) -> list[tuple[str, torch.nn.Parameter, torch.Tensor]]:
        """(fqn, model parameter, the tensor AdamW updates) for this rank's parameters."""
        named = [(n.replace("_orig_mod.", ""), p) for m in self.parts.modules for n, p in m.named_parameters()]
        masters = self.master.masters if self.master else [p for _, p in named]
        if len(masters) != len(named):
            raise RuntimeError("master weights do not match the model's parameters")
        return [(n, p, q) for (n, p), q in zip(named, masters)]

    def _ensure_optimizer_state(self) -> None:
        """AdamW creates its state at the first step; a load before it needs targets to fill."""
        opt = self.optimizer
        if not isinstance(opt, torch.optim.AdamW) or any(g.get("amsgrad") for g in opt.param_groups):
            raise LlmbError("checkpoints support the engine's AdamW optimizer (no amsgrad) only")
        for group in opt.param_groups:
            for q in group["params"]:
                if q not in opt.state or not opt.state[q]:
                    opt.state[q] = {
                        "step": torch.tensor(0.0),
                        "exp_avg": torch.zeros_like(q, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(q, memory_format=torch.preserve_format),
                    }

    def _tensors(self) -> dict[str, Any]:
        opt = self.optimizer
        out: dict[str, Any] = {}
        for fqn, p, q in self._named():
            expert = self._expert_mesh is not None and getattr(p, EXPERT_ATTR, False)
            wrap = (lambda t, fqn=fqn: self._as_expert_dtensor(t, fqn)) if expert else (lambda t: t)
            out[f"model.{fqn}"] = wrap(q.detach())
            for key in _ADAMW_STATE:
                value = opt.state[q][key]
                out[f"optim.{fqn}.{key}"] = wrap(value) if key != "step" else value
        for m in self.parts.modules:  # persistent buffers, if a model has any
            params = {n for n, _ in m.named_parameters()}
            for n, b in m.named_buffers():
                if n not in params and _is_persistent(m, n):
                    out[f"buffer.{n.replace('_orig_mod.', '')}"] = b
        return out

    def _as_expert_dtensor(self, local: torch.Tensor, fqn: str):
        # Experts on dim 0; the FFN width is dim 2 of w1/w3 [E, dim, hidden], dim 1 of w2.
        width = 1 if fqn.endswith(".w2") else 2
        # from_local keeps `local` as the storage: a load writes straight into the parameter.
        return DTensor.from_local(local, self._expert_mesh, [Shard(0), Shard(width)], run_check=False)

    def _train_state(self) -> dict[str, Any]:
        data = self.data
        if hasattr(data, "state_dict"):
            data_state = {"kind": type(data).__name__, **data.state_dict()}
        else:  # synthetic tokens: a pure function of (seed, step, sample)
            data_state = {"kind": type(data).__name__, "next_step": self.completed_steps}
        run = self.run
        return {
            "step": self.completed_steps,
            "scheduler": self.scheduler.state_dict(),
            "lr": [g["lr"] for g in self.optimizer.param_groups],
            "data": data_state,
            "world_size": self.par.dims.world,
            "layout": {**run.layout.as_dict(), "dp": run.derived.dp},
            "dtype": run.recipe.dtype,
        }

    def _rng(self) -> dict[str, torch.Tensor]:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def _restore_data(self, saved: dict[str, Any]) -> None:
        data = self.data
        if saved.get("kind") != type(data).__name__:
            raise LlmbError(f"the checkpoint's data came from {saved.get('kind')}, this run reads {type(data).__name__}")
        if hasattr(data, "load_state_dict"):
            data.load_state_dict({k: v for k, v in saved.items() if k != "kind"})
        else:
            data.step = int(saved["next_step"])
        self._batches = iter(data)  # drop anything the old iterator had prepared


def describe(run: ResolvedRun) -> dict[str, Any]:
    """What a checkpoint of ``run`` holds, for the checkpoint itself (key ``llmb``)."""
    from llmb import __version__

    return {
        "llmb_version": __version__, "format": DESCRIPTION_FORMAT,
        "model": run.model.model_dump(mode="json"),
        "layout": {**run.layout.as_dict(), "dp": run.derived.dp},
        "workload": run.recipe.workload.name, "size": run.recipe.size, "proxy": run.proxy,
        "size_label": run.size_label, "dtype": run.recipe.dtype, "world_size": run.world,
    }


def check_fits(description: dict[str, Any], model: ModelSpec) -> None:
    """Refuse a checkpoint whose recorded model is another architecture than ``model`` (shapes
    can agree while the variants differ, e.g. RoPE scaling)."""
    from llmb.catalog.hf_config import architecture_differences

    saved = ModelSpec.model_validate(description["model"])
    diffs = architecture_differences(saved, model)
    if diffs:
        raise LlmbError(
            f"the checkpoint holds another model ({description.get('workload')} {description.get('size_label')}): "
            + "; ".join(diffs[:3]) + (f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else "")
            + " (checkpoint vs this run)"
        )


def _value(loss: torch.Tensor) -> torch.Tensor:
    """A loss as a plain float64 scalar (a vocab-parallel loss is a DTensor whose reduction
    over TP happens when it is materialized)."""
    loss = loss.detach()
    return (loss.full_tensor() if isinstance(loss, DTensor) else loss).double()


def _is_persistent(module: torch.nn.Module, name: str) -> bool:
    *path, leaf = name.split(".")
    owner = module
    for part in path:
        owner = getattr(owner, part)
    return leaf not in owner._non_persistent_buffers_set
