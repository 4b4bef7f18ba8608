"""Streamed text: the pieces handed out token by token join to the whole answer cut at its first stop string,
and nothing is sent that a later token would have to take back (half a character, the start of a stop)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qatune.generate.streaming import TextStream, cut_at_stop
from qatune.models.load import load_tokenizer

STOPS = ["###", "\n\n", "é!"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def _pieces(stream: TextStream, tokens: list[int]) -> list[str]:
    return [stream.update(tokens[:k], final=k == len(tokens)) for k in range(1, len(tokens) + 1)]


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(alphabet="ab é—\n#!", max_size=30),
    stop=st.lists(st.sampled_from(STOPS), max_size=2),
    stop_token=st.booleans(),
)
def test_pieces_join_to_the_cut_answer(tokenizer, text, stop, stop_token):
    tokens = tokenizer.encode(text, add_special_tokens=False)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    stream = TextStream(tokenizer, [end], stop or None)
    pieces = _pieces(stream, tokens + [end] * stop_token)
    whole, cut = cut_at_stop(tokenizer.decode(tokens), stop or None)
    assert "".join(pieces) == whole
    assert stream.cut == cut
    assert all("\ufffd" not in p for p in pieces)


def test_the_start_of_a_stop_string_is_held_back(tokenizer):
    tokens = tokenizer.encode("Room 101 ## then ###after", add_special_tokens=False)
    stream = TextStream(tokenizer, [], ["###"])
    sent = ""
    for k in range(1, len(tokens) + 1):
        sent += stream.update(tokens[:k])
        assert "Room 101 ## then ".startswith(sent), sent  # never a "#" that the stop string then takes back
    assert sent == "Room 101 ## then " and stream.cut
    assert stream.update(tokens + tokens, final=True) == ""  # nothing after the stop
