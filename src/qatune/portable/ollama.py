"""The model's Jinja chat template as an Ollama Go template: the text around each role's content is read off
renders of probe conversations, checked by rebuilding those renders from the pieces, and written as one TEMPLATE
with the template's built-in system prompt (if any) as the Modelfile's SYSTEM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_SYSTEM, _USER, _USER2, _ANSWER = "QATUNEPROBESYSTEM", "QATUNEPROBEUSER", "QATUNEPROBESECOND", "QATUNEPROBEANSWER"


@dataclass(frozen=True)
class Turns:
    """The literal text around each role's content, in the order the template writes it."""

    start: str  # before the first turn (a BOS the template writes itself)
    system: tuple[str, str] | None  # None: the system message goes in front of the first user turn's text
    user: tuple[str, str]
    assistant: tuple[str, str]  # its prefix is also the generation prompt
    default_system: str  # what the template says as system when the conversation has none ("" if nothing)
    system_always: bool = False  # the system turn is written even without a system message (then empty)


def turns(tokenizer: Any, system_role: bool) -> Turns | None:
    """The template's turn texts, or None when its renders do not follow one fixed pattern per role."""
    try:
        return _probe(tokenizer, system_role)
    except (ValueError, IndexError):
        return None


def _render(tokenizer: Any, messages: list[tuple[str, str]], generation_prompt: bool) -> str:
    conversation = [{"role": role, "content": text} for role, text in messages]
    return str(tokenizer.apply_chat_template(conversation, add_generation_prompt=generation_prompt, tokenize=False))


def _between(text: str, left: str | None, right: str | None) -> str:
    start = text.index(left) + len(left) if left else 0
    return text[start : text.index(right, start) if right else len(text)]


def _drop_prefix(text: str, prefix: str) -> str:
    if not text.startswith(prefix):
        raise ValueError("the template writes one role's closing text differently in two places")
    return text[len(prefix) :]


def _probe(tokenizer: Any, system_role: bool) -> Turns:
    chat = _render(tokenizer, [("user", _USER), ("assistant", _ANSWER), ("user", _USER2)], True)
    user_suffix = _between(_render(tokenizer, [("user", _USER)], False), _USER, None)
    assistant_suffix = _between(_render(tokenizer, [("user", _USER), ("assistant", _ANSWER)], False), _ANSWER, None)
    assistant_prefix = _drop_prefix(_between(chat, _USER, _ANSWER), user_suffix)
    user_prefix = _drop_prefix(_between(chat, _ANSWER, _USER2), assistant_suffix)
    head = _between(chat, None, _USER)
    if not head.endswith(user_prefix):
        raise ValueError("the first user turn opens differently from the others")
    bos = getattr(tokenizer, "bos_token", None) or ""
    writes_bos = bool(bos) and "bos_token" in str(tokenizer.chat_template) and head.startswith(bos)
    start = bos if writes_bos else ""
    opening = head[len(start) : len(head) - len(user_prefix)]
    system: tuple[str, str] | None = None
    default_system = ""
    if system_role:
        with_system = _render(tokenizer, [("system", _SYSTEM), ("user", _USER)], True)
        prefix = _drop_prefix(_between(with_system, None, _SYSTEM), start)
        suffix = _between(with_system, _SYSTEM, _USER)
        folded = prefix == opening + user_prefix and suffix == "\n\n"  # Gemma 3: in front of the question
        if not folded:
            if not suffix.endswith(user_prefix):
                raise ValueError("the user turn after a system message opens differently")
            system = (prefix, suffix[: len(suffix) - len(user_prefix)])
    if system and opening:
        if not (opening.startswith(system[0]) and opening.endswith(system[1])):
            raise ValueError("the built-in system prompt is not written as a system turn")
        default_system = opening[len(system[0]) : len(opening) - len(system[1])]
    elif opening:
        raise ValueError("text before the first user turn that is not a system turn")
    always = bool(system and opening)
    found = Turns(
        start, system, (user_prefix, user_suffix), (assistant_prefix, assistant_suffix), default_system, always
    )
    if _rebuilt(found, [("user", _USER), ("assistant", _ANSWER), ("user", _USER2)]) != chat:
        raise ValueError("the pieces do not rebuild the template's render")
    return found


def _rebuilt(found: Turns, messages: list[tuple[str, str]]) -> str:
    parts = [found.start]
    if found.system and found.system_always:
        parts.append(found.system[0] + found.default_system + found.system[1])
    for role, text in messages:
        prefix, suffix = found.user if role == "user" else found.assistant
        parts.append(prefix + text + suffix)
    return "".join(parts) + found.assistant[0]


def go_template(found: Turns, with_start: bool) -> str:
    """The Ollama TEMPLATE. `with_start` False leaves the template's own BOS out (llama.cpp adds it)."""
    user_open, user_close = (_go(p) for p in found.user)
    answer_open, answer_close = (_go(p) for p in found.assistant)
    if found.system:
        system = f"{_go(found.system[0])}{{{{ .System }}}}{_go(found.system[1])}"
        if not found.system_always:
            system = f"{{{{ if .System }}}}{system}{{{{ end }}}}"
        first_user = ""
    else:  # folded in front of the first user turn's text, as qatune and Gemma's templates do
        system = ""
        first_user = '{{ if and $.System (eq $i 1) }}{{ $.System }}{{ "\\n\\n" }}{{ end }}'
    return (
        (_go(found.start) if with_start else "")
        + system
        + "{{ range $i, $_ := .Messages }}"
        + f'{{{{ if eq .Role "user" }}}}{user_open}{first_user}{{{{ .Content }}}}{user_close}'
        + f'{{{{ else if eq .Role "assistant" }}}}{answer_open}{{{{ .Content }}}}{answer_close}'
        + "{{ end }}{{ end }}"
        + answer_open
    )


def _go(text: str) -> str:
    """Literal text for a Go template: `{{` would open an action."""
    return text.replace("{{", '{{ "{{" }}')
