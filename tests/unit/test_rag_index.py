"""Grounded answers: the retrieval index (search, save/load round trip, rebuilt when training data
changes), the grounded user turn, and the engine's `NAME+rag` models answering with retrieved context."""

from __future__ import annotations

import numpy as np
import pytest

from qatune.console import QatuneError
from qatune.generate import BASE, Engine
from qatune.models.load import load_base, load_tokenizer
from qatune.models.placement import choose_placement
from qatune.prompts import messages_for
from qatune.rag import closed_book, is_grounded
from qatune.rag.baseline import nearest_answers
from qatune.rag.index import Index, build_index, load_index, run_index
from qatune.rag.prompt import grounded_question, shortener
from qatune.rag.retriever import Retriever
from qatune.rundir import RunDir
from qatune.storage import write_jsonl

WORDS = ["room", "teacher", "credits", "exam", "lab"]


class BagOfWords:
    """A stand-in for the MiniLM embedder with the same call shape: one dimension per known word."""

    def encode(self, texts, **_):
        rows = np.array([[float(w in t.lower()) for w in WORDS] + [0.1] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


PAIRS = [
    {"id": "p1", "question": "Which room is the course in?", "answer": "Room 214.", "source_row": 2},
    {"id": "p2", "question": "Who is the teacher?", "answer": "Prof. Okafor.", "source_row": 3},
    {"id": "p3", "question": "How many credits?", "answer": "4 credits.", "source_row": 4},
    {"id": "p1-aug1", "question": "Room?", "answer": "Room 214.", "source_row": 2, "augmented_from": "p1"},
]


def _run(tmp_path):
    rundir = RunDir(tmp_path / "run")
    write_jsonl(rundir.split_file("train"), PAIRS)
    return rundir


def test_index_holds_training_originals_and_finds_the_nearest(tmp_path):
    rundir = _run(tmp_path)
    index = build_index(BagOfWords(), rundir.split_file("train"))
    assert [p["id"] for p in index.pairs] == ["p1", "p2", "p3"]  # rewordings repeat a pair: left out
    hits = index.search(BagOfWords(), ["what room?", "the teacher's name"], k=2)
    assert [h[0][0] for h in hits] == [0, 1] and len(hits[0]) == 2 and hits[0][0][1] >= hits[0][1][1]
    assert index.contexts(BagOfWords(), ["exam credits"], k=1) == [[index.pairs[2]]]


def test_a_question_in_its_answers_words_finds_the_pair_and_the_fallback_reads_questions_only(tmp_path):
    """A pair matches a question by its own question or by its question and answer read together: "exam in which lab
    room" is nearest to the question "Which room is the course in?" but finds the pair whose answer says "exam" and
    "lab". The retrieval baseline ranks the same way, and both report the nearest training question's cosine for the
    fallback, not the match."""
    final = {"id": "p4", "question": "Where is the final?", "answer": "The exam is in the lab.", "source_row": 5}
    asked = "exam in which lab room"
    rundir = RunDir(tmp_path / "run")
    write_jsonl(rundir.split_file("train"), [*PAIRS, final])
    index = build_index(BagOfWords(), rundir.split_file("train"))
    [hits] = index.lookup(BagOfWords(), [asked], k=2)
    assert hits.top[0][0] == 3
    cosines = BagOfWords().encode([asked]) @ index.vectors.T
    assert hits.nearest == pytest.approx(float(cosines.max())) and hits.nearest < hits.top[0][1]
    assert Index(index.pairs, index.vectors).search(BagOfWords(), [asked], k=1)[0][0][0] == 0  # by questions alone
    [match] = nearest_answers(BagOfWords(), index.pairs, [asked], k=2)
    assert match.answer == final["answer"] and match.score == pytest.approx(hits.nearest)
    assert match.runners_up == (index.pairs[hits.top[1][0]]["answer"],)


def test_index_round_trip_and_rebuild_when_training_data_changes(tmp_path):
    rundir = _run(tmp_path)
    first = run_index(rundir, BagOfWords())
    loaded = load_index(rundir.index_dir)
    assert loaded.pairs == first.pairs and np.array_equal(loaded.vectors, first.vectors)
    assert first.pair_vectors is not None and np.array_equal(loaded.pair_vectors, first.pair_vectors)
    write_jsonl(rundir.split_file("train"), PAIRS[:2])
    assert [p["id"] for p in run_index(rundir, BagOfWords()).pairs] == ["p1", "p2"]
    (rundir.index_dir / "vectors.safetensors").write_bytes(b"broken")
    with pytest.raises(QatuneError, match="retrieval index unreadable"):
        load_index(rundir.index_dir)


def test_grounded_names_and_prompt():
    assert is_grounded("best+rag") and closed_book("epoch-4+rag") == "epoch-4" and closed_book("best") == "best"
    text = grounded_question("Where?", [{"question": "Which room?", "answer": "Room 214."}])
    assert text == "Reference Q&A:\nQ: Which room?\nA: Room 214.\n\nQuestion: Where?"


def test_engine_answers_grounded_models_with_retrieved_context(lively_model_dir):
    index = Index(PAIRS[:3], BagOfWords().encode([p["question"] for p in PAIRS[:3]]))
    tok = load_tokenizer(str(lively_model_dir))
    model = load_base(str(lively_model_dir), choose_placement())
    engine = Engine(model, tok, [], "cpu", Retriever(index, BagOfWords(), k=1))
    assert engine.names == [BASE, BASE + "+rag"]
    convs = [messages_for("Which room is it?"), messages_for("Who is the teacher?")]
    grounded = engine.grounded("base+rag", convs)
    assert grounded[0][-1]["content"] == grounded_question("Which room is it?", [PAIRS[0]])
    assert engine.grounded(BASE, convs) == convs
    plain = engine.generate(BASE, convs, max_new_tokens=8)
    with_context = engine.generate("base+rag", convs, max_new_tokens=8)
    assert [g.text for g in with_context] == [g.text for g in engine.generate(BASE, grounded, max_new_tokens=8)]
    assert [g.text for g in with_context] != [g.text for g in plain]
    nll = engine.answer_nll("base+rag", [("Which room is it?", "Room 214.")])
    assert nll == engine.answer_nll(BASE, [(grounded[0][-1]["content"], "Room 214.")])
    closed = Engine(model, tok, [], "cpu")
    assert closed.names == [BASE]
    with pytest.raises(QatuneError, match="needs the run's retrieval index"):
        closed.generate("base+rag", convs)


def test_grounded_prompts_show_long_retrieved_answers_cut_as_grounded_training_did(lively_model_dir):
    """A retrieved answer longer than the answer head is shown by its first `context_head` tokens and ' ...', the
    text grounded training put in its prompts (rag/examples.py uses the same shortener); shorter answers whole; with
    a head of 0 every answer whole."""
    long_answer = " ".join(f"Room {n} is open on weekdays." for n in range(20))
    pairs = [dict(PAIRS[0], answer=long_answer), *PAIRS[1:3]]
    index = Index(pairs, BagOfWords().encode([p["question"] for p in pairs]))
    tok = load_tokenizer(str(lively_model_dir))
    model = load_base(str(lively_model_dir), choose_placement())
    convs = [messages_for("Which room is it?")]
    size = len(tok.encode("Prof. Okafor.", add_special_tokens=False))  # the other retrieved answer fits whole
    cut = Engine(model, tok, [], "cpu", Retriever(index, BagOfWords(), k=2), context_head=size)
    shown = cut.grounded("base+rag", convs)[0][-1]["content"]
    head = tok.decode(tok.encode(long_answer, add_special_tokens=False)[:size]).rstrip()
    assert f"A: {head} ...\n" in shown and long_answer not in shown and "A: Prof. Okafor.\n" in shown
    assert shown == grounded_question("Which room is it?", [pairs[0], pairs[1]], shortener(tok, size))
    whole = Engine(model, tok, [], "cpu", Retriever(index, BagOfWords(), k=2))
    assert f"A: {long_answer}\n" in whole.grounded("base+rag", convs)[0][-1]["content"]
    assert [g.text for g in cut.generate("base+rag", convs, max_new_tokens=6)] == [
        g.text for g in whole.generate(BASE, [[{"role": "user", "content": shown}]], max_new_tokens=6)
    ]


def test_grounded_and_base_answers_get_the_budget_their_retrieved_answers_need(lively_model_dir):
    """fit_budget: a grounded answer (and a closed-book one, whose question has the same pairs) may take what its
    longest retrieved answer needs, never more than max_new_tokens; without an index, the cap.
    stop_on_copy ends a grounded answer once it opens with a retrieved answer's first words."""
    from qatune.generate.budget import fitted_budget
    from qatune.trust.guard import QUOTE_WORDS

    long_answer = " ".join(f"Room {n} is open on weekdays." for n in range(20))
    pairs = [dict(PAIRS[0], answer=long_answer), *PAIRS[1:3]]
    index = Index(pairs, BagOfWords().encode([p["question"] for p in pairs]))
    tok = load_tokenizer(str(lively_model_dir))
    model = load_base(str(lively_model_dir), choose_placement())
    engine = Engine(model, tok, [], "cpu", Retriever(index, BagOfWords(), k=1))
    convs = [messages_for("Which room is it?"), messages_for("Who is the teacher?")]
    sizes = [len(tok.encode(a, add_special_tokens=False)) for a in (long_answer, "Prof. Okafor.")]
    budgets = [fitted_budget(n) for n in sizes]
    assert budgets[0] > budgets[1] == 32
    for name in ("base+rag", BASE):
        got = engine.generate(name, convs, max_new_tokens=1000, fit_budget=True)
        assert all(g.new_tokens <= b for g, b in zip(got, budgets, strict=True))
        assert got[1].new_tokens == 32 or got[1].stopped
    capped = engine.generate("base+rag", convs, max_new_tokens=20, fit_budget=True)
    assert all(g.new_tokens <= 20 for g in capped)
    closed = Engine(model, tok, [], "cpu").generate(BASE, convs, max_new_tokens=40, fit_budget=True)
    assert closed[1].new_tokens == 40 or closed[1].stopped  # no index: the cap
    check = engine._copy_check([[pairs[0]], [pairs[1]]])([0, 1])
    words = long_answer.split()
    assert check(0, tok.encode(" ".join(words[: QUOTE_WORDS + 1]), add_special_tokens=False))
    assert not check(0, tok.encode(" ".join(words[:QUOTE_WORDS]), add_special_tokens=False))  # may still grow
    assert not check(1, tok.encode(" ".join(words[: QUOTE_WORDS + 1]), add_special_tokens=False))


def test_the_fallback_lets_every_validation_question_about_a_trained_fact_through(tmp_path):
    """The threshold saved with the index is the lowest similarity of a validation question about a trained fact:
    every such question is answered (none falls back), and unanswerable validation questions further from the data
    are counted as caught; `unseen` questions (facts never trained) do not set it."""
    from qatune.trust.guard import Guard

    rundir = _run(tmp_path)
    val = ["Which room and which teacher?", "How many credits, and which exam?", "credits?"]
    write_jsonl(rundir.split_file("val"), [{"id": f"v{i}", "question": q, "answer": "x"} for i, q in enumerate(val)])
    with rundir.split_file("val").open("a") as f:
        f.write('{"id": "u1", "question": "What about the weather?", "answer": "x", "kind": "unseen"}\n')
    refusals = ["Where is the lab?", "What is the exam room?"]
    write_jsonl(rundir.split_file("refusals"), [{"question": q, "answer": "no", "part": "val"} for q in refusals])
    index = run_index(rundir, BagOfWords())
    tops = [hits[0][1] for hits in index.search(BagOfWords(), val + refusals, 1)]
    threshold = index.fallback["min_similarity"]
    assert threshold == pytest.approx(min(tops[:3]), abs=1e-4) and threshold < min(tops[:3]) + 1e-9
    guard = Guard.from_pairs("I don't know.", PAIRS, min_similarity=threshold)
    assert not any(guard.falls_back(s) for s in tops[:3])
    assert index.fallback["unanswerable_val_caught"] == sum(s < threshold for s in tops[3:]) == 1
