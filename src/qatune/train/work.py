"""The training still to run, for the run's clock (qatune.eta): counted from RUN/data and the checkpoint a training
would resume from, with the sweep's own epoch list, the grounded examples an epoch trains and the recall questions
validation answers; priced by the machine's rates, which a finished training updates from RUN/train/summary.json."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from qatune.eta.estimate import CHARS_PER_TOKEN, Measured, Rates, Work, answer_tokens, blend
from qatune.rag.examples import grounded_questions
from qatune.rundir import RunDir
from qatune.storage import read_jsonl
from qatune.train import checkpoint
from qatune.train.leads import trains_leads
from qatune.train.lengths import grounded_share
from qatune.train.loop import grounded_per_epoch
from qatune.train.recall import is_recall
from qatune.train.stage import can_resume, is_current
from qatune.train.state import TrainProgress, read_summary
from qatune.train.sweep import sweep_runs

if TYPE_CHECKING:
    from qatune.config import Config, TrainConfig

TEMPLATE_TOKENS = 32  # chat-template tokens around a pair (default system prompt, role headers)
RECALL_FIXED_TOKENS = 30  # a recall answer's cost beside its length (prompt pass, scoring), in decoded tokens
PAIR_FRAME, CONTEXT_FRAME = 8, 30  # characters around each retrieved pair and around the context (rag.prompt)


@dataclass(frozen=True)
class TrainWork(Work):
    epoch_tokens: float  # tokens in one pass over the training examples, estimated from characters
    epochs: float  # passes still to run: the largest epoch of the sweep (independent: their sum), less resumed
    recall_questions: int  # answered greedily at every saved epoch (they pick `best`)
    saves: int  # saved epochs still to come
    resumed: bool = False
    answer_share: float = 0.25  # the share of the epoch's tokens that are answer tokens (they cost more)
    recall_tokens: float = 20.0  # a recall question's reference answer, in tokens (what answering it decodes)

    def seconds_per_token(self, rates: Rates) -> float:
        """The remembered training speed, corrected for this training's answer share: the output layer and the
        loss run only at answer tokens, so long answers train slower per token than short ones."""
        k = rates.answer_token_cost
        return (1 + k * self.answer_share) / (1 + k * rates.train_answer_share) / rates.train_tokens_per_s

    def recall_seconds(self, rates: Rates) -> float:
        """One recall answer: the remembered time, scaled from the reference length it was measured at to this
        one's (an answer costs a fixed part and a part that grows with what it decodes)."""
        scale = (RECALL_FIXED_TOKENS + self.recall_tokens) / (RECALL_FIXED_TOKENS + rates.recall_answer_tokens)
        return rates.recall_s_per_answer * scale

    def left(self, rates: Rates, m: Measured, elapsed: float) -> float:
        recall = self.recall_questions * self.saves * self.recall_seconds(rates)
        if m.epoch_tokens is None:  # still setting up
            tokens = self.epoch_tokens * rates.token_scale * self.epochs
            return max(0.0, rates.train_setup_s - elapsed) + tokens * self.seconds_per_token(rates) + recall
        total, per_token = m.epoch_tokens * self.epochs, blend(self.seconds_per_token(rates), m.seconds, m.tokens)
        return max(0.0, 1 - m.tokens / max(total, 1)) * (total * per_token + recall)

    def learned(self, rates: Rates, m: Measured, seconds: float, rundir: RunDir) -> Rates:
        """Tokens/s of the loop and the answer share it had, the estimate's scale, and (unless resumed) setup and
        recall answering time."""
        summary = read_summary(rundir.train_summary_json)
        new: dict[str, float] = {}
        if summary is not None and (summary.tokens_per_second or 0) > 0:
            new["train_tokens_per_s"] = float(summary.tokens_per_second or 0)
            if (summary.train_tokens or 0) > 0 and (summary.answer_tokens or 0) > 0:
                new["train_answer_share"] = float(summary.answer_tokens or 0) / float(summary.train_tokens or 1)
        if m.epoch_tokens and self.epoch_tokens > 0:
            new["token_scale"] = m.epoch_tokens / self.epoch_tokens
        if not self.resumed and summary is not None:
            validation = float(summary.eval_seconds or 0)
            new["train_setup_s"] = max(1.0, seconds - float(summary.train_seconds or 0) - validation)
            recall_answers = self.recall_questions * len(summary.recall_rougeL_by_epoch)
            if recall_answers and validation > 0:
                new["recall_s_per_answer"] = validation / recall_answers
                new["recall_answer_tokens"] = self.recall_tokens
        return replace(rates, **new)


def work_left(run: Path, config: Config) -> TrainWork | None:
    """What `train` would still do for these inputs; None when it is finished (`is_current`)."""
    if is_current(run, config):
        return None
    rundir, tc = RunDir(run), config.train
    last = checkpoint.latest(rundir.checkpoints_dir) if can_resume(run, config) else None
    progress = TrainProgress.from_json(checkpoint.read_progress(last)) if last is not None else TrainProgress()
    epochs = sum(r.epochs for r in sweep_runs(tc)[progress.sweep_position :]) - (progress.epoch - 1)
    rows = read_jsonl(rundir.split_file("train"))
    tokens, answers = _epoch_tokens(rows, tc)
    recall = [r for r in read_jsonl(rundir.split_file("val")) if is_recall(r)]
    cap = tc.answer_head + 1 if trains_leads(tc, rows) else float("inf")  # a lead and its end-of-turn
    return TrainWork(
        epoch_tokens=tokens,
        epochs=max(0, epochs),
        recall_questions=len(recall),
        saves=max(0, len(tc.epochs) - len(progress.saved)),
        resumed=last is not None,
        answer_share=answers / tokens if tokens > 0 else TrainWork.answer_share,
        recall_tokens=(
            sum(min(cap, answer_tokens(str(r.get("answer", "")))) for r in recall) / len(recall)
            if recall
            else TrainWork.recall_tokens
        ),
    )


def _epoch_tokens(rows: list[dict], tc: TrainConfig) -> tuple[float, float]:
    """Tokens in one pass, and the answer tokens among them: every pair, and the grounded examples an epoch
    trains (each pair asked grounded, with rag_k retrieved pairs of average length in its prompt), truncated to
    max_length as training does. Reworded and grounded examples count their answers' first `answer_head` tokens,
    as training encodes them, and so do all examples where closed-book ones train answer leads."""
    cap = tc.max_length if isinstance(tc.max_length, int) else float("inf")
    head = tc.answer_head * CHARS_PER_TOKEN if tc.answer_head else float("inf")

    def tokens(chars: float) -> float:
        return min(cap, TEMPLATE_TOKENS + chars / CHARS_PER_TOKEN)

    def answer(row: dict, headed: bool = False) -> float:
        chars = len(str(row.get("answer", "")))
        return min(chars, head) if headed else chars

    def chars(row: dict, headed: bool = False) -> float:
        return len(str(row.get("question", ""))) + answer(row, headed)

    originals = [len(str(r.get("answer", ""))) for r in rows if not r.get("augmented_from")]
    leads = trains_leads(tc, rows)
    headed = [leads or bool(r.get("augmented_from")) for r in rows]
    total = sum(tokens(chars(r, h)) for r, h in zip(rows, headed, strict=True))
    answers = sum(min(cap, answer(r, h) / CHARS_PER_TOKEN) for r, h in zip(rows, headed, strict=True))
    asked = grounded_questions(rows) if tc.grounded else []
    if asked:
        shown = sum(chars(r, True) for r in rows) / len(rows)  # retrieved answers are cut to the head too
        context = tc.rag_k * (shown + PAIR_FRAME) + CONTEXT_FRAME
        grounded = [tokens(chars(r, True) + context) for r in asked]
        per_epoch = grounded_per_epoch(len(grounded), grounded_share(tc.grounded_share, originals))
        total += per_epoch * sum(grounded) / len(grounded)
        answers += per_epoch * sum(min(cap, answer(r, True) / CHARS_PER_TOKEN) for r in asked) / len(asked)
    return total, answers
