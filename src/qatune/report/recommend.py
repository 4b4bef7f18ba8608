"""Which model to ship, decided from held-out scores and their CIs (plus validation loss and stop rate):
a pure function over the loaded scores.json and train/summary.json."""

from __future__ import annotations

from typing import Any

from qatune.rag import closed_book, grounded_name, is_grounded
from qatune.report.load import comparison, epoch_of, kind_of, model_order, number, stat
from qatune.report.tables import ceiling_note, fmt, fmt_p, fmt_stat
from qatune.train.state import TrainSummary

PRIMARY = ("rougeL", "semantic")
NEAR_TIE = 0.01  # ROUGE-L means closer than this are treated as a tie
LEVEL = 0.02  # ROUGE-L means closer than this are level: then the model that abstains where another invents wins
LOW_STOP_RATE = 0.9
SMALL_N = 30


def _candidate(scores: dict[str, Any], summary: TrainSummary | None, model: str) -> dict[str, Any]:
    vs_base: dict[str, Any] = {}
    for metric in PRIMARY:
        c = comparison(scores, model, metric)
        if c is not None:
            vs_base[metric] = {"diff": c[0], "ci95": [c[1], c[2]], "p": c[3]}
    better = [m for m, c in vs_base.items() if c["ci95"][0] is not None and c["ci95"][0] > 0]
    worse = [m for m, c in vs_base.items() if c["ci95"][1] is not None and c["ci95"][1] < 0]
    means = {m: stat(scores, model, m) for m in PRIMARY}
    losses = summary.eval_loss_by_epoch if summary is not None else {}
    epochs = epoch_of(model, summary)
    vs_retrieval = ((scores.get("vs_retrieval") or {}).get(model) or {}).get("rougeL")
    return {
        "model": model,
        "grounded": is_grounded(model),
        "vs_retrieval": vs_retrieval if isinstance(vs_retrieval, dict) else None,
        "epochs": epochs,
        **{m: None if s is None else {"mean": s[0], "ci95": [s[1], s[2]]} for m, s in means.items()},
        "vs_base": vs_base,
        "significant": bool(better) and not worse,
        "stop_rate": number((scores.get("stop_rate") or {}).get(model)),
        "eval_loss": number(losses.get(str(epochs))) if epochs is not None else None,
    }


def _mean(c: dict[str, Any], metric: str) -> float:
    entry = c.get(metric)
    return entry["mean"] if entry else float("-inf")


def _pick(cands: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Best mean ROUGE-L (then semantic); near-ties go to lower validation loss, then fewer epochs."""
    ranked = sorted(cands, key=lambda c: (_mean(c, "rougeL"), _mean(c, "semantic")), reverse=True)
    top = ranked[0]
    tied = [c for c in ranked if _mean(top, "rougeL") - _mean(c, "rougeL") < NEAR_TIE]
    if len(tied) == 1:
        return top, []
    losses = [c["eval_loss"] for c in tied if c["eval_loss"] is not None]
    pool = tied
    if len(losses) == len(tied):
        pool = [c for c in tied if c["eval_loss"] <= min(losses) * 1.01]
    chosen = min(pool, key=lambda c: c["epochs"] if c["epochs"] is not None else 10**6)
    names = ", ".join(c["model"] for c in tied)
    why = (
        f"{names} are within {NEAR_TIE} ROUGE-L of each other; {chosen['model']} is preferred for its "
        "lower validation loss / fewer epochs (less overfitting, cheaper to train)"
    )
    return chosen, [why]


def val_loss_trend(summary: TrainSummary | None) -> str | None:
    """One sentence on validation loss by epoch: where it bottomed out and whether it rose after."""
    raw = summary.eval_loss_by_epoch if summary is not None else {}
    points = sorted((int(k), number(v)) for k, v in raw.items() if k.isdigit() and number(v) is not None)
    if len(points) < 2:
        return None
    best_epoch, best = min(points, key=lambda p: p[1])
    last_epoch, last = points[-1]
    first_epoch, first = points[0]
    what = "validation loss"
    if summary is not None and summary.recall_rougeL_by_epoch:
        what = "validation loss (reworded questions about trained facts)"
    text = f"{what} went from {first:.3f} (epoch {first_epoch}) to a low of {best:.3f} (epoch {best_epoch})"
    if last_epoch != best_epoch and last > best * 1.02:
        return text + f", then rose to {last:.3f} by epoch {last_epoch}: later epochs overfit"
    if last_epoch == best_epoch:
        return text + ", still falling at the last epoch: more epochs may help"
    return text + f" and stayed flat to epoch {last_epoch}"


def _change(c: dict[str, Any], metric: str = "rougeL") -> str:
    comp = c["vs_base"].get(metric)
    if not comp:
        return f"{metric} vs base unavailable"
    lo, hi = comp["ci95"]
    sign = "+" if comp["diff"] >= 0 else ""
    return f"{sign}{fmt_stat((comp['diff'], lo, hi))} (p {fmt_p(comp['p'])})"


def _dedupe_best(cands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`best` is a copy of one epoch-N: keep the explicit epoch name when both were scored."""
    names = {c["model"] for c in cands}
    return [
        c
        for c in cands
        if not (closed_book(c["model"]) == "best" and c["model"].replace("best", f"epoch-{c['epochs']}") in names)
    ]


def _notes(scores: dict[str, Any], summary: TrainSummary | None, chosen: dict[str, Any] | None) -> list[str]:
    notes = []
    n = number(scores.get("n"))
    if n is not None and n < SMALL_N:
        notes.append(f"only {int(n)} held-out questions: confidence intervals are wide")
    trend = val_loss_trend(summary)
    if trend:
        notes.append(trend[0].upper() + trend[1:])
    ceiling = ceiling_note(scores)
    if ceiling and any(is_grounded(str(m)) and m != grounded_name("base") for m in scores.get("models") or {}):
        notes.append(ceiling)
    note = trust_note(chosen) if chosen else None
    if note:
        notes.append(note)
    if chosen and chosen["stop_rate"] is not None and chosen["stop_rate"] < LOW_STOP_RATE:
        notes.append(
            f"only {chosen['stop_rate']:.0%} of {chosen['model']}'s answers ended at end-of-turn; "
            "the rest ran to max_new_tokens (raise it, or train longer)"
        )
    return notes


def recommend(
    scores: dict[str, Any] | None,
    summary: TrainSummary | None,
    eval_set: str = "test",
    others: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """{"model", "verdict", "reason", "evidence"}; model is None when nothing should ship yet. The decision
    uses `scores` (the main held-out set); `others` (more eval sets by name) only add notes."""
    if not scores or not scores.get("models"):
        return {
            "model": None,
            "verdict": "no-evaluation",
            "reason": "No held-out evaluation yet: run `qatune eval` to score base and the fine-tuned models.",
            "evidence": {"eval_set": eval_set, "notes": []},
        }
    models = model_order(list(scores["models"]))
    cands = _dedupe_best([_candidate(scores, summary, m) for m in models if kind_of(scores, m) == "fine-tuned"])
    retrieval = _candidate(scores, summary, "retrieval") if "retrieval" in models else None
    base = stat(scores, "base", "rougeL")
    evidence: dict[str, Any] = {
        "eval_set": eval_set,
        "n": scores.get("n"),
        "criterion": "fine-tuned model whose ROUGE-L or semantic similarity beats base with a "
        "paired 95% CI excluding zero (and neither is significantly worse)",
        "base": {"rougeL": None if base is None else {"mean": base[0], "ci95": [base[1], base[2]]}},
        "candidates": cands,
        "retrieval": retrieval,
    }
    for c in cands:
        c["trust"] = _trust_of(c["model"], scores, others or {})
    significant = [c for c in cands if c["significant"]]
    if significant:
        chosen, tie = _pick(significant)
        chosen, trusted = _prefer_trust(chosen, significant)
        tie += trusted
        reason = (
            f"Ship {chosen['model']}{_how(chosen)}: it beats base on {_held(scores)} held-out questions "
            f"({eval_set}) with ROUGE-L {_change(chosen)}, semantic similarity {_change(chosen, 'semantic')}"
            f"; mean ROUGE-L {fmt(_mean(chosen, 'rougeL'))} vs base {fmt(base[0] if base else None)}."
        )
        verdict = "ship"
        if retrieval and _retrieval_wins(chosen, retrieval):
            verdict = "retrieval-beats-fine-tuning"
            reason = (
                f"Ship retrieval (a lookup of the training answers): it scores mean ROUGE-L "
                f"{fmt(_mean(retrieval, 'rougeL'))} vs {fmt(_mean(chosen, 'rougeL'))} for the best model, "
                f"{chosen['model']}, whose paired difference {_vs_retrieval(chosen)} excludes zero. "
                f"{chosen['model']} still beats base (ROUGE-L {_change(chosen)})."
            )
            evidence["notes"] = tie + _notes(scores, summary, chosen) + _elsewhere(chosen, summary, others or {})
            return {"model": None, "verdict": verdict, "reason": reason, "evidence": evidence}
        if retrieval and _mean(retrieval, "rougeL") > _mean(chosen, "rougeL"):
            reason += (
                f" Note: retrieval beats fine-tuning on mean ROUGE-L ({fmt(_mean(retrieval, 'rougeL'))}"
                f" vs {fmt(_mean(chosen, 'rougeL'))}): a plain lookup of training answers may be enough."
            )
        evidence["notes"] = tie + _notes(scores, summary, chosen) + _elsewhere(chosen, summary, others or {})
        return {"model": chosen["model"], "verdict": verdict, "reason": reason, "evidence": evidence}
    return _nothing(scores, summary, cands, retrieval, evidence)


def _trust_of(model: str, scores: dict[str, Any], others: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The model's abstention on questions the data does not answer (the main set's own, else another set's)
    and its share of answers with a wrong key fact on the main set."""
    mine = ((scores.get("trust") or {}).get(model) or {}) if isinstance(scores.get("trust"), dict) else {}
    unanswerable, source = mine.get("unanswerable"), scores.get("name")
    for name, other in others.items():
        if unanswerable:
            break
        unanswerable, source = ((other.get("trust") or {}).get(model) or {}).get("unanswerable"), name
    answerable = mine.get("answerable") or {}
    return {
        "unanswerable_set": source if unanswerable else None,
        "abstained_unanswerable": (unanswerable or {}).get("abstained"),
        "n_unanswerable": (unanswerable or {}).get("n"),
        "abstained_answerable": answerable.get("abstained"),
        "wrong_fact": answerable.get("wrong_fact"),
    }


def _share(c: dict[str, Any], key: str) -> float | None:
    return number(((c.get("trust") or {}).get(key) or {}).get("mean"))


def _prefer_trust(chosen: dict[str, Any], pool: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Among models level with the chosen one on ROUGE-L, never prefer one that invents where another abstains:
    the one that abstains most on questions the data does not answer wins (then fewer wrong key facts)."""
    level = [c for c in pool if abs(_mean(c, "rougeL") - _mean(chosen, "rougeL")) < LEVEL]
    scored = [c for c in level if _share(c, "abstained_unanswerable") is not None]
    if chosen not in scored or len(scored) < 2:
        return chosen, []
    best = max(scored, key=lambda c: (_share(c, "abstained_unanswerable"), -(_share(c, "wrong_fact") or 0.0)))
    if _share(best, "abstained_unanswerable") <= _share(chosen, "abstained_unanswerable"):
        return chosen, []
    where = best["trust"]["unanswerable_set"]
    return best, [
        f"{best['model']} is preferred over {chosen['model']} (ROUGE-L within {LEVEL}): on the questions the data "
        f"does not answer ('{where}') it abstains on {_share(best, 'abstained_unanswerable'):.0%} where "
        f"{chosen['model']} abstains on {_share(chosen, 'abstained_unanswerable'):.0%} and invents the rest"
    ]


def trust_note(c: dict[str, Any]) -> str | None:
    """How far the chosen model can be trusted, in one sentence."""
    t = c.get("trust") or {}
    parts = []
    if _share(c, "abstained_unanswerable") is not None:
        stat = t["abstained_unanswerable"]
        lo, hi = stat.get("ci95") or [None, None]
        ci = f" [{lo:.0%}, {hi:.0%}]" if lo is not None and hi is not None else ""
        parts.append(
            f"on {t['n_unanswerable']} questions the data does not answer ('{t['unanswerable_set']}') "
            f"{c['model']} abstains on {stat['mean']:.0%}{ci} and invents an answer to the rest"
        )
    if _share(c, "wrong_fact") is not None:
        parts.append(
            f"on the answerable ones it abstains on {_share(c, 'abstained_answerable') or 0:.0%} and states a wrong "
            f"key fact in {_share(c, 'wrong_fact'):.0%} of its answers"
        )
    return ("Trust: " + "; ".join(parts)) if parts else None


def _how(c: dict[str, Any]) -> str:
    return " (grounded: it answers with retrieved training pairs in its prompt)" if c["grounded"] else ""


def _vs_retrieval(c: dict[str, Any]) -> str:
    comp = c.get("vs_retrieval") or {}
    ci = comp.get("ci95") or [None, None]
    if number(comp.get("diff")) is None:
        return "unavailable"
    sign = "+" if comp["diff"] >= 0 else ""
    return f"{sign}{fmt_stat((comp['diff'], number(ci[0]), number(ci[1])))}"


def _retrieval_wins(chosen: dict[str, Any], retrieval: dict[str, Any]) -> bool:
    """Retrieval is better on mean ROUGE-L and the paired CI of (model - retrieval) lies below zero."""
    comp = chosen.get("vs_retrieval") or {}
    high = number((comp.get("ci95") or [None, None])[1])
    return _mean(retrieval, "rougeL") > _mean(chosen, "rougeL") and high is not None and high < 0


def _elsewhere(chosen: dict[str, Any], summary: TrainSummary | None, others: dict[str, dict[str, Any]]) -> list[str]:
    """How the chosen model fares on the other eval sets (e.g. paraphrased questions)."""
    notes = []
    for name, scores in others.items():
        if scores.get("n_answerable") == 0:
            continue  # no reference answers to compare with (questions the data does not answer)
        if chosen["model"] in (scores.get("models") or {}):
            other = _candidate(scores, summary, chosen["model"])
            state = "significant" if other["significant"] else "not significant"
            notes.append(
                f"on '{name}' ({_held(scores)} questions) {chosen['model']} scores ROUGE-L "
                f"{_change(other)} vs base ({state})"
            )
    return notes


def _held(scores: dict[str, Any]) -> str:
    n = number(scores.get("n"))
    return "?" if n is None else str(int(n))


def _nothing(
    scores: dict[str, Any],
    summary: TrainSummary | None,
    cands: list[dict[str, Any]],
    retrieval: dict[str, Any] | None,
    evidence: dict[str, Any],
) -> dict[str, Any]:
    evidence["notes"] = _notes(scores, summary, None)
    if not cands:
        return {
            "model": None,
            "verdict": "ship-nothing",
            "reason": "Ship nothing yet: no fine-tuned model was evaluated (run `qatune train`, then `qatune eval`).",
            "evidence": evidence,
        }
    top, _ = _pick(cands)
    reason = (
        f"Ship nothing yet: no fine-tuned model beats base with a 95% CI that excludes zero on "
        f"{_held(scores)} held-out questions (closest: {top['model']}, ROUGE-L {_change(top)})."
    )
    verdict = "ship-nothing"
    if retrieval and _mean(retrieval, "rougeL") > _mean(top, "rougeL"):
        verdict = "retrieval-beats-fine-tuning"
        reason += (
            f" Retrieval beats fine-tuning: returning the nearest training answer scores mean ROUGE-L "
            f"{fmt(_mean(retrieval, 'rougeL'))} vs {fmt(_mean(top, 'rougeL'))} for {top['model']}."
        )
    return {"model": None, "verdict": verdict, "reason": reason, "evidence": evidence}
