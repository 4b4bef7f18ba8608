"""Synthetic but realistic Q&A data for the scaling benchmark: the FAQ of a fictional college's course catalogue.

Every pair states its own facts (course codes, names, rooms, dates, numbers), so no two answers are the same and
retrieval has near-miss distractors, as in a real FAQ. Deterministic for a seed, and nested: the first n pairs
of a larger set are the n pairs of a smaller one, so every size asks about the same first courses.
Short answers are 10-20 words, long answers 60-100 (the short answer followed by details of the same course)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

DEPTS = "BIO CHM PHY MAT STA CSC ECO HIS PSY LIN GEO PHL MUS ART ENG SOC AST NEU DSC ENV".split()
PROGRAMS = ["core science", "quantitative reasoning", "writing intensive", "upper-division elective", "major"]
FIRST = (
    "Amara Bastian Chiara Dmitri Elif Farah Gideon Hana Idris Jonas Keiko Lorenzo Maren Nikhil Odile Pavel "
    "Quinn Rania Soren Tamsin Ulric Vesna Wendell Ximena Yusuf Zofia Anders Beatriz Cormac Delphine"
).split()
LAST = (
    "Achterberg Balogun Castellanos Drummond Eskildsen Fairweather Gallo Halloran Ivanova Jablonski Kowalczyk "
    "Lindqvist Mbeki Novak Okonkwo Petrakis Quintero Rasmussen Szabo Thornbury Uchida Valdivia Whitlock Yilmaz"
).split()
BUILDINGS = ["Hadley Hall", "Marsh Science Center", "Quinlan Library", "Ostrow Building", "Pemberton Annex"]
BOOKS = ["Foundations of", "A Practical Guide to", "Readings in", "Principles of", "Case Studies in"]
SUBJECTS = ["Data Analysis", "Field Methods", "Modern Theory", "Applied Modelling", "Research Design"]
DAYS = ["Monday and Wednesday", "Tuesday and Thursday", "Monday, Wednesday and Friday", "Wednesday and Friday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "September", "October", "November", "December"]
GRADES = ["C", "C+", "B-", "B", "B+"]

# attribute: (training question, test question, short answer); {c} is the course code
ATTRIBUTES: dict[str, tuple[str, str, str]] = {
    "instructor": (
        "Who teaches {c}?",
        "Which professor is in charge of {c}?",
        "{c} is taught by Dr. {prof}, who joined the department in {joined}.",
    ),
    "room": (
        "Where does {c} meet?",
        "In which room are the {c} lectures held?",
        "{c} meets in room {room} of {building}, on the {floor} floor.",
    ),
    "schedule": (
        "When are the {c} lectures?",
        "On which days and at what time does {c} meet?",
        "{c} lectures are on {days} from {start} to {end}.",
    ),
    "dates": (
        "When does {c} start?",
        "What is the first day of {c}?",
        "The first {c} session is on {first_day}, and the last one is on {last_day}.",
    ),
    "credits": (
        "How many credits is {c} worth?",
        "How many credit hours do I get for {c}?",
        "{c} is worth {credits} credits and counts toward the {program} requirement.",
    ),
    "capacity": (
        "How many students can enroll in {c}?",
        "What is the enrollment cap for {c}?",
        "{c} is capped at {cap} students, and its waitlist holds {wait} more.",
    ),
    "prerequisite": (
        "What is the prerequisite for {c}?",
        "Do I need to take another course before {c}?",
        "You need {prereq} with a grade of {grade} or better before taking {c}.",
    ),
    "final": (
        "When is the {c} final exam?",
        "What is the date of the final exam in {c}?",
        "The {c} final exam is on {final_day} at {final_time} in {building}.",
    ),
    "textbook": (
        "Which textbook does {c} use?",
        "What book do I need for {c}?",
        '{c} uses "{book}" by {author}, edition {edition}, sold at the campus bookstore.',
    ),
    "fee": (
        "Is there a lab fee for {c}?",
        "How much extra does {c} cost for lab materials?",
        "Yes, {c} has a lab fee of ${fee}, billed with tuition in week {fee_week}.",
    ),
    "office_hours": (
        "When are the office hours for {c}?",
        "When can I meet the {c} instructor outside class?",
        "Office hours for {c} are {oh_day} from {oh_start} to {oh_end} in {building} {oh_room}.",
    ),
    "assistant": (
        "Who is the teaching assistant for {c}?",
        "Which TA helps with {c}?",
        "The teaching assistant for {c} is {ta}, reachable at {ta_email}.",
    ),
    "grading": (
        "How is {c} graded?",
        "What counts toward the grade in {c}?",
        "{c} grades are homework {hw}%, midterm {mid}%, and final project {proj}%.",
    ),
}

# details of the same course that make a long answer (each 10-18 words)
DETAILS = [
    "Questions about this can be sent to {ta_email}, and replies usually come within {reply} hours.",
    "The course page on the learning portal posts any change at least {notice} days in advance.",
    "Students who miss the first week must contact Dr. {prof} before {first_day} to keep their seat.",
    "Attendance is recorded in every session, and {absences} absences are excused without a note.",
    "The department office in {building} keeps printed copies of the {c} syllabus for anyone who asks.",
    "Late work loses {late}% per day and is not accepted more than {late_days} days after the deadline.",
    "{ta} runs a review session every {review_day} at {review_time} in room {oh_room}.",
    "Group projects in {c} have {team} students each, and teams are assigned in week {team_week}.",
    "The midterm is on {mid_day} and covers everything up to the lecture before it.",
    "Accessibility requests go to the student services desk by {access_day}, with the course code {c}.",
    "Recordings of each {c} lecture stay available for {rec_days} days after the session.",
    "Dr. {prof} also supervises {projects} independent study projects this term, listed on the portal.",
]


def _date(rng: random.Random, year: int) -> str:
    return f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {year}"


def _clock(rng: random.Random, hours: tuple[int, int]) -> str:
    hour, minute = rng.randint(*hours), rng.choice(["00", "15", "30", "45"])
    return f"{hour % 12 or 12}:{minute} {'am' if hour < 12 else 'pm'}"


def _course(code: str, prereq: str, rng: random.Random) -> dict[str, str]:
    """Every fact about one course, drawn once so all its answers agree."""
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    ta_first, ta_last = rng.choice(FIRST), rng.choice(LAST)
    start = rng.randint(8, 15)
    hw = rng.randrange(20, 45, 5)
    mid = rng.randrange(15, 35, 5)
    facts = {
        "c": code,
        "prof": name,
        "joined": str(rng.randint(1998, 2024)),
        "room": str(rng.randint(101, 499)),
        "building": rng.choice(BUILDINGS),
        "floor": rng.choice(["first", "second", "third", "fourth"]),
        "days": rng.choice(DAYS),
        "start": _clock(rng, (start, start)),
        "end": _clock(rng, (start + 1, start + 2)),
        "first_day": _date(rng, 2026),
        "last_day": _date(rng, 2027),
        "credits": str(rng.randint(1, 5)),
        "program": rng.choice(PROGRAMS),
        "cap": str(rng.randrange(20, 220, 5)),
        "wait": str(rng.randint(5, 30)),
        "prereq": prereq,
        "grade": rng.choice(GRADES),
        "final_day": _date(rng, 2027),
        "final_time": _clock(rng, (8, 16)),
        "book": f"{rng.choice(BOOKS)} {rng.choice(SUBJECTS)}",
        "author": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        "edition": str(rng.randint(2, 9)),
        "fee": str(rng.randrange(25, 400, 5)),
        "fee_week": str(rng.randint(2, 6)),
        "oh_day": rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]),
        "oh_start": _clock(rng, (9, 14)),
        "oh_end": _clock(rng, (15, 17)),
        "oh_room": str(rng.randint(101, 499)),
        "ta": f"{ta_first} {ta_last}",
        "ta_email": f"{ta_first[0].lower()}{ta_last.lower()}{rng.randint(10, 99)}@halvorsen.edu",
        "hw": str(hw),
        "mid": str(mid),
        "proj": str(100 - hw - mid),
        "reply": str(rng.choice([24, 36, 48, 72])),
        "notice": str(rng.randint(2, 10)),
        "absences": rng.choice(["two", "three", "four"]),
        "late": str(rng.choice([5, 10, 15, 20])),
        "late_days": str(rng.randint(2, 7)),
        "review_day": rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday"]),
        "review_time": _clock(rng, (16, 19)),
        "team": str(rng.randint(3, 6)),
        "team_week": str(rng.randint(2, 5)),
        "mid_day": _date(rng, 2026),
        "access_day": _date(rng, 2026),
        "rec_days": str(rng.choice([7, 14, 21, 30])),
        "projects": str(rng.randint(2, 9)),
    }
    return facts


def _courses(n: int, seed: int) -> list[dict[str, str]]:
    """n courses with distinct codes; course k depends only on the seed and the courses before it."""
    picker = random.Random(f"{seed}:codes")
    codes: list[str] = []
    seen: set[str] = set()
    while len(codes) < n:
        code = f"{picker.choice(DEPTS)} {picker.randint(100, 499)}"
        if code not in seen:
            seen.add(code)
            codes.append(code)
    courses = []
    for k, code in enumerate(codes):
        prereq = codes[k - 1] if k else f"{code.split()[0]} 101"
        courses.append(_course(code, prereq, random.Random(f"{seed}:course:{k}")))
    return courses


def _long(short: str, facts: dict[str, str], rng: random.Random, words: tuple[int, int]) -> str:
    """The short answer followed by details of the same course: about a random length between words[0] and
    words[1] words, never longer."""
    target = rng.randint(words[0] + 5, words[1] - 5)
    parts, count = [short], len(short.split())
    for template in rng.sample(DETAILS, len(DETAILS)):
        sentence = template.format(**facts)
        if count + len(sentence.split()) <= words[1]:
            parts.append(sentence)
            count += len(sentence.split())
        if count >= target:
            break
    return " ".join(parts)


def pairs(n: int, answers: str = "short", seed: int = 0) -> list[dict[str, str]]:
    """n pairs: pair i asks attribute i % 13 of course i // 13. Each row: question, answer, test_question."""
    names = list(ATTRIBUTES)
    courses = _courses(-(-n // len(names)), seed)
    rows = []
    for i in range(n):
        facts = courses[i // len(names)]
        question, test_question, answer = (t.format(**facts) for t in ATTRIBUTES[names[i % len(names)]])
        if answers == "long":
            answer = _long(answer, facts, random.Random(f"{seed}:long:{i}"), (60, 100))
        elif answers != "short":
            raise ValueError(f"answers must be short or long, not {answers!r}")
        rows.append({"question": question, "answer": answer, "test_question": test_question})
    return rows


def write(
    folder: Path, n: int, answers: str, test_n: int, seed: int = 0, test_from: int | None = None
) -> tuple[Path, Path]:
    """DATA csv (question,answer) and TEST csv: test_n reworded questions about facts among the first
    `test_from` pairs (default n), the same for every size that is at least test_from."""
    rows = pairs(n, answers, seed)
    pool = min(test_from or n, n)
    chosen = sorted(random.Random(f"{seed}:test").sample(range(pool), min(test_n, pool)))
    folder.mkdir(parents=True, exist_ok=True)
    data, test = folder / f"faq_{answers}_{n}.csv", folder / f"test_{answers}_{len(chosen)}_of_{pool}.csv"
    _write_csv(data, [(r["question"], r["answer"]) for r in rows])
    _write_csv(test, [(rows[i]["test_question"], rows[i]["answer"]) for i in chosen])
    return data, test


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "answer"])
        writer.writerows(rows)
