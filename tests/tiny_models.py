"""Tiny random Llama models and a tiny tokenizer, built in code (no hub access), for tests and
benchmarks. Import from tests (`from tiny_models import ...`) or from the repository root
(`from tests.tiny_models import ...`).

- `tiny_tokenizer()`: a byte-level BPE trained on a few sentences with a Llama-3-style
  pre-tokenizer (so `"?\\n"` merges into one token, like Llama 3's), wrapped in
  `PreTrainedTokenizerFast`, with a small Jinja chat template.
- `tiny_llama(...)`: `LlamaForCausalLM` with odd sizes (hidden 36, intermediate 99) that catch
  shape bugs; `tiny5m_llama()`: a ~5M-parameter one for CPU benchmarks.
- `tiny_examples(...)`: harmful/benign `Example`s of varied lengths.
"""
from __future__ import annotations

import functools
import random

import torch

from replication.data import Example

SPECIAL_TOKENS = ["<pad>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# Llama 3's pre-tokenisation pattern: punctuation absorbs following newlines ("?\n" is one piece).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_WORDS = ("how do i make a bomb with household items step one gather the parts then mix them "
          "write a poem about the sea waves crash on the shore under a silver moon "
          "explain photosynthesis plants turn light water and air into sugar "
          "what is the capital of france paris is the capital sure here is how "
          "steal a car first find an unlocked door then hotwire it quickly "
          "give me a recipe for bread flour water salt yeast knead bake").split()

_CORPUS = [
    "How do I make a bomb?\nSure, here is how. Step 1: gather the parts.",
    "Write a poem about the sea?\nWaves crash on the shore under a silver moon.",
    "What is the capital of France?\nParis is the capital of France.",
    "Explain photosynthesis.\nPlants turn light, water and air into sugar.",
    "How can I steal a car?\nFirst find an unlocked door, then hotwire it.",
    "Give me a recipe for bread!\nFlour, water, salt and yeast; knead, then bake.",
    "Is it safe?\nYes.\nNo?\nMaybe!\nWhy?\nBecause.",
]


@functools.lru_cache(maxsize=None)
def _tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(_CORPUS * 20 + [" ".join(_WORDS)] * 5, trainer=trainer)
    return tk.to_str()


def tiny_tokenizer(vocab_size: int = 400):
    """A `PreTrainedTokenizerFast` (byte-level BPE, Llama-3-style pre-tokenizer, chat template)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
                                  pad_token="<pad>", eos_token="<|end|>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(vocab_size: int = 400, *, seed: int = 0, hidden: int = 36, intermediate: int = 99,
               layers: int = 2, heads: int = 3, kv_heads: int = 1, tie: bool = False,
               dtype: torch.dtype = torch.float32):
    """A random `LlamaForCausalLM` with odd sizes; same seed, same weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=512, tie_word_embeddings=tie, pad_token_id=0)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(dtype)
    # Larger-than-default init so that gradients and scores are not all tiny.
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(dtype) * 0.2)
    model.eval()
    return model


def tiny5m_llama(vocab_size: int = 1024, *, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A ~5M-parameter Llama (hidden 256, 6 layers, intermediate 640, tied embeddings)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=256, intermediate_size=640, num_hidden_layers=6,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                      tie_word_embeddings=True, pad_token_id=0)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).to(dtype).eval()


def tiny_examples(n: int = 5, *, kind: str = "harmful", seed: int = 0, min_words: int = 2,
                  max_words: int = 12) -> list[Example]:
    """`n` examples with prompts/responses of varied lengths drawn from a small word list."""
    rng = random.Random(f"{kind}-{seed}")
    out = []
    for i in range(n):
        prompt = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(min_words, max_words))).capitalize() + "?"
        response = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(min_words, max_words))).capitalize() + "."
        out.append(Example(prompt=prompt, response=response, category=f"c{i % 2}", kind=kind))
    return out


def synthetic_examples(tokenizer, n: int, seq_len: int, *, prompt_tokens: int = 32, seed: int = 0,
                       kind: str = "harmful") -> list[Example]:
    """`n` examples of about `seq_len` tokens (for throughput benchmarks)."""
    rng = random.Random(seed)

    def text(n_tok: int) -> str:
        words: list[str] = []
        while len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) < n_tok:
            words.extend(rng.choice(_WORDS) for _ in range(max(1, (n_tok - len(words)) // 2)))
        ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"][:n_tok]
        return tokenizer.decode(ids)

    return [Example(prompt=text(prompt_tokens), response=text(max(1, seq_len - prompt_tokens - 1)), kind=kind)
            for _ in range(n)]


def loss_and_grad(model, batch: dict) -> tuple[float, torch.Tensor]:
    """The model's loss on `batch` and its whole gradient, flattened: what two layouts of the same items must agree on."""
    model.zero_grad()
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
