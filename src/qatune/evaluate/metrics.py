"""Per-answer metrics over saved answers: ROUGE (rouge-score), BLEU (sacreBLEU), SQuAD exact match and
token F1, plus the optional BERTScore. Pure functions: no model is loaded here except BERTScore's."""

from __future__ import annotations

import collections
import functools
import importlib.util
import re
import string
from typing import Any

# Order of the metrics in generations.jsonl and scores.json.
METRICS = (
    "rouge1",
    "rouge2",
    "rougeL",
    "bleu",
    "semantic",
    "token_f1",
    "exact_match",
    "fact_recall",
    "wrong_fact",
    "answer_nll",
)
LOWER_IS_BETTER = frozenset({"answer_nll", "wrong_fact"})
BLEU_NOTE = (
    "0-1 scale: sacreBLEU sentence BLEU (13a tokenizer, 'exp' smoothing, effective order) divided by 100; "
    "corpus_bleu is sacreBLEU corpus BLEU over all of a model's answers, also divided by 100"
)
BERTSCORE_MODEL = "roberta-large"


@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F1 with the Porter stemmer (the seed's setting)."""
    scores = _rouge_scorer().score(reference, prediction)
    return {key: float(scores[key].fmeasure) for key in ("rouge1", "rouge2", "rougeL")}


def sentence_bleu(prediction: str, reference: str) -> float:
    import sacrebleu

    return min(1.0, float(sacrebleu.sentence_bleu(prediction, [reference]).score) / 100.0)


def corpus_bleu(predictions: list[str], references: list[str]) -> float | None:
    import sacrebleu

    if not predictions:
        return None
    return min(1.0, float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score) / 100.0)


# SQuAD v1.1 official evaluation script (evaluate-v1.1.py, Rajpurkar et al. 2016): normalize_answer,
# exact_match_score and f1_score. No installed library ships it offline, so the standard definition
# is restated here unchanged.
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, remove punctuation, remove articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_metrics(
    prediction: str, reference: str, *, semantic: float | None, answer_nll: float | None, question: str = ""
) -> dict[str, float | None]:
    """Every metric of one answer, in METRICS order (semantic and NLL come from models, computed by callers).

    fact_recall: the share of the reference's key facts the answer states (None when it has none); wrong_fact:
    1 when the answer states a key fact that neither the reference nor the question holds (qatune.trust.facts)."""
    from qatune.trust.facts import check_facts

    values: dict[str, float | None] = dict(rouge(prediction, reference))
    values["bleu"] = sentence_bleu(prediction, reference)
    values["semantic"] = semantic
    values["token_f1"] = token_f1(prediction, reference)
    values["exact_match"] = exact_match(prediction, reference)
    facts = check_facts(prediction, reference, question)
    values["fact_recall"] = facts.recall
    values["wrong_fact"] = float(facts.has_wrong)
    values["answer_nll"] = answer_nll
    return {key: values[key] for key in METRICS}


def bertscore_unavailable() -> str | None:
    """Why BERTScore cannot run here (None when it can): the package and roberta-large must be local."""
    if importlib.util.find_spec("bert_score") is None:
        return "the bert-score package is not installed (pip install bert-score)"
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(BERTSCORE_MODEL, "config.json")
    if not isinstance(found, str):
        return f"{BERTSCORE_MODEL} is not in the local Hugging Face cache (no download is attempted)"
    return None


def bertscore_f1(predictions: list[str], references: list[str], device: str | None = None) -> list[float]:
    """BERTScore F1 with roberta-large (layer 17, no baseline rescaling), as the seed reported it."""
    from bert_score import score

    _, _, f1 = score(
        list(predictions), list(references), model_type=BERTSCORE_MODEL, lang="en", device=device, verbose=False
    )
    return [float(v) for v in f1.tolist()]
