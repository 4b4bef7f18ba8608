"""The refusal text and how an abstention is recognised; near misses and the question banks; the guard that
decides to abstain at answer time."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from qatune.trust.guard import FACT_CHECK, MODEL, QUESTION_CHECK, RETRIEVAL_FALLBACK, Guard
from qatune.trust.refusal import REFUSALS, data_language, is_refusal, refusal_text
from qatune.trust.run import engine_answers as guarded
from qatune.trust.unanswerable import bank, deal, near_misses

EN = REFUSALS["en"]


@pytest.mark.parametrize(
    "answer",
    [
        EN,
        "I'm sorry, I don't know the answer to that. Ask the office.",
        "I don't know.",
        "I do not know which room that is.",
        "I'm sorry, but I don't have access to the schedule.",
        "I cannot answer that from the course information.",
    ],
)
def test_refusals_are_recognised(answer):
    assert is_refusal(answer, EN)


@pytest.mark.parametrize(
    "answer",
    [
        "The lectures are held in Frey Hall 216.",
        "If you do not know the answer, ask the TA during office hours.",
        "No, there is no final exam.",
        "",
    ],
)
def test_answers_are_not_refusals(answer):
    assert not is_refusal(answer, EN)


def test_a_users_own_refusal_is_recognised_word_for_word():
    assert is_refusal("Not covered by the handbook - please email hr@example.com.", "Not covered by the handbook")


def test_the_refusal_follows_the_datas_language():
    german = ["Wann ist die Vorlesung?", "Die Vorlesung ist am Dienstag.", "Wer ist der Dozent?"]
    assert data_language(german) == "de"
    assert refusal_text("auto", german) == REFUSALS["de"]
    assert refusal_text("auto", ["When is the lecture?", "The lecture is on Tuesday."]) == EN
    assert refusal_text("Ask the front desk.", german) == "Ask the front desk."


def test_near_misses_swap_the_one_key_fact_for_one_the_data_never_mentions():
    pairs = [
        {"id": "1", "question": "Who teaches DSC 310?", "answer": "Prof. Okafor teaches DSC 310."},
        {"id": "2", "question": "When are Prof. Okafor's office hours?", "answer": "Wednesdays, 1-3 pm."},
        {"id": "3", "question": "What is covered in week 1?", "answer": "The workflow; weeks 10 to 12: networks."},
        {"id": "4", "question": "Is homework accepted after 4 days?", "answer": "No."},
        {"id": "5", "question": "Is there a final exam?", "answer": "No."},
        {"id": "6", "question": "What happens in DSC 310 on 10/20?", "answer": "The midterm."},
    ]
    texts = [t for p in pairs for t in (p["question"], p["answer"])] + ["DSC 410 is another course."]
    made = {m["from_id"]: m["question"] for m in near_misses(pairs, texts)}
    assert made["1"] == "Who teaches DSC 510?"  # 410 is mentioned in the data
    assert (
        made["2"].startswith("When are Prof. ") and "Okafor" not in made["2"] and made["2"].endswith("'s office hours?")
    )
    assert made["3"] == "What is covered in week 5?"  # 4 is in the data, 10-12 a range it states
    assert "4" not in made  # an amount ("after 4 days"): a different number is answerable by the same rule
    assert "5" not in made  # no key fact to swap
    assert "6" not in made  # two key facts: the other still ties it to the data


def test_questions_are_dealt_to_parts_in_fixed_shares_by_their_text():
    questions = bank("off-topic") + bank("missing-detail")
    assert len(questions) > 200 and len(set(questions)) == len(questions)
    parts = deal(questions, 42)
    assert [parts.count(p) for p in ("train", "val", "eval")] == [117, 47, 70]  # 234 questions: half, a fifth, the rest
    assert dict(zip(questions, parts, strict=True)) == dict(
        zip(questions[::-1], deal(questions[::-1], 42), strict=True)
    )
    assert parts != deal(questions, 43)
    few = deal(["a?", "b?", "c?", "d?", "e?"], 42, with_eval=False)
    assert sorted(few) == ["train", "train", "train", "val", "val"]


PAIRS = [{"question": "When are office hours?", "answer": "Prof. Okafor holds them on Wednesdays at 1:00 pm."}]


def test_the_guard_replaces_an_answer_with_a_fact_no_training_pair_holds():
    guard = Guard.from_pairs(EN, PAIRS, min_similarity=None, check_facts=True)
    kept = guard.judge("Prof. Okafor holds them on Wednesdays.", "When are office hours?")
    assert not kept.abstained and kept.text == "Prof. Okafor holds them on Wednesdays."
    replaced = guard.judge("Call Prof. Okafor at 555-123-4567 on Fridays.", "How do I reach the professor?")
    assert replaced.abstained and replaced.by == FACT_CHECK and replaced.text == EN
    assert replaced.raw.startswith("Call") and set(replaced.unknown) == {"555-123-4567", "Fridays"}
    assert not guard.judge("Call 555-123-4567.", "Is 555-123-4567 the number?").abstained  # the user said it
    assert not guard.judge("Call 555-123-4567.", "?", fine_tuned=False).abstained  # base is shown as it is
    own = guard.judge(EN, "What is the capital of Peru?")
    assert own.abstained and own.by == MODEL


class _Engine:
    """Answers every conversation with a phone number; the retriever ranks by a fixed similarity."""

    def __init__(self, similarity):
        self.asked = []
        self.retriever = SimpleNamespace(lookup=lambda qs: [([{"answer": "Room 101."}], similarity(q)) for q in qs])

    def generate(self, model, conversations, **kwargs):
        self.asked.append((model, [c[-1]["content"] for c in conversations], kwargs.get("references")))
        return [SimpleNamespace(text="Call 555-123-4567.", stopped=True, new_tokens=5) for _ in conversations]


def test_guarded_answers_fall_back_without_generating_and_check_the_rest():
    guard = Guard.from_pairs(EN, PAIRS, min_similarity=0.4, check_facts=True, check_questions=False)
    engine = _Engine(lambda q: 0.9 if "office" in q else 0.1)
    convs = [[{"role": "user", "content": q}] for q in ("Capital of Peru?", "office phone?", "office 555-123-4567?")]
    out = guarded(engine, guard, "best+rag", convs, references=["a", "b", "c"], max_new_tokens=8)
    assert [v.by for v, _ in out] == [RETRIEVAL_FALLBACK, FACT_CHECK, None]
    assert out[0][1] is None and out[0][0].text == EN
    assert engine.asked == [("best+rag", ["office phone?", "office 555-123-4567?"], ["b", "c"])]
    closed = guarded(engine, guard, "best", convs[:1], max_new_tokens=8)  # no fallback without retrieval
    assert closed[0][0].by == FACT_CHECK and closed[0][1] is not None


def test_the_question_check_abstains_on_what_the_data_never_mentions():
    pairs = [
        {"question": "Who teaches DSC 310?", "answer": "Prof. Okafor teaches it."},
        {"question": "What is covered in week 1?", "answer": "The workflow; weeks 10 to 12 cover networks."},
        {"question": "How do I email the instructor?", "answer": "Put [DSC310] in the subject line."},
    ]
    guard = Guard.from_pairs(EN, pairs)
    assert guard.gaps("Who teaches DSC 410?").unknown == ("code DSC 410",)
    assert guard.gaps("What is covered in week 5?").unknown == ("week 5",)
    assert guard.gaps("What is the instructor's email address?").unknown == ("asks for a email",)
    assert guard.gaps("When are Dr. Novak's office hours?").unknown == ("name Novak",)
    for answerable in ("Who is the professor for DSC 310?", "What is covered in week 11?", "Is Prof. Okafor nice?"):
        assert guard.gaps(answerable) is None, answerable
    engine = _Engine(lambda q: 0.9)
    out = guarded(engine, guard, "best", [[{"role": "user", "content": "Who teaches DSC 410?"}]], max_new_tokens=8)
    assert out[0][0].by == QUESTION_CHECK and out[0][1] is None and engine.asked == []
    assert guarded(engine, guard, "base", [[{"role": "user", "content": "Who teaches DSC 410?"}]])[0][1] is not None


def test_a_grounded_answer_close_to_a_retrieved_one_is_quoted_word_for_word():
    guard = Guard.from_pairs(EN, PAIRS, quote=0.5, check_facts=False)
    retrieved = ["Lectures meet on Tuesdays from 2:00 pm to 4:45 pm.", "The lab meets in room B12."]
    close = guard.quoting(guard.judge("The lectures meet Tuesdays from 2:00 to 4:45 pm.", "?"), retrieved)
    assert close.quoted and close.text == retrieved[0] and close.raw.startswith("The lectures meet")
    far = guard.quoting(guard.judge("Ask the department office.", "?"), retrieved)
    assert not far.quoted and far.text == "Ask the department office."
    assert not guard.quoting(guard.judge(EN, "?"), retrieved).quoted  # a refusal stays a refusal


def test_a_close_answer_with_a_specific_its_retrieved_answers_lack_is_refused_not_quoted():
    """Asked about week 5 with week 1's pair, the model wrote week 1's answer about week 5: ROUGE-L close, but shown
    as week 1's answer it would answer another question. The fact check refuses it; without the fact check, for
    base+rag, or when the answer's specifics are all in a retrieved answer, it is quoted as before."""
    from qatune.trust.guard import after

    pairs = [
        {"question": "What is covered in week 1?", "answer": "Week 1 covers the machine learning workflow."},
        {"question": "What does the midterm cover?", "answer": "The midterm covers weeks 1 through 7."},
    ]
    guard = Guard.from_pairs(EN, pairs, quote=0.5)
    fitted = after(
        guard, "Week 5 covers the machine learning workflow.", "What is covered in week 5?", tuned=True, pairs=pairs
    )
    assert fitted.abstained and fitted.by == FACT_CHECK and fitted.unknown == ("5",) and fitted.text == EN
    assert fitted.raw == "Week 5 covers the machine learning workflow."
    agreeing = after(guard, "In week 1 we cover the machine learning workflow.", "Week 1?", tuned=True, pairs=pairs)
    assert agreeing.quoted and agreeing.text == pairs[0]["answer"]
    base = after(guard, "Week 5 covers the machine learning workflow.", "Week 5?", tuned=False, pairs=pairs)
    assert base.quoted and base.text == pairs[0]["answer"]  # base+rag is shown as it answers, quoted
    unchecked = Guard.from_pairs(EN, pairs, quote=0.5, check_facts=False)
    shown = after(unchecked, "Week 5 covers the machine learning workflow.", "Week 5?", tuned=True, pairs=pairs)
    assert shown.quoted and shown.text == pairs[0]["answer"]


def test_a_grounded_answer_that_opens_with_a_retrieved_answer_is_that_answer_whole():
    """Copying is decided on the first QUOTE_WORDS words, so an answer whose decoding stopped there is shown the
    same as the whole answer would be, before the fact check (a training answer's facts are known)."""
    from qatune.trust.guard import QUOTE_WORDS, after, opens_with

    long_answer = "Install the package with apt-get install foo, then run foo --setup as root on port 8080 daily."
    retrieved = ["Lectures meet Tuesdays.", long_answer]
    pairs = [{"question": "?", "answer": answer} for answer in retrieved]
    guard = Guard.from_pairs(EN, PAIRS, quote=0.5)
    words = long_answer.split()
    for cut in (QUOTE_WORDS, QUOTE_WORDS + 3, len(words)):
        shown = after(guard, " ".join(words[:cut]), "?", tuned=True, pairs=pairs)
        assert shown.text == long_answer and not shown.abstained
        assert shown.quoted == (cut < len(words))
    invented = " ".join(words[:QUOTE_WORDS]) + " and call 555-0199 on 12 March 2031."
    assert after(guard, invented, "?", tuned=True, pairs=pairs).text == long_answer
    strict = Guard.from_pairs(EN, PAIRS, quote=0.9)  # seven words are not ROUGE-L close to the whole answer
    assert not after(strict, " ".join(words[: QUOTE_WORDS - 1]), "?", tuned=True, pairs=pairs).quoted
    assert after(guard, "Lectures meet Tuesdays.", "?", tuned=True, pairs=pairs).text == retrieved[0]
    off = Guard.from_pairs(EN, PAIRS, quote=None, check_facts=False)
    assert after(off, " ".join(words[:QUOTE_WORDS]), "?", tuned=True, pairs=pairs).text != long_answer
    assert opens_with(words[:QUOTE_WORDS] + ["x"], words, complete=True)
    assert not opens_with(words[:QUOTE_WORDS], words, complete=True)  # its last word may still grow


def test_a_grounded_answer_in_its_own_words_states_only_facts_of_its_retrieved_pairs():
    """Facts found elsewhere in the data were not read from the context: a grounded answer that states one is
    replaced by the refusal, also when it is close to a retrieved answer; a quoted answer that agrees with it, a
    closed-book one (checked against every pair) and base are not."""
    from qatune.trust.guard import after

    pairs = [
        {"question": "How many credits is DSC 310?", "answer": "DSC 310 is a 4-credit course."},
        {"question": "When are quizzes?", "answer": "Quizzes are in weeks 3 and 6, 2 per week, on Fridays."},
        {"question": "Who is the TA?", "answer": "The TA is Marcus Lindqvist."},
    ]
    guard = Guard.from_pairs(EN, pairs, quote=0.5)
    retrieved = pairs[:1] + pairs[2:]  # what a question about credits retrieves
    invented = after(guard, "The course carries 2 credits.", "How many credit hours?", tuned=True, pairs=retrieved)
    assert invented.abstained and invented.by == FACT_CHECK and invented.text == EN and invented.unknown == ("2",)
    assert invented.raw == "The course carries 2 credits."
    kept = after(guard, "The course carries 4 credits.", "How many credit hours?", tuned=True, pairs=retrieved)
    assert not kept.abstained and kept.text == "The course carries 4 credits."
    assert not after(guard, "It carries 2 credits.", "2 credits?", tuned=True, pairs=retrieved).abstained  # said
    assert not after(guard, "The course carries 2 credits.", "?", tuned=False, pairs=retrieved).abstained  # base
    assert not after(guard, "The course carries 2 credits.", "?", tuned=True).abstained  # closed-book: 2 is known
    quoted = after(guard, "DSC 310 is a 4-credit course, they say.", "?", tuned=True, pairs=retrieved)
    assert quoted.quoted and quoted.text == pairs[0]["answer"]
    stray = after(guard, "DSC 310 is a 4-credit course, 2 of them.", "?", tuned=True, pairs=retrieved)
    assert stray.by == FACT_CHECK and stray.unknown == ("2",)  # close, but not what the retrieved answer says
    named = after(guard, "Marcus Lindqvist teaches it on Fridays.", "Who?", tuned=True, pairs=retrieved)
    assert named.by == FACT_CHECK and named.unknown == ("Fridays",)
    off = Guard.from_pairs(EN, pairs, quote=0.5, check_facts=False)
    assert not after(off, "The course carries 2 credits.", "?", tuned=True, pairs=retrieved).abstained


def test_a_grounded_model_refuses_a_question_whose_specific_none_of_its_retrieved_pairs_mentions():
    """The question check held to the context: "week 5" is in the data (weeks 4 to 6), but a grounded model given
    only the week 1 pair cannot answer for week 5; given the pair that covers it, or asked a specific its pairs
    name, it answers. The data-wide check and the retrieval fallback come first; base is not checked."""
    from qatune.trust.guard import before

    pairs = [
        {"question": "What is covered in week 1?", "answer": "Week 1 covers the machine learning workflow."},
        {"question": "What do weeks 4 to 6 cover?", "answer": "Weeks 4 to 6 cover tree ensembles."},
        {"question": "Who teaches DSC 310?", "answer": "Prof. Okafor teaches DSC 310."},
    ]
    guard = Guard.from_pairs(EN, pairs, min_similarity=0.4)
    week_one = [pairs[0], pairs[2]]
    refused = before(guard, "What is covered in week 5?", tuned=True, top_similarity=0.8, pairs=week_one)
    assert refused.by == QUESTION_CHECK and refused.text == EN
    assert refused.unknown == ("week 5 (not in the retrieved pairs)",)
    assert before(guard, "What is covered in week 5?", tuned=True, top_similarity=0.8, pairs=pairs[:2]) is None
    assert before(guard, "What is covered in week 1?", tuned=True, top_similarity=0.8, pairs=week_one) is None
    assert before(guard, "What is covered in week 5?", tuned=False, top_similarity=0.8, pairs=week_one) is None
    assert before(guard, "What is covered in week 5?", tuned=True, top_similarity=0.1, pairs=week_one).by == (
        RETRIEVAL_FALLBACK
    )
    assert before(guard, "What is covered in week 9?", tuned=True, pairs=week_one).unknown == ("week 9",)
    off = Guard.from_pairs(EN, pairs, check_questions=False)
    assert before(off, "What is covered in week 5?", tuned=True, pairs=week_one) is None
