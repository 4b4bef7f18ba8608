"""Question -> chat messages -> token ids through the model's own chat template, identical at train,
eval, chat and serve time. Training labels cover the answer and its end-of-turn token only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100

# Used only for models that ship no chat template.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### Question:\n{{ message['content'] }}\n\n"
    "{% else %}### Answer:\n{{ message['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Answer:\n{% endif %}"
)


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> str:
    """Give a template-less tokenizer the plain fallback; return the template in use."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_TEMPLATE
    return tokenizer.chat_template


def messages_for(question: str, answer: str | None = None, history: list[dict] | None = None) -> list[dict]:
    messages = list(history or [])
    messages.append({"role": "user", "content": question})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """Token ids of a conversation ending in a user turn, with the assistant header appended."""
    ensure_chat_template(tokenizer)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    return list(ids["input_ids"] if isinstance(ids, dict) else ids)


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """EOS plus the template's end-of-turn token when it differs (e.g. <|im_end|>, <|eot_id|>)."""
    ids = []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid not in ids:
            ids.append(tid)
    return ids


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def answer_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def encode_pair(tokenizer: PreTrainedTokenizerBase, question: str, answer: str, max_length: int) -> Encoded | None:
    """Prompt tokens get IGNORE_INDEX; answer tokens and the end-of-turn token carry labels.

    Returns None when the prompt alone does not fit in `max_length` (nothing left to learn from).
    """
    ensure_chat_template(tokenizer)
    prompt = prompt_ids(tokenizer, messages_for(question))
    full = tokenizer.apply_chat_template(messages_for(question, answer), tokenize=True, return_dict=False)
    full = list(full["input_ids"] if isinstance(full, dict) else full)
    if full[: len(prompt)] != prompt:
        # Templates that re-render earlier turns differently: fall back to prompt + answer + EOS.
        full = prompt + tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
    stops = set(stop_token_ids(tokenizer))
    end = next((i for i in range(len(prompt), len(full)) if full[i] in stops), None)
    if end is None:
        full = full + [tokenizer.eos_token_id]
        end = len(full) - 1
    full = full[: end + 1]  # drop what the template adds after the end-of-turn token
    if len(prompt) >= max_length:
        return None
    full = full[:max_length]
    labels = [IGNORE_INDEX] * len(prompt) + full[len(prompt) :]
    return Encoded(input_ids=full, labels=labels)
