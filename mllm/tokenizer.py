"""The ONE tokenizer loader of the toolkit, for every LLM (the tiny CPU LLM and Vicuna-7B alike).

Why a class of our own: transformers 5.x has no slow ``LlamaTokenizer`` any more. ``LlamaTokenizer``
is now a ``tokenizers`` BPE converted from ``tokenizer.model`` and ``AutoTokenizer`` always returns
such a converted tokenizer (``use_fast`` is ignored). Measured with transformers 5.23 and the LLaMA-family
``tokenizer.model`` shipped by mistral_common:

* ``LlamaTokenizer(vocab_file=...)`` silently builds a 3-token vocabulary (the argument is ignored);
* ``LlamaTokenizer.from_pretrained(dir)`` has the right 32000 pieces but ``add_bos_token=False``
  unless ``tokenizer_config.json`` or the call says otherwise, and it still differs from
  sentencepiece on runs of spaces (``"a  b"``) and on a leading space;
* ``AutoTokenizer`` on a directory without ``tokenizer_config.json`` builds a generic backend that
  pre-tokenises differently: no dummy-prefix space and no BOS (``"USER: hi"`` gives ``USER : ▁hi``
  where sentencepiece gives ``▁US ER : ▁hi``).

Vicuna and LLaVA were trained with the sentencepiece tokenizer itself, so a directory holding a
``tokenizer.model`` is loaded into :class:`SentencePieceLlamaTokenizer`, whose ids ARE
``sentencepiece``'s; ``tokenizer_config.json`` (when present) still provides the special tokens. Only a
directory without ``tokenizer.model`` (a byte-level BPE model such as Llama-3) goes through
``AutoTokenizer``, and only because it then carries a tokenizer config. BOS/EOS behaviour is always set
by the call (``add_bos_token=True``, ``add_eos_token=False`` by default) and verified after loading.

:func:`encode_fragment` is the primitive the prompt builder uses to tokenise a piece of text that sits
at the start of a sequence or in the middle of one (sentencepiece adds a dummy-prefix space only at
the start of its input).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
from transformers import AutoTokenizer, PreTrainedTokenizerBase, SentencePieceBackend
from transformers.utils import cached_file

SPIECE_UNDERLINE = "▁"

# What a Vicuna-style ``tokenizer_config.json`` declares; written next to every LLM we build so that it
# is loaded exactly like Vicuna (transformers' save_pretrained drops add_bos_token/add_eos_token).
VICUNA_STYLE_TOKENIZER_CONFIG: dict[str, Any] = {
    "tokenizer_class": "LlamaTokenizer",
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": None,
    "clean_up_tokenization_spaces": False,
    "padding_side": "right",
    "sp_model_kwargs": {},
}


class TokenizerLoadError(RuntimeError):
    """A tokenizer directory is missing files or loads with the wrong special-token behaviour."""


class SentencePieceLlamaTokenizer(SentencePieceBackend):
    """A LLaMA-family tokenizer whose ids are exactly ``sentencepiece``'s own encoding.

    Text is split on special/added tokens (``"</s>"`` in a string becomes the EOS id); every other chunk
    is encoded by the sentencepiece model as-is, so a plain string gives ``[bos] + sp.encode(text)``.
    Decoding goes through ``sp.decode`` (byte-fallback pieces such as ``<0x0A>`` become text again).
    """

    model_input_names: ClassVar[list[str]] = ["input_ids", "attention_mask"]
    padding_side = "right"

    def __init__(
        self,
        vocab_file: str,
        unk_token: str = "<unk>",
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        pad_token: str | None = None,
        add_bos_token: bool = True,
        add_eos_token: bool = False,
        **kwargs: Any,
    ) -> None:
        # `legacy=False` would make the base class strip the dummy prefix from the model; we keep the
        # model untouched so that ids equal sentencepiece's (the prompt builder handles mid-text pieces).
        kwargs.pop("legacy", None)
        kwargs.pop("add_prefix_space", None)
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        pattern = {(True, True): "bos_eos", (True, False): "bos", (False, True): "eos"}.get(
            (add_bos_token, add_eos_token), "none"
        )
        super().__init__(
            vocab_file=vocab_file,
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            add_bos_token=add_bos_token,
            add_eos_token=add_eos_token,
            legacy=True,
            special_tokens_pattern=pattern,
            **kwargs,
        )
        self._sp_mid_text = _without_dummy_prefix(self.sp_model)

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return self.sp_model.encode(text, out_type=str)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        # Special tokens are not sentencepiece pieces of the text: decode the runs between them.
        specials = set(self.all_special_tokens) | set(self._added_tokens_encoder)
        out, run = [], []
        for token in tokens:
            if token in specials:
                out.append(self.sp_model.decode_pieces(run))
                out.append(token)
                run = []
            else:
                run.append(token)
        out.append(self.sp_model.decode_pieces(run))
        return "".join(out)

    def encode_fragment(self, text: str, *, at_start: bool) -> list[int]:
        """Ids of ``text`` as they appear at the start of a sequence or in the middle of one.

        In the middle, sentencepiece's dummy-prefix space must not be added (``"\\nWhat"`` after a video
        placeholder is ``[<0x0A>, What]``, not ``[▁, <0x0A>, What]``).
        """
        if not text:
            return []
        sp = self.sp_model if at_start else self._sp_mid_text
        return sp.encode(text)


def _without_dummy_prefix(sp: spm.SentencePieceProcessor) -> spm.SentencePieceProcessor:
    """A copy of ``sp`` that does not prepend the dummy-prefix space (for text in mid-sequence)."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(sp.serialized_model_proto())
    proto.normalizer_spec.add_dummy_prefix = False
    mid = spm.SentencePieceProcessor()
    mid.LoadFromSerializedProto(proto.SerializeToString())
    return mid


def _find_file(name_or_path: str | Path, filename: str) -> str | None:
    """Path of ``filename`` in a local directory or a hub repo (cache/offline aware), else None."""
    local = Path(name_or_path)
    if local.is_dir():
        return str(local / filename) if (local / filename).is_file() else None
    return cached_file(
        str(name_or_path),
        filename,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )


def load_tokenizer(
    name_or_path: str | Path,
    *,
    add_bos_token: bool = True,
    add_eos_token: bool = False,
    trust_remote_code: bool = False,
) -> PreTrainedTokenizerBase:
    """Load the tokenizer of an LLM (local directory or hub id), with explicit BOS/EOS behaviour.

    A ``tokenizer.model`` (sentencepiece) wins: :class:`SentencePieceLlamaTokenizer`, reading special
    tokens from ``tokenizer_config.json`` when present. Otherwise ``AutoTokenizer`` loads the directory's
    tokenizer config. A missing pad token is set to the EOS token (padding is masked by the attention
    mask and labels anyway); not to unk as LLaVA does, because unk is the default video placeholder. The result is checked: BOS/EOS ids exist and ``tokenizer("a")`` starts with BOS
    exactly when ``add_bos_token``.
    """
    source = str(name_or_path)
    if _find_file(source, "tokenizer.model") is not None:
        tokenizer = SentencePieceLlamaTokenizer.from_pretrained(
            source, add_bos_token=add_bos_token, add_eos_token=add_eos_token
        )
    elif _find_file(source, "tokenizer_config.json") is not None:
        tokenizer = AutoTokenizer.from_pretrained(
            source,
            add_bos_token=add_bos_token,
            add_eos_token=add_eos_token,
            trust_remote_code=trust_remote_code,
        )
    else:
        raise TokenizerLoadError(
            f"{source}: no tokenizer found (expected a sentencepiece 'tokenizer.model' or a "
            "'tokenizer_config.json')"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    _check_special_tokens(tokenizer, source, add_bos_token, add_eos_token)
    return tokenizer


def _check_special_tokens(
    tokenizer: PreTrainedTokenizerBase, source: str, add_bos: bool, add_eos: bool
) -> None:
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise TokenizerLoadError(
            f"{source}: tokenizer has no BOS/EOS token (bos={tokenizer.bos_token!r}, eos={tokenizer.eos_token!r})"
        )
    ids = tokenizer("a")["input_ids"]
    if (ids[0] == tokenizer.bos_token_id) != add_bos or (ids[-1] == tokenizer.eos_token_id) != add_eos:
        raise TokenizerLoadError(
            f"{source}: asked add_bos_token={add_bos}, add_eos_token={add_eos} but 'a' encodes to {ids}"
        )


def encode_fragment(tokenizer: PreTrainedTokenizerBase, text: str, *, at_start: bool) -> list[int]:
    """Ids of a piece of text at the start of a sequence (``at_start``) or in the middle of one.

    Byte-level BPE tokenizers (the ``AutoTokenizer`` path) encode a fragment the same way wherever it
    sits, so no special handling is needed there. (A ``tokenizers`` Metaspace tokenizer without its
    ``tokenizer.model`` would prefix every fragment with ``▁``; still the same ids in training and
    inference, since the prompt builder's reference tokenisation uses this function too.)
    """
    if isinstance(tokenizer, SentencePieceLlamaTokenizer):
        return tokenizer.encode_fragment(text, at_start=at_start)
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> None:
    """``save_pretrained`` plus a Vicuna-style ``tokenizer_config.json`` declaring BOS/EOS behaviour."""
    directory = Path(directory)
    tokenizer.save_pretrained(directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    # Load-time bookkeeping that transformers writes back; not part of a tokenizer's description.
    for key in ("backend", "is_local", "local_files_only", "legacy"):
        config.pop(key, None)
    config.update(VICUNA_STYLE_TOKENIZER_CONFIG)
    config["add_bos_token"] = bool(getattr(tokenizer, "add_bos_token", True))
    config["add_eos_token"] = bool(getattr(tokenizer, "add_eos_token", False))
    config["model_max_length"] = int(min(tokenizer.model_max_length, 1 << 30))
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def train_sentencepiece_tokenizer(
    texts: list[str],
    directory: str | Path,
    *,
    vocab_size: int = 1000,
    seed: int = 0,
    model_max_length: int = 512,
) -> SentencePieceLlamaTokenizer:
    """Train a LLaMA-style sentencepiece BPE model on ``texts`` and save it as a tokenizer directory.

    Trainer settings follow LLaMA's ``tokenizer.model`` (byte fallback, split digits, identity
    normaliser, whitespace kept, unk/bos/eos = 0/1/2, no pad piece), so the tiny LLM exercises the same
    tokenizer code path as Vicuna. Byte fallback also means text never encodes to unk, the default video
    placeholder. ``hard_vocab_limit=False`` lets a small corpus yield fewer pieces than asked.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_file = directory / "tokenizer.model"
    spm.set_random_generator_seed(seed)  # the trainer shuffles and samples sentences
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=str(directory / "tokenizer"),
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    (directory / "tokenizer.vocab").unlink(missing_ok=True)  # a by-product; tokenizer.model has it all
    tokenizer = SentencePieceLlamaTokenizer(vocab_file=str(model_file), model_max_length=model_max_length)
    save_tokenizer(tokenizer, directory)
    return tokenizer
