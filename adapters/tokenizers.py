"""Word-level tokenizers for models the project builds itself (tiny and toy models).

Real models ship their own tokenizers; ours need one that works offline, saves with
`save_pretrained` and loads back through a diffusers pipeline's `from_pretrained`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
# The EOS id is 3, not 2: CLIPTextModel treats eos_token_id == 2 as a legacy config and pools
# at argmax(input_ids) instead of at the first EOS.
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)


def word_tokenizer(words: Iterable[str], max_length: int) -> PreTrainedTokenizerFast:
    """A lower-casing, whitespace/punctuation-splitting word tokenizer over `words`.

    Every sequence is wrapped as `<bos> ... <eos>`; unknown words map to `<unk>`.
    Ids: <pad>=0, <unk>=1, <bos>=2, <eos>=3, then the words in sorted order.
    """
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in sorted({w.lower() for w in words} - set(vocab)):
        vocab[word] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=max_length,
        padding_side="right",
    )


def special_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """The ids a text-encoder config must agree on (pad/bos/eos)."""
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
