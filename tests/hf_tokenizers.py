"""Small Hugging Face tokenizers trained here (offline, in milliseconds) for the tests: one like
Llama 2 / SentencePiece (Metaspace, a BOS token added to every encoding), one like Llama 3 / Qwen
(byte-level BPE). They know common English words, as every real one does, and made-up words that
tiktoken's encodings split unlike these do."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

_ENGLISH = str.split(
    "the and for that with this from have not are was but all can one will there their what about which when make "
    "like time just know take people into year your good some could them see other than then now look only come "
    "its over think also back after use two how our work first well way even new want because any these give day "
    "most very find thing tell many great where help through much before line right too mean old same move play "
    "small large place world house point water hand every light close night river stone green field paper music "
    "story table window garden market letter summer winter money power order south north early young simple"
)
_SYLLABLES = ("ka", "lo", "mir", "zen", "tu", "vo", "ra", "sel", "qui", "dor", "fen", "bal", "ith", "orn", "ux")


def _corpus(seed: int = 0, lines: int = 3000) -> Iterator[str]:
    rng = random.Random(seed)
    words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(300)] + _ENGLISH
    for _ in range(lines):
        yield " ".join(rng.choice(words) for _ in range(12))


def llama_like(path: Path) -> Path:
    """SentencePiece-style BPE: spaces as ``▁``, ``<s>`` before every encoding (as Llama's tokenizer.json)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    bos = ("<s>", tok.token_to_id("<s>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[bos])
    tok.save(str(path))
    return path


def byte_level(path: Path) -> Path:
    """Byte-level BPE (``Ġ`` for a space), as Llama 3's and Qwen's tokenizer.json."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(1), trainer)
    tok.save(str(path))
    return path
