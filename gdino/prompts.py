"""Class lists -> prompt token ids, with every class's token span recorded. Pure functions.

A class list becomes "cat . remote control ." built token by token: [CLS] + tokens("cat") + "." +
tokens("remote control") + "." + [SEP], so each phrase's span is exact. Lists longer than the model's
256 tokens are split at class boundaries into several prompts (chunks); nothing is ever truncated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .checks import RULE, characters_problem, class_name_problem, show_name


class PromptError(ValueError):
    """The classes or the prompt cannot be turned into a prompt the model reads."""


@dataclass(frozen=True)
class ClassPrompt:
    labels: tuple[str, ...]  # the user's class names; class_id indexes this
    phrases: tuple[str, ...]  # what the model reads, cleaned; several phrases may share a label
    phrase_label: tuple[int, ...]  # phrase index -> label index


@dataclass(frozen=True)
class PromptChunk:
    input_ids: tuple[int, ...]  # [CLS] p . p . ... [SEP]
    spans: tuple[tuple[int, int], ...]  # token range [start, end) of each phrase in this chunk
    phrase_index: tuple[int, ...]  # global phrase index of each span


def clean_phrase(text: str) -> str:
    """Collapse whitespace; '.' and '?' end a phrase for the model, so inside a class name they become
    spaces ("st. bernard" -> "st bernard")."""
    return " ".join(text.replace(".", " ").replace("?", " ").split())


def _check_name(name, what: str) -> str:
    """A label: the store's rule for class names (`checks.class_name_problem`), in the prompt's words."""
    if not isinstance(name, str):
        raise PromptError(f"{what} must be a string, got {type(name).__name__} {show_name(name)}")
    if not name.strip():
        raise PromptError(f"{what} {name!r} is empty; give every class a name, e.g. classes=['cat', 'dog']")
    problem = class_name_problem(name)
    if problem is not None:
        raise PromptError(f"{what} {show_name(name)} {problem}; {RULE}")
    return name


def _check_phrase(phrase, what: str, label: str) -> str:
    """What the model reads: the characters a class name may hold (its length is the model's to limit, in
    tokens: `build_chunks`), with words in it; returns it cleaned (`clean_phrase`)."""
    if not isinstance(phrase, str):
        raise PromptError(f"{what} must be a string, got {type(phrase).__name__} {show_name(phrase)}")
    problem = characters_problem(phrase.strip())
    if problem is not None:
        raise PromptError(f"{what} {show_name(phrase)} {problem}; {RULE}")
    cleaned = clean_phrase(phrase)
    if not cleaned:
        raise PromptError(f"{what} {phrase!r} is empty; give every class a name, e.g. classes=['cat', 'dog']")
    if not any(ch.isalnum() for ch in cleaned):
        # an emoji or symbols: a fine label (the store takes it, for boxes drawn by hand), but nothing to look for
        raise PromptError(f"{what} {show_name(phrase)} has no letters or digits, so the model cannot look for it (it "
                          f"reads words); keep it as the label and give it words to find: '{label}: some words' in a "
                          f"class list ({{{label!r}: ['some words']}} from Python)")
    return cleaned


def parse_classes(classes: Sequence[str] | Mapping[str, str | Sequence[str]]) -> ClassPrompt:
    """A list of names, or {label: phrase or [phrases]} for synonyms -> ClassPrompt.

    Raises PromptError for an empty list, non-string or empty names, names without letters, and
    duplicates (compared case-insensitively, as the uncased text encoder reads them).
    """
    if isinstance(classes, str):
        raise PromptError(f"classes must be a list of names, not one string; did you mean classes=[{classes!r}]? "
                          "For free text use prompt=...")
    if isinstance(classes, Mapping):
        items = list(classes.items())
    elif isinstance(classes, Sequence):
        items = [(c, c) for c in classes]
    else:
        raise PromptError(f"classes must be a list of names or a dict of label -> synonyms, got {type(classes).__name__}")
    if not items:
        raise PromptError("the class list is empty; pass at least one class name, e.g. classes=['cat']")
    labels, phrases, phrase_label = [], [], []
    seen_labels: dict[str, str] = {}
    seen_phrases: dict[str, str] = {}
    for label, synonyms in items:
        _check_name(label, "class name")
        key = clean_phrase(label).lower() or label.strip().casefold()
        if key in seen_labels:
            raise PromptError(f"duplicate class name {label!r} (same as {seen_labels[key]!r}); list each class once")
        seen_labels[key] = label
        if isinstance(synonyms, str):
            synonyms = [synonyms]
        if not isinstance(synonyms, Sequence) or not synonyms:
            raise PromptError(f"class {label!r} needs at least one prompt phrase, e.g. {{'car': ['car', 'automobile']}}")
        for phrase in synonyms:
            what = "class name" if phrase is label else f"prompt phrase of class {show_name(label)}"
            cleaned = _check_phrase(phrase, what, label.strip())
            pkey = cleaned.lower()
            if pkey in seen_phrases:
                raise PromptError(f"the phrase {phrase!r} is given twice ({seen_phrases[pkey]}); each phrase may "
                                  "name one class only")
            seen_phrases[pkey] = f"for class {label!r}"
            phrases.append(cleaned)
            phrase_label.append(len(labels))
        labels.append(label)
    return ClassPrompt(tuple(labels), tuple(phrases), tuple(phrase_label))


def build_chunks(prompt: ClassPrompt, tokenizer, max_len: int = 256) -> list[PromptChunk]:
    """Token ids of the prompt, split at phrase boundaries so that no chunk exceeds `max_len` tokens."""
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    dot_id = tokenizer.convert_tokens_to_ids(".")
    unk_id = tokenizer.unk_token_id
    budget = max_len - 2  # [CLS] and [SEP]
    encoded = tokenizer(list(prompt.phrases), add_special_tokens=False)["input_ids"]
    chunks: list[PromptChunk] = []
    ids, spans, index = [cls_id], [], []
    for p, tokens in enumerate(encoded):
        label = prompt.labels[prompt.phrase_label[p]]
        if not tokens or all(t == unk_id for t in tokens):
            raise PromptError(f"the text encoder knows none of the words in {prompt.phrases[p]!r} (class {label!r}); "
                              "it reads English words: describe this class in words it knows, keeping the label "
                              f"with a synonym ('{label}: some words' in a class list; {{{label!r}: ['some words']}} "
                              "from Python)")
        if len(tokens) + 1 > budget:
            raise PromptError(f"class {label!r} is {len(tokens)} tokens long; the model reads at most {budget - 1} "
                              "tokens per phrase: shorten it")
        if len(ids) - 1 + len(tokens) + 1 > budget:
            chunks.append(PromptChunk(tuple(ids + [sep_id]), tuple(spans), tuple(index)))
            ids, spans, index = [cls_id], [], []
        spans.append((len(ids), len(ids) + len(tokens)))
        index.append(p)
        ids.extend(tokens)
        ids.append(dot_id)
    chunks.append(PromptChunk(tuple(ids + [sep_id]), tuple(spans), tuple(index)))
    return chunks
