"""The run's checkpoint, profiling and health settings, checked once before anything starts.

Pure Python (no torch import), like the rest of run resolution (:mod:`llmb.plan.run`):
``llmb run --dry-run`` and the tests resolve them instantly. Every user mistake is one
:class:`~llmb.errors.LlmbError` line.

Step numbers are 1-based iterations, as in the step lines; a checkpoint of step ``N`` holds the
state after ``N`` completed steps and a run resumed from it continues with step ``N + 1``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from llmb.errors import LlmbError

DEFAULT_PG_TIMEOUT_S = 600.0  # a hung collective fails after this long (seconds)


class RunOptions(BaseModel):
    """Checkpoints (:mod:`llmb.engine.checkpoint`), health (:mod:`llmb.engine.health`) and
    profiling (:mod:`llmb.engine.profiling`) of one run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Checkpoints
    save_at_end: bool = False  # ENABLE_CHECKPOINT / --save
    save_every: int | None = None  # steps between checkpoints (--save-every)
    load: str | None = None  # LOAD_CHECKPOINT_PATH / --load: checkpoint, checkpoints or experiment dir
    resume: bool = False  # --resume: latest complete checkpoint of this experiment's earlier runs
    async_save: bool = False
    keep_last: int | None = None  # keep only the newest K complete checkpoints
    #: the complete checkpoint the run starts from, found from ``load`` or ``resume`` when the
    #: run is resolved (an elastic restart starts from the run's own latest one instead)
    start_checkpoint: str | None = None
    #: --init-from: the starting weights of a fresh run (``hf:DIR``, a transformers checkpoint
    #: folder, or a llmb checkpoint); optimizer, schedule and data start anew
    init_from: str | None = None
    #: the source ``init_from`` names, resolved and checked against the model when the run is
    #: resolved (``hf:/abs/dir`` or ``/abs/.../step_N``; :mod:`llmb.plan.pretrained`)
    init_source: str | None = None
    # Health
    max_restarts: int = 0  # torchrun elastic restarts; workers resume from the latest checkpoint
    pg_timeout_s: float = DEFAULT_PG_TIMEOUT_S
    # Profiling
    profile: bool = False  # ENABLE_PROFILE / --profile
    profile_start_step: int | None = None  # PROFILE_START_STEP (recipe default: catalog profile_steps)
    profile_stop_step: int | None = None  # PROFILE_STOP_STEP, inclusive
    profile_ranks: tuple[int, ...] | None = None  # None: rank 0 only; (): every rank
    memory_snapshot: bool = False  # CUDA caching-allocator history over the profiled steps
    nccl_trace: bool = False  # ENABLE_NCCLTRACE

    @property
    def checkpointing(self) -> bool:
        return self.save_at_end or self.save_every is not None


def parse_ranks(text: str | None) -> tuple[int, ...] | None:
    """``"0,3"`` -> ``(0, 3)``; ``"all"`` -> ``()`` (every rank); None/empty -> None."""
    if text is None or text.strip() == "":
        return None
    if text.strip().lower() == "all":
        return ()
    try:
        ranks = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise LlmbError(f"--profile-ranks takes rank numbers separated by commas or 'all', got {text!r}") from None
    if any(r < 0 for r in ranks):
        raise LlmbError(f"--profile-ranks: ranks are >= 0, got {text!r}")
    return ranks


def resolve_options(opts: RunOptions, steps: int, world: int, profile_steps: tuple[int, int]) -> RunOptions:
    """Check ``opts`` against a run of ``steps`` steps on ``world`` ranks; the profiled window
    defaults to the recipe's ``profile_steps``, clipped to the run. (Where the run starts from,
    ``start_checkpoint``, needs the file system: :func:`llmb.plan.run.resolve_run` finds it.)"""
    for name in ("save_every", "keep_last", "profile_start_step", "profile_stop_step"):
        value = getattr(opts, name)
        if value is not None and value <= 0:
            raise LlmbError(f"{name.replace('_', '-')} must be a positive whole number, got {value!r}")
    if opts.max_restarts < 0:
        raise LlmbError(f"--max-restarts must be >= 0, got {opts.max_restarts}")
    if not opts.pg_timeout_s > 0 or opts.pg_timeout_s == float("inf"):
        raise LlmbError(f"--pg-timeout-s must be a finite number of seconds > 0, got {opts.pg_timeout_s}")
    if opts.load and opts.resume:
        raise LlmbError("--load and --resume both choose the checkpoint to start from; give one")
    if opts.init_from and (opts.load or opts.resume):
        raise LlmbError(
            "--init-from gives a fresh run its starting weights; --load/--resume continue a whole run "
            "(weights, optimizer, data): give one"
        )
    if opts.keep_last is not None and not opts.checkpointing:
        raise LlmbError("--keep-last needs checkpoints: add --save-every N or --save")
    if opts.async_save and not opts.checkpointing:
        raise LlmbError("--async-save needs checkpoints: add --save-every N or --save")
    if opts.max_restarts and not opts.save_every:
        raise LlmbError("--max-restarts resumes from the latest checkpoint: add --save-every N")
    if opts.max_restarts and world == 1:
        # One rank runs in-process (no torchrun to restart it).
        raise LlmbError("--max-restarts needs torchrun: use --nproc 2 or more")
    if opts.profile:
        start = opts.profile_start_step or profile_steps[0]
        stop = opts.profile_stop_step or profile_steps[1]
        if opts.profile_start_step is None and opts.profile_stop_step is None and profile_steps[1] > steps:
            # The recipe's window lies beyond a short run: profile the run's last steps instead.
            span = profile_steps[1] - profile_steps[0]
            stop = steps
            start = max(1, steps - span)
        if not 1 <= start <= stop <= steps:
            raise LlmbError(
                f"profiled steps {start}..{stop} must lie within the run's steps 1..{steps} "
                "(PROFILE_START_STEP <= PROFILE_STOP_STEP)"
            )
        ranks = opts.profile_ranks
        if ranks and max(ranks) >= world:
            raise LlmbError(f"--profile-ranks {','.join(map(str, ranks))}: the run has ranks 0..{world - 1}")
        opts = opts.model_copy(update={"profile_start_step": start, "profile_stop_step": stop})
    elif opts.memory_snapshot:
        raise LlmbError("--memory-snapshot records the profiled steps: add --profile")
    return opts
