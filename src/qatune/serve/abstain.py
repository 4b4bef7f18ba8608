"""How the server abstains, as eval does (qatune.trust.guard): a request to a fine-tuned or grounded model may be
answered with the refusal before any generation (the question check, the retrieval fallback), and a fine-tuned
model's answer is checked whole (the fact check, quoting) before it is sent, so its stream arrives in one piece."""

from __future__ import annotations

from typing import Any

from qatune.rag import closed_book, is_grounded
from qatune.serve.worker import Checks
from qatune.trust.guard import Guard, after, before, said_in


class Abstain(Checks):
    """The precheck and postcheck the worker calls for each job of `engine`'s models."""

    def __init__(self, guard: Guard, engine: Any):
        self.guard, self.engine = guard, engine

    def _retriever(self, model: str) -> Any:
        return getattr(self.engine, "retriever", None) if is_grounded(model) else None

    def precheck(self, job: Any) -> str | None:
        tuned = closed_book(job.model) != "base"
        retriever = self._retriever(job.model)
        pairs, top = retriever.lookup([job.messages[-1]["content"]])[0] if retriever is not None else (None, None)
        verdict = before(self.guard, job.messages[-1]["content"], tuned=tuned, top_similarity=top, pairs=pairs)
        return None if verdict is None else verdict.text

    def holds(self, job: Any) -> bool:
        """True when the answer must be complete before any of it is sent (a check may replace it)."""
        grounded = self._retriever(job.model) is not None
        return closed_book(job.model) != "base" and (self.guard.check_facts or (grounded and bool(self.guard.quote)))

    def postcheck(self, job: Any, text: str) -> str:
        retriever = self._retriever(job.model)
        question = job.messages[-1]["content"]
        pairs = None
        if retriever is not None and (self.guard.quote or self.guard.check_facts):
            pairs = retriever.lookup([question])[0][0]
        tuned = closed_book(job.model) != "base"
        return after(self.guard, text, said_in(job.messages), tuned=tuned, pairs=pairs, question=question).text


def run_abstain(run: Any, engine: Any) -> Abstain:
    from qatune.config import load_for_run
    from qatune.rundir import RunDir
    from qatune.trust.run import run_guard

    rundir = RunDir(run)
    return Abstain(run_guard(rundir, load_for_run(rundir.root, None, {}, save=False)), engine)
