"""scores.json and combined_responses.json from saved generations, and the results tables printed at
the end of an eval: means with CIs per model, and each model's paired difference from base."""

from __future__ import annotations

from typing import Any

from qatune import console
from qatune.evaluate.abstention import trust_table
from qatune.evaluate.compare import SEED, WIDE_CI_BELOW, mean_ci, paired_difference
from qatune.evaluate.metrics import BLEU_NOTE, LOWER_IS_BETTER, METRICS, corpus_bleu, rouge
from qatune.evaluate.state import QuestionSet
from qatune.generate import BASE
from qatune.rag import RAG_SUFFIX
from qatune.rag.baseline import RETRIEVAL

STOP_RATE_WARN = 0.5
TABLE_DIFFS = ("rougeL", "semantic", "token_f1", "answer_nll")
VS_RETRIEVAL = ("rougeL", "semantic")


def kind_of(model: str) -> str:
    """base; baselines (retrieval, the base model with retrieved context); fine-tuned (closed-book or grounded)."""
    return {BASE: "base", RETRIEVAL: "baseline", BASE + RAG_SUFFIX: "baseline"}.get(model, "fine-tuned")


def _row(by_key: dict, model: str, qid: str) -> dict:
    try:
        return by_key[(model, qid)]
    except KeyError:
        raise RuntimeError(f"no saved answer of {model} for question {qid}") from None


def build_scores(
    qset: QuestionSet,
    models: list[str],
    by_key: dict[tuple[str, str], dict],
    *,
    resamples: int,
    extra: dict[str, dict[tuple[str, str], float]] | None = None,
    unavailable: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Every metric's mean and CI per model, paired comparisons with base, stop rates and warnings."""
    extra = extra or {}
    ids = [str(q["id"]) for q in qset.rows]
    metrics = [*METRICS, *extra]

    def values(model: str, metric: str) -> list[float | None]:
        if metric in extra:
            return [extra[metric].get((model, q)) for q in ids]
        return [_row(by_key, model, q)["metrics"].get(metric) for q in ids]

    # A metric a model has no value for (answer_nll of retrieval) is left out, not reported as null.
    table = {m: _present({k: mean_ci(values(m, k), resamples) for k in metrics}) for m in models}
    comparisons = {
        m: _present({k: paired_difference(values(m, k), values(BASE, k), resamples) for k in metrics})
        for m in models
        if m != BASE
    }
    vs_retrieval = {
        m: _present({k: paired_difference(values(m, k), values(RETRIEVAL, k), resamples) for k in VS_RETRIEVAL})
        for m in models
        if RETRIEVAL in models and kind_of(m) != "base" and m != RETRIEVAL
    }
    stop_rate = {m: sum(bool(_row(by_key, m, q)["stopped"]) for q in ids) / len(ids) for m in models}
    quoted = {m: sum(bool(_row(by_key, m, q).get("quoted")) for q in ids) for m in models}
    chosen = {m: sum(bool(_row(by_key, m, q).get("chosen")) for q in ids) for m in models}
    bleu = {
        m: corpus_bleu([_row(by_key, m, q)["answer"] for q in ids], [_row(by_key, m, q)["reference"] for q in ids])
        for m in models
    }
    unanswerable = sum(1 for q in qset.rows if q.get("answerable") is False)
    by_model = {m: [_row(by_key, m, q) for q in ids] for m in models}
    return {
        "name": qset.name,
        "n": len(ids),
        "n_answerable": len(ids) - unanswerable,
        "n_unanswerable": unanswerable,
        "source": str(qset.source),
        "metrics": metrics,
        "models": table,
        "kinds": {m: kind_of(m) for m in models},
        "comparisons": comparisons,
        "vs_retrieval": vs_retrieval,
        "stop_rate": stop_rate,
        "quoted": {m: n for m, n in quoted.items() if n},  # answers shown as the retrieved answer they copy
        "chosen": {m: n for m, n in chosen.items() if n},  # of those, chosen among the retrieved answers
        "corpus_bleu": bleu,
        "retrieval_ceiling": retrieval_ceiling(ids, by_key, resamples) if RETRIEVAL in models else None,
        "trust": trust_table(by_model, resamples),
        "unavailable": dict(unavailable or {}),
        "warnings": _warnings(len(ids), stop_rate),
        "notes": {
            "bleu": BLEU_NOTE,
            "lower_is_better": sorted(LOWER_IS_BETTER),
            "ci95": f"percentile bootstrap of the mean, {resamples} resamples, seed {SEED}",
            "comparisons": "model minus base on the same questions: paired bootstrap CI of the mean "
            "difference; p from a two-sided paired sign-flip permutation test",
            "vs_retrieval": "model minus the retrieval baseline, paired the same way",
            "quoted": "answers of grounded models shown as one of their retrieved answers, whole: the answer opened "
            "with its first 8 words or was at least --quote ROUGE-L close to it (counted as ended)",
            "chosen": "quoted answers that were chosen, not written: on long answers (--select) a grounded model "
            "answers with the retrieved answer the question makes most probable (docs/long-answers.md)",
            "retrieval_ceiling": "ROUGE-L of the best of the k retrieved training answers of each question, "
            "picked with the reference: the most a grounded model that copies one of them could score. "
            "first_is_best: questions where retrieval's own (first) answer is that best one; a grounded model "
            "can only tie retrieval there",
            "trust": "answerable questions: answered with no wrong key fact (right), answered stating a key fact "
            "that neither the reference nor the question holds (wrong_fact), or abstained; questions the data does "
            "not answer: abstained, or answered (invented; invented_fact: stating a key fact the question does not "
            "hold). Key facts: numbers, dates, times, weekdays, names, codes, phone numbers, e-mails, URLs "
            "(docs/trust.md)",
        },
    }


def retrieval_ceiling(ids: list[str], by_key: dict, resamples: int) -> dict[str, Any] | None:
    """{k, rougeL: mean and CI, first_is_best} from the retrieval rows' `retrieved` answers (runs with
    grounded models); None when the rows do not list runners-up."""
    rows = [by_key.get((RETRIEVAL, q)) for q in ids]
    rows = [r for r in rows if r is None or r.get("answerable") is not False]
    if not rows or any(r is None or len(r.get("retrieved") or []) < 2 for r in rows):
        return None
    each = [[rouge(a, r["reference"])["rougeL"] for a in r["retrieved"]] for r in rows]
    return {
        "k": min(len(r["retrieved"]) for r in rows),
        "rougeL": mean_ci([max(s) for s in each], resamples),
        "first_is_best": sum(s[0] >= max(s) for s in each),
    }


def _present(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in stats.items() if v.get("mean", v.get("diff")) is not None}


def _warnings(n: int, stop_rate: dict[str, float]) -> list[str]:
    found = []
    if n < WIDE_CI_BELOW:
        found.append(
            f"only {n} questions: 95% confidence intervals are wide below {WIDE_CI_BELOW}; "
            "treat differences as indicative, not proven"
        )
    for model, rate in stop_rate.items():
        if model != RETRIEVAL and rate < STOP_RATE_WARN:
            found.append(
                f"{model} ended its answer before the token limit on only {rate:.0%} of questions "
                "(answers run on; raise --max-new-tokens or train longer)"
            )
    return found


def combined_responses(qset: QuestionSet, models: list[str], by_key: dict) -> list[dict]:
    """The seed's comparison file: each question with the base answer and every fine-tuned answer."""
    tuned = [m for m in models if kind_of(m) == "fine-tuned"]
    out = []
    for q in qset.rows:
        qid = str(q["id"])
        out.append(
            {
                "question": q["question"],
                "reference_answer": q["answer"],
                "base_model_response": _row(by_key, BASE, qid)["answer"],
                "fine_tuned_model_responses": {m: _row(by_key, m, qid)["answer"] for m in tuned},
            }
        )
    return out


def _cell(stat: dict[str, Any], signed: bool = False) -> str:
    """ "0.412" over its CI "0.35–0.47" (and "p=0.003" for a comparison); "-" when there is no value."""
    value = stat.get("mean", stat.get("diff"))
    if value is None:
        return "-"
    sign = "+" if signed else ""
    lines = [f"{value:{sign}.3f}"]
    if stat.get("ci95"):
        lo, hi = stat["ci95"]
        lines.append(f"{lo:{sign}.2f}–{hi:{sign}.2f}")
    if stat.get("p") is not None:
        lines.append(f"p={stat['p']:.2g}")
    return "\n".join(lines)


def _header(scores: dict[str, Any], model: str) -> str:
    kind = scores["kinds"][model]
    return model if kind != "baseline" else f"{model}\n(baseline)"


def print_results(scores: dict[str, Any]) -> None:
    """Metrics down, models across (fits a terminal for the usual 3-7 models), then differences from base."""
    models = list(scores["models"])
    rows: list[list[Any]] = [[k, *(_cell(scores["models"][m].get(k, {})) for m in models)] for k in scores["metrics"]]
    rows.append(["stopped", *(f"{scores['stop_rate'][m]:.0%}" for m in models)])
    console.table(
        f"eval '{scores['name']}': mean and 95% CI over {scores['n']} questions",
        ["metric", *(_header(scores, m) for m in models)],
        rows,
    )
    diffs = [k for k in TABLE_DIFFS if k in scores["metrics"]]
    rows = [
        [m, *(_cell(scores["comparisons"][m].get(k, {}), signed=True) for k in diffs)] for m in scores["comparisons"]
    ]
    if rows:
        console.table(
            "difference from base: mean, 95% CI, paired p (answer_nll: lower is better)", ["model", *diffs], rows
        )
    ceiling = scores.get("retrieval_ceiling")
    if ceiling:
        console.info(ceiling_sentence(ceiling, scores["n"]))
    _print_trust(scores)
    for line in scores["warnings"]:
        console.warn(line)


def _share_cell(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    lo, hi = stat["ci95"]
    return f"{stat['mean']:.0%} [{lo:.0%}, {hi:.0%}]"


def _print_trust(scores: dict[str, Any]) -> None:
    trust = scores.get("trust") or {}
    columns = []
    if scores.get("n_answerable"):
        columns += [("answerable", "right"), ("answerable", "wrong_fact"), ("answerable", "abstained")]
    if scores.get("n_unanswerable"):
        columns += [("unanswerable", "abstained"), ("unanswerable", "invented")]
    if not trust or not columns:
        return
    headers = [
        f"{'no answer in data' if part == 'unanswerable' else 'answerable'}: {key.replace('_', ' ')}"
        for part, key in columns
    ]
    rows = [[m, *(_share_cell((trust[m].get(part) or {}).get(key)) for part, key in columns)] for m in trust]
    console.table(f"trust on '{scores['name']}': share of answers [95% CI]", ["model", *headers], rows)


def ceiling_sentence(ceiling: dict[str, Any], n: int) -> str:
    stat = ceiling["rougeL"]
    lo, hi = stat["ci95"]
    return (
        f"copying the best of the {ceiling['k']} retrieved answers (picked with the reference) would score "
        f"ROUGE-L {stat['mean']:.3f} [{lo:.2f}, {hi:.2f}]; retrieval's first answer is that best one on "
        f"{ceiling['first_is_best']} of {n} questions, where a grounded model can at most tie it"
    )
