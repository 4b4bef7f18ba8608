"""Server parts without a network: request schemas, job limits, whitespace trimming of streams, the Host
check, that each app built by the factory holds its own settings, and the answer check of grounded models."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from qatune.models.load import load_tokenizer
from qatune.serve.app import Settings, create_app, is_loopback
from qatune.serve.completions import Limits, make_job
from qatune.serve.errors import ApiError
from qatune.serve.guard import _host_name
from qatune.serve.schemas import ChatCompletionRequest
from qatune.serve.worker import _Trim
from serve_harness import ScriptedEngine

LIMITS = Limits(max_tokens_cap=1024, default_max_tokens=256, timeout_s=10)


def _request(**fields):
    return ChatCompletionRequest.model_validate(
        {"model": "best", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


@given(st.lists(st.text(alphabet=" \n\tab\u00a0é", max_size=6), max_size=12))
def test_trimmed_stream_equals_stripped_text(pieces):
    trim = _Trim()
    assert "".join(trim.feed(p) for p in pieces) == "".join(pieces).strip()


def test_stop_accepts_a_string_or_up_to_four_strings():
    assert _request(stop="###").stop == ["###"]
    assert _request(stop=["a", "", "b"]).stop == ["a", "b"]
    with pytest.raises(ValidationError):
        _request(stop=["1", "2", "3", "4", "5"])


def test_messages_map_to_the_chat_template_roles():
    body = _request(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Who "}, {"type": "text", "text": "teaches?"}]},
        ]
    )
    assert [m.as_template_message() for m in body.messages] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who teaches?"},
    ]


def test_job_limits():
    names = ["base", "best"]
    assert make_job(_request(), names, LIMITS).max_tokens == 256
    assert make_job(_request(max_completion_tokens=7), names, LIMITS).max_tokens == 7
    with pytest.raises(ApiError) as err:
        make_job(_request(max_tokens=1025), names, LIMITS)
    assert err.value.status == 400 and err.value.param == "max_tokens"
    with pytest.raises(ApiError) as err:
        make_job(_request(model="epoch-3"), names, LIMITS)
    assert err.value.status == 404


@pytest.mark.parametrize(
    "header, name",
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("localhost", "localhost"),
        ("[::1]:8000", "::1"),
        ("evil.example:80", "evil.example"),
    ],
)
def test_host_header_names(header, name):
    assert _host_name(header) == name


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_each_app_holds_its_own_settings(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    open_app = create_app(Settings(engine=ScriptedEngine(tokenizer, ["best"])))
    keyed_app = create_app(Settings(engine=ScriptedEngine(tokenizer, ["epoch-1"]), api_key="k"))
    with (
        TestClient(open_app, base_url="http://127.0.0.1") as a,
        TestClient(keyed_app, base_url="http://127.0.0.1") as b,
    ):
        assert [m["id"] for m in a.get("/v1/models").json()["data"]] == ["base", "best"]
        assert b.get("/v1/models").status_code == 401
        assert [m["id"] for m in b.get("/v1/models", headers={"Authorization": "Bearer k"}).json()["data"]] == [
            "base",
            "epoch-1",
        ]
        page = a.get("/")
        scripts = re.findall(r"<script>(.*?)</script>", page.text, flags=re.S)
        digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
        assert f"'sha256-{digest}'" in page.headers["content-security-policy"]
        assert "innerHTML" not in page.text and "insertAdjacentHTML" not in page.text
        assert "http://" not in page.text and "https://" not in page.text  # no external resources


def test_the_server_holds_grounded_requests_to_their_retrieved_pairs():
    """serve/abstain.py: a grounded request is checked against the pairs retrieved for its last question (before
    generating, its question; after, its answer, also with quoting off), so the API refuses where eval does; a
    closed-book one against every pair."""
    from types import SimpleNamespace

    from qatune.serve.abstain import Abstain
    from qatune.trust.guard import Guard
    from qatune.trust.refusal import REFUSALS

    pairs = [
        {"question": "How many credits is DSC 310?", "answer": "DSC 310 is a 4-credit course."},
        {"question": "When are quizzes?", "answer": "Quizzes are in weeks 3 and 6, 2 per week."},
    ]
    looked_up = []

    def lookup(questions):
        looked_up.extend(questions)
        return [(pairs[:1], 0.9) for _ in questions]

    engine = SimpleNamespace(retriever=SimpleNamespace(lookup=lookup))
    abstain = Abstain(Guard.from_pairs(REFUSALS["en"], pairs, quote=None), engine)

    def job(model, question):
        return SimpleNamespace(model=model, messages=[{"role": "user", "content": question}])

    grounded = job("best+rag", "How many credit hours?")
    assert abstain.holds(grounded)
    assert abstain.postcheck(grounded, "The course carries 2 credits.") == REFUSALS["en"]
    assert abstain.postcheck(grounded, "The course carries 4 credits.") == "The course carries 4 credits."
    assert looked_up == ["How many credit hours?"] * 2
    closed = job("best", "How many credit hours?")
    assert abstain.postcheck(closed, "The course carries 2 credits.") == "The course carries 2 credits."
    assert looked_up == ["How many credit hours?"] * 2  # a closed-book model retrieves nothing
    assert abstain.precheck(job("best+rag", "Are there quizzes in week 6?")) == REFUSALS["en"]  # not in its pair
    assert abstain.precheck(job("best", "Are there quizzes in week 6?")) is None  # the data mentions week 6
    assert abstain.precheck(job("best+rag", "How many credits does DSC 310 carry?")) is None
