"""Fixtures shared by the test modules: the tiny tokenizer, a tiny random Llama and tiny example lists
(built by `tiny_models`, in code, offline).

Module-scoped, as the copies they replace were: a test module may mutate what it is given (a
tokenizer's padding side, a model's weights under a mask), and no other module ever sees that.
A module that needs other sizes or seeds calls the `tiny_models` builders itself.
"""
from __future__ import annotations

import pytest

from replication.data import Example
from tiny_models import tiny_examples, tiny_llama, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    """The tiny byte-level BPE tokenizer (400 tokens, chat template)."""
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model():
    """`tiny_llama(seed=0)`: 2 layers, odd sizes, vocabulary of `tok`."""
    return tiny_llama(seed=0)


@pytest.fixture(scope="module")
def harmful_examples() -> list[Example]:
    """Four harmful examples of varied lengths (`tiny_examples(4, kind="harmful", seed=11)`)."""
    return tiny_examples(4, kind="harmful", seed=11)


@pytest.fixture(scope="module")
def benign_examples() -> list[Example]:
    """Four benign examples of varied lengths (`tiny_examples(4, kind="benign", seed=12)`)."""
    return tiny_examples(4, kind="benign", seed=12)
