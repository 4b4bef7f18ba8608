"""Question -> chat messages -> token ids through the model's own chat template, identical at train,
eval, chat and serve time. Training labels cover the answer and its end-of-turn token only."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from qatune.console import QatuneError, warn

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100

# Used only for models that ship no chat template (base models). The answer ends with the EOS token, which
# the tokenizer reads back as its special token; models that expect BOS first get it (see ensure_chat_template).
FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### Question:\n{{ message['content'] }}\n\n"
    "{% else %}### Answer:\n{{ message['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Answer:\n{% endif %}"
)
BOS_PREFIX = "{{ bos_token }}"
# End-of-turn tokens of common families, stopped at when the tokenizer has them as special tokens.
KNOWN_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>")
_PROBE_Q, _PROBE_A, _PROBE_SYSTEM = "Probe question?", "Probe answer.", "Probe system prompt."
_STOPS: weakref.WeakKeyDictionary[Any, tuple[str, list[int]]] = weakref.WeakKeyDictionary()


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> str:
    """Give a template-less tokenizer the plain fallback; return the template in use.

    Models whose tokenizer puts BOS before text (Gemma, Llama) were trained with it first in every sequence
    and degrade badly without it, so their fallback starts with BOS."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = (BOS_PREFIX if _adds_bos(tokenizer) else "") + FALLBACK_TEMPLATE
    return tokenizer.chat_template


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and bos != tokenizer.eos_token_id and tokenizer("a").input_ids[:1] == [bos]


def messages_for(
    question: str, answer: str | None = None, history: list[dict] | None = None, system: str | None = None
) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    messages += list(history or [])
    messages.append({"role": "user", "content": question})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def fold_system(messages: list[dict]) -> list[dict]:
    """A leading system message moved into the first user turn (as Gemma's own template does)."""
    if not messages or messages[0]["role"] != "system":
        return messages
    rest = list(messages[1:])
    first = next((i for i, m in enumerate(rest) if m["role"] == "user"), None)
    if first is None:
        return rest
    rest[first] = {**rest[first], "content": f"{messages[0]['content']}\n\n{rest[first]['content']}"}
    return rest


def has_system_role(tokenizer: PreTrainedTokenizerBase) -> bool:
    """False when the template raises on a system message or silently drops it."""
    conversation = messages_for(_PROBE_Q, system=_PROBE_SYSTEM)
    try:
        rendered = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    except Exception:  # jinja's raise_exception, or a template that indexes the roles it expects
        return False
    return _PROBE_SYSTEM in str(rendered)


def for_template(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[dict]:
    """The conversation as the template accepts it: the system message folded in where it has no system role."""
    if not messages or messages[0]["role"] != "system":
        return messages
    ensure_chat_template(tokenizer)
    return messages if has_system_role(tokenizer) else fold_system(messages)


def _render_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict], generation_prompt: bool) -> list[int]:
    from jinja2.exceptions import TemplateError

    ensure_chat_template(tokenizer)
    try:
        ids = tokenizer.apply_chat_template(
            for_template(tokenizer, messages),
            add_generation_prompt=generation_prompt,
            tokenize=True,
            return_dict=False,
        )
    except TemplateError as exc:
        raise QatuneError(f"the model's chat template refuses this conversation: {exc}") from exc
    return list(ids["input_ids"] if isinstance(ids, dict) else ids)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """Token ids of a conversation ending in a user turn, with the assistant header appended."""
    return _render_ids(tokenizer, messages, generation_prompt=True)


def _is_special(tokenizer: PreTrainedTokenizerBase, tid: int) -> bool:
    added = tokenizer.added_tokens_decoder.get(tid)
    return tid in tokenizer.all_special_ids or bool(added is not None and added.special)


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The special token the template closes an assistant turn with (<|im_end|>, <|eot_id|>, <end_of_turn>,
    </s>, the fallback's EOS), read from a rendered probe turn; None when the turn ends in plain text."""
    prompt = str(tokenizer.apply_chat_template(messages_for(_PROBE_Q), add_generation_prompt=True, tokenize=False))
    full = str(tokenizer.apply_chat_template(messages_for(_PROBE_Q, _PROBE_A), tokenize=False))
    at = full.find(_PROBE_A, len(prompt) if full.startswith(prompt) else 0)
    if at < 0:
        return None
    after = tokenizer.encode(full[at + len(_PROBE_A) :], add_special_tokens=False)
    return after[0] if after and _is_special(tokenizer, after[0]) else None


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """EOS, the template's end-of-turn token, and the known end-of-turn tokens the tokenizer has as special
    tokens: generation stops at any of them (eval, chat, serve, vLLM, export's generation_config)."""
    template = ensure_chat_template(tokenizer)
    cached = _STOPS.get(tokenizer)
    if cached is not None and cached[0] == template:
        return list(cached[1])
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    candidates = [end_of_turn_id(tokenizer), *(tokenizer.convert_tokens_to_ids(t) for t in KNOWN_END_TOKENS)]
    for tid in candidates:
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid not in ids and _is_special(tokenizer, tid):
            ids.append(tid)
    _STOPS[tokenizer] = (template, ids)
    return list(ids)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    cut: bool = False  # the answer did not fit in max_length and lost its end (and its end-of-turn token)

    @property
    def answer_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


@lru_cache(maxsize=8)
def _warn_mismatch(template: str) -> None:
    warn(
        "the chat template renders an assistant turn differently from its generation prompt "
        "(add_generation_prompt); training on the generation prompt + answer + end-of-turn, as answers are generated"
    )


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, question: str, answer: str, max_length: int, system: str | None = None
) -> Encoded | None:
    """Prompt tokens get IGNORE_INDEX; answer tokens and the end-of-turn token carry labels.

    The prompt is `prompt_ids` of the same conversation, so training sees exactly what generation will.
    Returns None when the prompt alone does not fit in `max_length` (nothing left to learn from)."""
    return encode_reply(tokenizer, messages_for(question, system=system), answer, max_length)


def encode_reply(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], answer: str, max_length: int
) -> Encoded | None:
    """`encode_pair` for any conversation ending in a user turn, answered by `answer`."""
    prompt = prompt_ids(tokenizer, messages)
    full = _render_ids(tokenizer, [*messages, {"role": "assistant", "content": answer}], generation_prompt=False)
    stops = stop_token_ids(tokenizer)
    if full[: len(prompt)] != prompt:
        _warn_mismatch(tokenizer.chat_template)
        end_token = end_of_turn_id(tokenizer)
        closing = end_token if end_token is not None else tokenizer.eos_token_id
        full = prompt + tokenizer.encode(answer, add_special_tokens=False) + [closing]
    end = next((i for i in range(len(prompt), len(full)) if full[i] in stops), None)
    if end is None:
        full = full + [tokenizer.eos_token_id]
        end = len(full) - 1
    full = full[: end + 1]  # drop what the template adds after the end-of-turn token
    if len(prompt) >= max_length:
        return None
    cut = len(full) > max_length
    full = full[:max_length]
    labels = [IGNORE_INDEX] * len(prompt) + full[len(prompt) :]
    return Encoded(input_ids=full, labels=labels, cut=cut)
