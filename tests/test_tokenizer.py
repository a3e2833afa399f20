"""The one tokenizer loader: vocabulary size, BOS/EOS ids and behaviour, ids equal to sentencepiece's own
encoding — for the tiny trained tokenizer and for a real LLaMA-family model (mistral_common's v1)."""

import json
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
from transformers import LlamaTokenizer

from mllm.tokenizer import (
    SentencePieceLlamaTokenizer,
    TokenizerLoadError,
    encode_fragment,
    load_tokenizer,
    save_tokenizer,
)

pytest_plugins = ["tiny_llm_fixtures"]

KNOWN = "USER: <video>\nWhat gymnastics move is this athlete performing? A.salto backward tucked B.split jump"
# Strings where transformers 5.23's converted LlamaTokenizer disagrees with sentencepiece (runs of spaces,
# a leading space), plus newlines, digits, tabs and characters that need byte fallback.
EDGE_CASES = ["a  b", "  two spaces", " leading", "trailing ", "x\n\n y", "with 2.5 twists\t", "ü ñ 中文 😀"]


def _sp(directory: Path) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))


def test_ids_equal_sentencepiece_for_both_tokenizers(any_tokenizer_dir: Path):
    sp = _sp(any_tokenizer_dir)
    tokenizer = load_tokenizer(any_tokenizer_dir)
    assert isinstance(tokenizer, SentencePieceLlamaTokenizer)
    assert tokenizer.vocab_size == len(tokenizer) == sp.get_piece_size()
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
    assert tokenizer.add_bos_token and not tokenizer.add_eos_token
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # unk stays free for the video placeholder
    for text in [KNOWN, *EDGE_CASES]:
        ids = tokenizer(text)["input_ids"]
        assert ids == [sp.bos_id()] + sp.encode(text), text
        assert tokenizer.decode(ids, skip_special_tokens=True) == sp.decode(sp.encode(text)), text


def test_vocab_sizes_and_golden_ids(tiny_llm_dir: Path, mistral_tokenizer_dir: Path):
    mistral = load_tokenizer(mistral_tokenizer_dir)
    assert len(mistral) == 32000
    # Stored constants: the v1 model is a fixed file, so these ids pin the whole code path.
    assert mistral("USER: hello world")["input_ids"] == [1, 2223, 725, 28747, 6312, 28709, 1526]
    # transformers' own LlamaTokenizer gives [1, 264, 259, 28726] here.
    assert mistral("a  b")["input_ids"] == [1, 264, 28705, 287]
    tiny = load_tokenizer(tiny_llm_dir)
    assert len(tiny) == _sp(tiny_llm_dir).get_piece_size() <= 400


def test_eos_string_in_text_is_the_eos_id_and_decode_keeps_it(mistral_tokenizer_dir: Path):
    tokenizer = load_tokenizer(mistral_tokenizer_dir)
    ids = tokenizer("a</s>b")["input_ids"]
    assert ids == [1, 264, 2, 287]  # each chunk is encoded as sentencepiece encodes it alone: "▁b"
    assert tokenizer.decode(ids) == "<s>a</s>b"
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a b"


def test_encode_fragment_has_no_dummy_prefix_in_mid_text(any_tokenizer_dir: Path):
    sp = _sp(any_tokenizer_dir)
    tokenizer = load_tokenizer(any_tokenizer_dir)
    assert encode_fragment(tokenizer, "What move", at_start=True) == sp.encode("What move")
    newline = sp.piece_to_id("<0x0A>")
    # In mid-text "\n" is just the newline byte, not "▁" + newline as sentencepiece gives at the start.
    assert encode_fragment(tokenizer, "\nWhat", at_start=False)[0] == newline
    assert sp.encode("\nWhat")[0] != newline
    # A fragment that starts with a space keeps it as the "▁" of its first word.
    assert encode_fragment(tokenizer, " salto", at_start=False) == sp.encode("salto")
    assert encode_fragment(tokenizer, "", at_start=False) == []


def test_bos_eos_behaviour_is_set_by_the_call_not_the_directory(tmp_path: Path, tiny_llm_dir: Path):
    directory = tmp_path / "tok"
    shutil.copytree(tiny_llm_dir, directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["add_bos_token"] = False  # what transformers assumes when the config says nothing
    config_path.write_text(json.dumps(config))
    assert load_tokenizer(directory)("a")["input_ids"][0] == 1
    with_eos = load_tokenizer(directory, add_bos_token=False, add_eos_token=True)
    assert with_eos("a")["input_ids"][0] != 1 and with_eos("a")["input_ids"][-1] == 2


def test_save_tokenizer_writes_vicuna_style_config(tmp_path: Path, mistral_tokenizer_dir: Path):
    save_tokenizer(load_tokenizer(mistral_tokenizer_dir), tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "LlamaTokenizer"
    assert config["add_bos_token"] is True and config["add_eos_token"] is False
    assert (config["bos_token"], config["eos_token"], config["unk_token"]) == ("<s>", "</s>", "<unk>")
    assert "backend" not in config and "legacy" not in config
    reloaded = load_tokenizer(tmp_path)
    assert reloaded(KNOWN)["input_ids"] == load_tokenizer(mistral_tokenizer_dir)(KNOWN)["input_ids"]


def test_directory_without_sentencepiece_model_goes_through_autotokenizer(
    tmp_path: Path,
    tiny_llm_dir: Path,
):
    # A tokenizer.json-only directory (how byte-level BPE LLMs ship): the AutoTokenizer path.
    LlamaTokenizer.from_pretrained(tiny_llm_dir).save_pretrained(tmp_path)
    assert not (tmp_path / "tokenizer.model").exists()
    tokenizer = load_tokenizer(tmp_path)
    assert not isinstance(tokenizer, SentencePieceLlamaTokenizer)
    ids = tokenizer("salto backward")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id == 1 and ids[-1] != tokenizer.eos_token_id
    assert encode_fragment(tokenizer, "salto", at_start=False) == tokenizer.encode(
        "salto", add_special_tokens=False
    )


def test_missing_tokenizer_is_a_clear_error(tmp_path: Path):
    with pytest.raises(TokenizerLoadError, match="no tokenizer found"):
        load_tokenizer(tmp_path)
