"""The organism's tokenizer: byte-level BPE trained with `tokenizers` on the world's own text.

Digits are split one per token (so arithmetic is learnable) and `ByteLevel(add_prefix_space=False)`
keeps `decode(encode(x)) == x` exact; `train_tokenizer` asserts that round trip on its corpus.
Wrapped in `PreTrainedTokenizerFast` with a Jinja chat template:

    <|user|>\\n{prompt}\\n<|assistant|>\\n{response}<|end|>

`<|end|>` is the end-of-sequence token (it also ends raw pretraining documents); there is no BOS.
"""
from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

END, USER, ASSISTANT, PAD = "<|end|>", "<|user|>", "<|assistant|>", "<|pad|>"
SPECIAL_TOKENS = (PAD, END, USER, ASSISTANT)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}" + USER + "\n{{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}" + ASSISTANT + "\n{{ message['content'] }}" + END + "\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1536) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` and wrap it with the chat template and special tokens."""
    texts = list(texts)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END, pad_token=PAD,
                                   additional_special_tokens=[USER, ASSISTANT], model_max_length=512)
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    check_round_trip(fast, texts[:2000])
    return fast


def check_round_trip(tokenizer, texts: Iterable[str]) -> None:
    """Raise if any text does not survive encode -> decode unchanged."""
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        back = tokenizer.decode(ids)
        if back != text:
            raise AssertionError(f"tokenizer round trip failed: {text!r} -> {back!r}")
