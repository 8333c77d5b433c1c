"""A byte-level tokenizer for the toy world, built locally (no hub download).

Byte-level with no merges: every string round-trips exactly (decode(encode(s)) == s), which keeps the
token-in/token-out bookkeeping of the rollout trivially exact and lets a 2M-parameter model copy
numbers digit by digit. It is a real `PreTrainedTokenizerFast`, so the same loading code serves the
toy model and Qwen2.5.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)
    fast.add_special_tokens({"eos_token": EOS, "pad_token": PAD})
    return fast
