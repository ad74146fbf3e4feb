"""Class lists -> prompt chunks with exact spans; validation of class names."""

import itertools
import logging
import warnings

import pytest
import torch
from tiny_models import WORDS

from gdino.postprocess import class_scores
from gdino.prompts import PromptError, build_chunks, parse_classes

PLAIN_WORDS = [w for w in WORDS if w.isalpha()]


def lvis_sized_class_list(n=1203):
    """n distinct class names made of words the test vocabulary knows (1-3 words each)."""
    names = list(PLAIN_WORDS)
    for a, b in itertools.permutations(PLAIN_WORDS, 2):
        names.append(f"{a} {b}")
    for a, b, c in itertools.permutations(PLAIN_WORDS, 3):
        names.append(f"{a} {b} {c}")
    return names[:n]


def test_caption_and_spans(tokenizer):
    chunks = build_chunks(parse_classes(["cat", "remote control"]), tokenizer)
    assert len(chunks) == 1
    c = chunks[0]
    assert tokenizer.decode(list(c.input_ids)) == "[CLS] cat. remote control. [SEP]"
    assert list(c.input_ids) == tokenizer("cat . remote control .")["input_ids"]  # same as tokenizing the caption
    assert [tokenizer.decode(list(c.input_ids[a:b])) for a, b in c.spans] == ["cat", "remote control"]


def test_lvis_sized_list_is_chunked_without_truncation(tokenizer, caplog):
    names = lvis_sized_class_list()
    assert len(set(names)) == 1203
    prompt = parse_classes(names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.WARNING):
            chunks = build_chunks(prompt, tokenizer, max_len=256)
    assert not [r for r in caplog.records if "sequence length" in r.getMessage()]
    assert len(chunks) > 1 and all(len(c.input_ids) <= 256 for c in chunks)
    covered = [p for c in chunks for p in c.phrase_index]
    assert covered == list(range(1203))  # every class exactly once, in order
    for c in chunks:
        for (a, b), p in zip(c.spans, c.phrase_index, strict=True):
            assert tokenizer.decode(list(c.input_ids[a:b])) == names[p]
            assert c.input_ids[b] == 1012  # every phrase closed by '.'


def test_every_class_of_a_long_list_is_reachable(tokenizer):
    names = lvis_sized_class_list()
    prompt = parse_classes(names)
    reached = set()
    for chunk in build_chunks(prompt, tokenizer):
        for (a, b), p in zip(chunk.spans, chunk.phrase_index, strict=True):
            probs = torch.full((1, len(chunk.input_ids)), 0.1)
            probs[0, a:b] = 0.9  # a query that matches exactly this class's tokens
            label = class_scores(probs, chunk, prompt.phrase_label, len(names)).argmax().item()
            assert label == p  # one phrase per class here, so phrase index == class index
            reached.add(label)
    assert reached == set(range(1203))


def test_special_tokens_never_score_a_class(tokenizer):
    prompt = parse_classes(["cat", "dog"])
    chunk = build_chunks(prompt, tokenizer)[0]
    probs = torch.full((1, len(chunk.input_ids)), 0.05)
    probs[0, 0] = probs[0, -1] = 0.99  # [CLS], [SEP]
    probs[0, 2] = 0.99  # the '.' after cat
    scores = class_scores(probs, chunk, prompt.phrase_label, 2)
    assert torch.allclose(scores, torch.tensor([[0.05, 0.05]]))


def test_synonyms_map_to_one_label(tokenizer):
    prompt = parse_classes({"pet": ["cat", "dog"], "person": "man"})
    assert prompt.labels == ("pet", "person") and prompt.phrases == ("cat", "dog", "man")
    assert prompt.phrase_label == (0, 0, 1)
    chunk = build_chunks(prompt, tokenizer)[0]
    probs = torch.zeros(1, len(chunk.input_ids))
    probs[0, chunk.spans[1][0]] = 0.7  # "dog"
    probs[0, chunk.spans[2][0]] = 0.4  # "man"
    assert torch.allclose(class_scores(probs, chunk, prompt.phrase_label, 2), torch.tensor([[0.7, 0.4]]))


def test_delimiters_inside_a_name_do_not_split_it(tokenizer):
    prompt = parse_classes(["st. bernard?", "cat"])
    assert prompt.phrases[0] == "st bernard" and prompt.labels[0] == "st. bernard?"


@pytest.mark.parametrize(
    "classes, message",
    [
        ([], "class list is empty"),
        ({}, "class list is empty"),
        (["cat", ""], "is empty"),
        (["cat", "   "], "is empty"),
        (["cat", "..."], "is empty"),
        (["cat", "!!"], "no letters or digits"),
        (["cat", "Cat"], "duplicate class name 'Cat'"),
        (["cat", 3], "must be a string, got int"),
        (["cat", None], "must be a string, got NoneType"),
        ("cat", "not one string"),
        ({"pet": ["cat", "dog"], "animal": ["dog"]}, "given twice"),
        ({"pet": []}, "at least one prompt phrase"),
        (42, "must be a list"),
    ],
)
def test_bad_class_lists(classes, message):
    with pytest.raises(PromptError, match=message):
        parse_classes(classes)


def test_words_the_encoder_does_not_know(tokenizer):
    with pytest.raises(PromptError, match="no letters or digits"):
        parse_classes(["cat", "🐱🐶"])
    with pytest.raises(PromptError, match="knows none of the words in 'zebra'"):
        build_chunks(parse_classes(["cat", "zebra"]), tokenizer)  # not in the test vocabulary
    chunks = build_chunks(parse_classes(["cat 🐱"]), tokenizer)  # one known word is enough
    assert len(chunks[0].spans) == 1


def test_a_phrase_longer_than_the_model_reads(tokenizer):
    with pytest.raises(PromptError, match="tokens long"):  # a synonym: only the model limits its length
        build_chunks(parse_classes({"cat": [" ".join(["cat"] * 300)]}), tokenizer)
    with pytest.raises(PromptError, match="is 1199 characters long; the limit is 200"):  # a label is a class name
        parse_classes([" ".join(["cat"] * 300)])
