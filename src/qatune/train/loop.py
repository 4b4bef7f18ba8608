"""The optimisation loop of one training run: accumulated answer-token-weighted steps, evaluation and model
saving at epoch ends, early stopping, checkpoints, a NaN guard and a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qatune.config import TrainConfig
from qatune.console import QatuneError
from qatune.rundir import RunDir
from qatune.train import checkpoint
from qatune.train.batching import Example, batch_tokens, collate, epoch_order, plan_batches, to_device
from qatune.train.lr import AUTO_LR
from qatune.train.state import EpochResult, TrainProgress
from qatune.train.telemetry import TrainLog

if TYPE_CHECKING:
    from qatune.train.sweep import SweepRun


class TrainingInterrupted(QatuneError):
    """Stopped on request after saving a checkpoint (exit code 130, not a failure of the input)."""


@dataclass
class Setup:
    """Everything the loop needs, built once by train.setup()."""

    rundir: RunDir
    tc: TrainConfig
    accelerator: Any
    model: Any  # the LoRA model, unwrapped
    loss: Any  # AnswerLoss, wrapped for DDP when distributed
    params: dict[str, Any]  # trainable parameters by name
    train: list[Example]  # closed-book examples, then grounded ones from index `grounded_start` on
    val: list[Example]  # rewordings of trained questions (recall): picks the best epoch, drives early stopping
    val_unseen: list[Example]  # pairs whose facts are never trained: shown, never used to pick a model
    pad_id: int
    batch_size: int
    prefix_len: int
    packed: bool
    save_adapter: Callable[[str, dict], None]
    log: TrainLog
    initial: dict[str, Any] = field(default_factory=dict)  # LoRA weights at initialisation
    recall_score: Callable[[], float | None] = lambda: None  # greedy ROUGE-L on the recall questions
    lr: float = AUTO_LR  # tc.lr with `auto` resolved for this model
    grounded_start: int | None = None  # None: no grounded examples

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def rank(self) -> int:
        return self.accelerator.process_index


class StopRequest:
    """First Ctrl-C/SIGTERM: finish the current step, checkpoint, stop. Second Ctrl-C: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def agreed(self, s: Setup) -> bool:
        """All processes stop at the same step (a lone rank leaving would hang the others)."""
        if s.world == 1:
            return self.requested
        import torch

        flag = torch.tensor(float(self.requested), device=s.accelerator.device)
        return bool(s.accelerator.reduce(flag, "max").item())


def grounded_per_epoch(grounded: int, share: float) -> int:
    """Grounded examples trained in each epoch: a `share` of them, at least one (all when share is 1)."""
    return grounded if grounded == 0 or share >= 1 else max(1, round(grounded * share))


def epoch_examples(s: Setup, epoch: int) -> list[int]:
    """Indices of the examples trained in an epoch: every closed-book one and a rotating window of
    `grounded_share` of the grounded ones (the same count every epoch, so every epoch has as many steps)."""
    start = len(s.train) if s.grounded_start is None else s.grounded_start
    grounded = len(s.train) - start
    if grounded == 0 or s.tc.grounded_share >= 1:
        return list(range(len(s.train)))
    take = grounded_per_epoch(grounded, s.tc.grounded_share)
    order = epoch_order(grounded, s.tc.seed, 0)  # one fixed order, walked a window per epoch
    first = (epoch - 1) * take
    return list(range(start)) + [start + order[(first + i) % grounded] for i in range(take)]


def epoch_steps(s: Setup, epoch: int) -> list[list[list[int]]]:
    """Optimizer steps of an epoch, each a list of micro-batches (example indices), from (seed, epoch)."""
    chosen = epoch_examples(s, epoch)
    lengths = [len(s.train[i].input_ids) for i in chosen]
    micro = [
        [chosen[j] for j in batch]
        for batch in plan_batches(lengths, s.tc.seed, epoch, s.batch_size, grouped=not s.packed)
    ]
    return [micro[i : i + s.tc.grad_accum] for i in range(0, len(micro), s.tc.grad_accum)]


def _nan_error(s: Setup, what: str, value: float, progress: TrainProgress) -> QatuneError:
    last = checkpoint.latest(s.rundir.checkpoints_dir)
    kept = f"the last good checkpoint is kept ({last.name})" if last else "no checkpoint was written yet"
    return QatuneError(
        f"training {what} became {value} at epoch {progress.epoch}, step "
        f"{progress.global_step + 1}; stopped ({kept}). Lower the learning rate "
        f"(now {s.lr:g}) or use --precision fp32, then train again"
    )


def train_step(
    s: Setup, micro: list[list[int]], optimizer: Any, scheduler: Any, progress: TrainProgress
) -> dict[str, float]:
    """One optimizer step. Each micro-batch is split across processes; the loss is the mean over the
    step's answer tokens however they are batched, so padding, packing and world size do not change it."""
    import torch

    acc = s.accelerator
    targets = sum(s.train[j].answer_tokens for mb in micro for j in mb)
    total = torch.zeros((), device=acc.device)
    for k, mb in enumerate(micro):
        mine, weight = mb[s.rank :: s.world], 1.0
        if not mine:  # every process must run a forward for DDP; this one contributes nothing
            mine, weight = mb[:1], 0.0
        batch = to_device(collate([s.train[j] for j in mine], s.pad_id, s.prefix_len, s.packed), acc.device)
        sync = acc.no_sync(s.loss) if k + 1 < len(micro) else contextlib.nullcontext()
        with sync:
            loss_sum, _ = s.loss(**batch)
            acc.backward(loss_sum * (weight * s.world / targets))
        total += loss_sum.detach().float() * weight
    if s.world > 1:
        total = acc.reduce(total, "sum")
    loss = total.item() / targets
    if not math.isfinite(loss):
        raise _nan_error(s, "loss", loss, progress)
    grad_norm = float(acc.clip_grad_norm_(list(s.params.values()), s.tc.max_grad_norm))
    if not math.isfinite(grad_norm) and s.accelerator.mixed_precision != "fp16":  # fp16 scaler skips those
        raise _nan_error(s, "gradient norm", grad_norm, progress)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    tokens, answer = batch_tokens([s.train[j] for mb in micro for j in mb])
    return {
        "loss": loss,
        "grad_norm": grad_norm,
        "lr": lr,
        "tokens": tokens,
        "answer": answer,
        "targets": targets,
        "examples": sum(len(mb) for mb in micro),
    }


def evaluate(s: Setup, examples: list[Example] | None = None) -> float | None:
    """Mean loss per answer token (dropout off) over `examples` (default: the recall validation set),
    split across processes."""
    import torch

    examples = s.val if examples is None else examples
    if not examples:
        return None
    module = s.accelerator.unwrap_model(s.loss)
    module.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))[s.rank :: s.world]
    size = max(1, s.batch_size * 2)
    total = torch.zeros((), device=s.accelerator.device)
    count = torch.zeros((), device=s.accelerator.device)
    with torch.no_grad(), s.accelerator.autocast():
        for i in range(0, len(order), size):
            chunk = [examples[j] for j in order[i : i + size]]
            loss_sum, n = module(**to_device(collate(chunk, s.pad_id, s.prefix_len, s.packed), s.accelerator.device))
            total, count = total + loss_sum.float(), count + n
    module.train()
    if s.world > 1:
        total, count = s.accelerator.reduce(total, "sum"), s.accelerator.reduce(count, "sum")
    return total.item() / max(count.item(), 1)


def save_checkpoint(s: Setup, progress: TrainProgress, optimizer: Any, scheduler: Any) -> None:
    if s.accelerator.is_main_process:
        try:
            checkpoint.save(s.rundir.checkpoints_dir, progress.to_json(), s.params, optimizer, scheduler)
        except OSError as exc:
            last = checkpoint.latest(s.rundir.checkpoints_dir)
            kept = f"the previous checkpoint {last.name} is intact" if last else "no earlier checkpoint exists"
            raise QatuneError(
                f"could not write a checkpoint ({exc.strerror or exc}); {kept}. Free space, then "
                f"`qatune train --run {s.rundir.root} --resume`",
                path=s.rundir.checkpoints_dir,
            ) from None
    s.accelerator.wait_for_everyone()


def _record(s: Setup, progress: TrainProgress, stats: dict, seconds: float, plan: SweepRun, i: int, n: int) -> None:
    progress.global_step += 1
    progress.step_in_epoch = i + 1
    progress.train_seconds += seconds
    progress.train_examples += int(stats["examples"])
    progress.train_tokens += int(stats["tokens"])
    progress.answer_tokens += int(stats["answer"])
    progress.epoch_loss_sum += stats["loss"] * stats["targets"]
    progress.epoch_targets += int(stats["targets"])
    epoch = progress.epoch
    if progress.global_step % s.tc.logging_steps == 0 or i + 1 == n:
        row = {
            "step": progress.global_step,
            "epoch": round(epoch - 1 + (i + 1) / n, 4),
            "loss": stats["loss"],
            "lr": stats["lr"],
            "grad_norm": stats["grad_norm"],
            "tokens_per_second": round(stats["tokens"] / max(seconds, 1e-9), 1),
        }
        s.log.step(plan.tagged(row))
    s.log.bar(f"epoch {epoch}", stats["loss"], int(stats["tokens"]), seconds)


def _end_epoch(s: Setup, progress: TrainProgress, plan: SweepRun) -> bool:
    """Evaluate, save requested/best models, update early stopping. True when training should stop.

    `best` is the saved epoch whose greedy answers to the recall questions score the highest ROUGE-L
    (ties: lower recall loss); without recall questions, the epoch with the lowest validation loss."""
    start, epoch, counts = time.perf_counter(), progress.epoch, plan.counts(progress.epoch)
    val = evaluate(s)
    unseen = evaluate(s, s.val_unseen) if s.val_unseen else None
    rouge = s.recall_score() if epoch in plan.saves and counts else None
    progress.eval_seconds += time.perf_counter() - start
    train_loss = progress.epoch_loss_sum / max(progress.epoch_targets, 1)
    progress.history.append(EpochResult(plan.label, epoch, train_loss, val, unseen_loss=unseen, recall_rouge=rouge))
    row = {"step": progress.global_step, "epoch": epoch, "eval_loss": val}
    row.update({k: v for k, v in (("unseen_loss", unseen), ("recall_rougeL", rouge)) if v is not None})
    s.log.evaluation(plan.tagged(row))
    info = {"epoch": epoch, "eval_loss": val, "train_loss": train_loss, "step": progress.global_step}
    if rouge is not None:
        info["recall_rougeL"] = rouge
    if epoch in plan.saves:
        s.save_adapter(f"epoch-{epoch}", info)
        progress.saved = sorted(set(progress.saved) | {epoch})
    best_loss, top = progress.best_loss, progress.best_rouge
    lower = val is None or best_loss is None or val < best_loss
    if rouge is not None or top is not None:
        better = rouge is not None and (top is None or rouge > top + 1e-9 or (abs(rouge - top) <= 1e-9 and lower))
    else:
        better = lower and counts
    if better:
        s.save_adapter("best", info)
        progress.best_epoch, progress.best_rouge = epoch, rouge
    if lower and counts:
        progress.best_loss = val
    progress.bad_epochs = 0 if lower else progress.bad_epochs + 1
    progress.next_epoch()
    patience = s.tc.early_stopping_patience
    progress.stopped_early = bool(
        not plan.independent and patience and val is not None and progress.bad_epochs >= patience
    )
    return progress.stopped_early


def fit(s: Setup, progress: TrainProgress, optimizer: Any, scheduler: Any, plan: SweepRun, stop: StopRequest) -> None:
    """Train one run of the sweep from where `progress` stands to its last epoch."""
    if progress.stopped_early:
        return
    n_steps = len(epoch_steps(s, 1))
    every, last_save = s.tc.checkpoint_steps, time.monotonic()
    done = (progress.epoch - 1) * n_steps + progress.step_in_epoch
    epoch_tokens = sum(len(s.train[i].input_ids) for i in epoch_examples(s, 1))
    s.log.start_bar(f"epoch {progress.epoch}", plan.epochs * n_steps, done, epoch_tokens)
    s.loss.train()
    for epoch in range(progress.epoch, plan.epochs + 1):
        steps = epoch_steps(s, epoch)
        for i in range(progress.step_in_epoch, len(steps)):
            start = time.perf_counter()
            stats = train_step(s, steps[i], optimizer, scheduler, progress)
            _record(s, progress, stats, time.perf_counter() - start, plan, i, len(steps))
            due = (every and progress.global_step % every == 0) or (not every and time.monotonic() - last_save > 600)
            halt = stop.agreed(s)
            if i + 1 < len(steps) and (due or halt):
                save_checkpoint(s, progress, optimizer, scheduler)
                last_save = time.monotonic()
            if halt and i + 1 < len(steps):
                raise _interrupted(s, progress)
        early = _end_epoch(s, progress, plan)
        save_checkpoint(s, progress, optimizer, scheduler)
        last_save = time.monotonic()
        if stop.agreed(s) and epoch < plan.epochs:
            raise _interrupted(s, progress)
        if early:
            break
    s.log.stop_bar()


def _interrupted(s: Setup, progress: TrainProgress) -> TrainingInterrupted:
    s.log.stop_bar()
    return TrainingInterrupted(
        f"interrupted at epoch {progress.epoch}, step {progress.global_step}; "
        f"checkpoint saved. Continue with `qatune train --run {s.rundir.root} --resume`"
    )
