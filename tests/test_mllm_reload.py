"""Reloading what was saved: every video encoder's description builds it again (so an MLLM trained on
framepool features reloads through VideoChat / the demo / scripts/chat.py with the same tokens and
logits), the MLLM's adapter folder survives a kill between the two renames of its swap, the chat and demo
scripts thread --trust-remote-code (off by default), and the demo deletes old uploads (delete_cache)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import torch
from conftest import load_script
from video_encoder_fixtures import CASES, VIT_KWARGS
from video_fixtures import write_clip

from gym_qa.lists import ListEntry
from mllm import multimodal_model
from mllm.chat import VideoChat
from mllm.demo_uploads import DemoLimits
from mllm.encoders import VideoEncoder, build_video_encoder, builder_options
from mllm.feature_cache import encode_entries
from mllm.generation import GenerationOptions, generate_answer
from mllm.language_model import LLMConfig, LoraOptions
from mllm.multimodal_model import MultimodalConfig, MultimodalModel
from mllm.prompting import PromptBuilder, Turn
from mllm.tokenizer import load_tokenizer

pytest_plugins = ["tiny_llm_fixtures", "video_encoder_fixtures"]  # tiny_llm_dir, checkpoints

QUESTION = "What gymnastics move is this athlete performing?"


def _as_json(description: dict) -> dict:
    """What instruction.json / the feature cache index give back (tuples become lists)."""
    return json.loads(json.dumps(description))


# ---- encoder descriptions -------------------------------------------------------------------------------


def _encoders(checkpoints) -> dict[str, tuple[Path, VideoEncoder]]:
    built = {}
    for case, (options, *_) in CASES.items():
        name = case.split("_")[0]
        built[case] = (checkpoints[name], build_video_encoder(name, checkpoints[name], **options))
    vit_file = {"num_frames": 2, "model_name": "vit_small_patch16_224", "model_kwargs": VIT_KWARGS}
    built["framepool_vitfile"] = (
        checkpoints["vit"],
        build_video_encoder("framepool", checkpoints["vit"], **vit_file),
    )
    return built


@pytest.mark.parametrize("case", [*CASES, "framepool_vitfile"])
def test_every_encoder_description_builds_it_again(checkpoints, case):
    weights, encoder = _encoders(checkpoints)[case]
    described = _as_json(encoder.describe())
    assert described["name"] == encoder.name
    # Every recorded option is a builder keyword (the bug: framepool's 'architecture'/'backbone', eva's
    # 'architecture' were refused).
    build_video_encoder(encoder.name, weights, **described["options"])
    # With the input settings the description holds under "preprocess": the same encoder.
    again = build_video_encoder(described["name"], weights, **builder_options(described))
    assert again.describe() == encoder.describe()
    assert again.fingerprint() == encoder.fingerprint()
    video = torch.randn(1, 3, encoder.preprocess.num_frames, *[encoder.preprocess.image_size] * 2)
    torch.testing.assert_close(again.encode(video), encoder.encode(video), rtol=0, atol=0)


def test_recorded_weights_must_match(checkpoints):
    backbone = _as_json(build_video_encoder("framepool", checkpoints["framepool"]).describe())["options"]
    with pytest.raises(ValueError, match="differs from the recorded backbone"):
        build_video_encoder(
            "framepool", checkpoints["framepool"], backbone={**backbone["backbone"], "depth": 7}
        )
    with pytest.raises(ValueError, match="describes a backbone directory"):
        build_video_encoder("framepool", checkpoints["vit"], backbone=backbone["backbone"])
    with pytest.raises(ValueError, match="records architecture 'vit_small_patch16_224'"):
        build_video_encoder("framepool", checkpoints["framepool"], architecture="vit_small_patch16_224")
    with pytest.raises(ValueError, match="records architecture 'vit_base_patch16_224'"):
        build_video_encoder(
            "framepool",
            checkpoints["vit"],
            model_name="vit_small_patch16_224",
            model_kwargs=VIT_KWARGS,
            architecture="vit_base_patch16_224",
        )
    eva_kwargs = CASES["eva"][0]["model_kwargs"]
    with pytest.raises(ValueError, match="records architecture 'eva02_tiny_patch14_224'"):
        build_video_encoder(
            "eva",
            checkpoints["eva"],
            model_name="eva_giant_patch14_clip_224",
            model_kwargs=eva_kwargs,
            architecture="eva02_tiny_patch14_224",
        )
    with pytest.raises(ValueError, match="unknown video encoder 'nope'"):
        builder_options({"name": "nope", "options": {}})


# ---- a framepool MLLM through VideoChat's loading path ---------------------------------------------------


def _lora_model(llm_dir: Path, encoder_dim: int, video_token_id: int, fingerprint: str, seed: int):
    cfg = MultimodalConfig(
        llm=LLMConfig(name_or_path=str(llm_dir)), lora=LoraOptions(enabled=True, r=4, alpha=8)
    )
    cfg.llm_trainable = True
    torch.manual_seed(seed)
    model = MultimodalModel.build(
        cfg, video_token_id=video_token_id, encoder_dim=encoder_dim, encoder_fingerprint=fingerprint
    )
    with torch.no_grad():  # LoRA B starts at zero: give the adapter a visible effect
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    return model.eval()


@pytest.fixture(scope="module")
def framepool_mllm(tmp_path_factory, checkpoints, tiny_llm_dir):
    """A tiny MLLM on framepool features (4 frames, 1 + 1 tokens), saved as train_mllm saves it."""
    root = tmp_path_factory.mktemp("framepool_mllm")
    clip = write_clip(root / "clip.mp4", num_frames=12, height=32, width=32)
    encoder = build_video_encoder("framepool", checkpoints["framepool"], num_frames=4, spatial_grid=1)
    (batch,) = encode_entries(
        encoder, [ListEntry(path=clip, label=0, line=0, raw_path=str(clip))], batch_size=1, progress=False
    )
    builder = PromptBuilder(load_tokenizer(tiny_llm_dir), num_video_tokens=encoder.num_tokens)
    model = _lora_model(tiny_llm_dir, encoder.dim, builder.video_token_id, encoder.fingerprint(), seed=0)
    model.instruction = {
        "stage": "instruct",
        "template": "vicuna_v1",
        "encoder": _as_json(encoder.describe()),  # as the feature cache index records it
        "num_video_tokens": encoder.num_tokens,
        "score_target": "answer",
    }
    ckpt = model.save_pretrained(root / "mllm")
    return {
        "ckpt": ckpt,
        "clip": clip,
        "encoder": encoder,
        "tokens": batch.tokens,
        "model": model,
        "builder": builder,
    }


def test_framepool_mllm_reloads_through_videochat(framepool_mllm, checkpoints):
    saved = framepool_mllm
    options = GenerationOptions(max_new_tokens=6)
    chat = VideoChat.from_pretrained(saved["ckpt"], checkpoints["framepool"], generation=options)
    assert chat.encoder.fingerprint() == saved["encoder"].fingerprint()
    assert (chat.encoder.preprocess.num_frames, chat.encoder.num_tokens) == (4, 2)  # not the defaults
    tokens = chat.video_features(saved["clip"])
    torch.testing.assert_close(tokens, saved["tokens"], rtol=0, atol=0)

    prompt = chat.builder.encode(Turn(QUESTION))
    assert prompt.input_ids == saved["builder"].encode(Turn(QUESTION)).input_ids
    ids = torch.tensor([prompt.input_ids])
    with torch.no_grad():
        expected = saved["model"](ids, torch.ones_like(ids), video_features=saved["tokens"]).logits
        reloaded = chat.model(ids, torch.ones_like(ids), video_features=tokens).logits
    torch.testing.assert_close(reloaded, expected)
    answer = chat.ask(saved["clip"], QUESTION, stream=False)
    assert answer == generate_answer(saved["model"], saved["builder"], QUESTION, saved["tokens"], options)


def test_chat_script_loads_a_framepool_mllm(framepool_mllm, checkpoints, capsys):
    chat_cli = load_script("chat")
    args = ["--encoder", str(checkpoints["framepool"]), "--mllm", str(framepool_mllm["ckpt"])]
    args += ["--video", str(framepool_mllm["clip"]), "--max-new-tokens", "4", QUESTION]
    assert chat_cli.main(args) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.endswith("\n")


# ---- the adapter swap -------------------------------------------------------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (no ``except Exception`` catches it)."""


def _trainable_state(model: MultimodalModel) -> dict[str, torch.Tensor]:
    state = {f"projector.{k}": v for k, v in model.projector.state_dict().items()}
    state.update({n: p.detach() for n, p in model.llm.named_parameters() if "lora_" in n})
    return state


def _assert_same_weights(model: MultimodalModel, reference: MultimodalModel) -> None:
    got, want = _trainable_state(model), _trainable_state(reference)
    assert got.keys() == want.keys() and any("lora_B" in k for k in got)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)


def _hidden(directory: Path) -> list[str]:
    return sorted(p.name.split("-")[0] for p in directory.iterdir() if p.name.startswith("."))


def test_adapter_survives_a_kill_between_the_two_renames(tmp_path, tiny_llm_dir, monkeypatch):
    old = _lora_model(tiny_llm_dir, 12, 0, "fp", seed=0)
    new = _lora_model(tiny_llm_dir, 12, 0, "fp", seed=1)
    ckpt = old.save_pretrained(tmp_path / "mllm")
    assert _hidden(ckpt) == []

    real_replace = os.replace

    def killed_before_rename_in(src, dst):
        if Path(dst).name == "adapter" and Path(src).name.startswith(".adapter.tmp-"):
            raise Killed
        real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(multimodal_model.os, "replace", killed_before_rename_in)
        m.setattr(multimodal_model.shutil, "rmtree", lambda *a, **k: None)  # a kill cleans nothing up
        with pytest.raises(Killed):
            new.save_pretrained(ckpt)
    assert not (ckpt / "adapter").exists()  # the state the old code could leave with no copy at all
    assert _hidden(ckpt) == [".adapter.old", ".adapter.tmp"]

    recovered = MultimodalModel.from_pretrained(ckpt)
    _assert_same_weights(recovered, old)  # the whole old checkpoint: adapter, projector, config
    # loading renames nothing: the aside copy was read where it is
    assert not (ckpt / "adapter").exists() and _hidden(ckpt) == [".adapter.old", ".adapter.tmp"]

    new.save_pretrained(ckpt)  # the next save clears the killed one's partial write
    assert _hidden(ckpt) == []
    _assert_same_weights(MultimodalModel.from_pretrained(ckpt), new)


def test_stale_aside_next_to_the_adapter_is_ignored_then_removed(tmp_path, tiny_llm_dir, monkeypatch):
    old = _lora_model(tiny_llm_dir, 12, 0, "fp", seed=0)
    new = _lora_model(tiny_llm_dir, 12, 0, "fp", seed=1)
    ckpt = old.save_pretrained(tmp_path / "mllm")
    real_rmtree = multimodal_model.shutil.rmtree

    def killed_before_deleting_aside(path, *args, **kwargs):
        if Path(path).name.startswith(".adapter.old-"):
            raise Killed
        real_rmtree(path, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(multimodal_model.shutil, "rmtree", killed_before_deleting_aside)
        with pytest.raises(Killed):
            new.save_pretrained(ckpt)
    assert (ckpt / "adapter").is_dir() and _hidden(ckpt) == [".adapter.old"]
    loaded = MultimodalModel.from_pretrained(ckpt)
    lora = {n: p for n, p in _trainable_state(loaded).items() if "lora_" in n}
    for name, value in lora.items():  # the new adapter is in place (the projector write was not reached)
        torch.testing.assert_close(value, _trainable_state(new)[name], rtol=0, atol=0)
    new.save_pretrained(ckpt)
    assert _hidden(ckpt) == []
    _assert_same_weights(MultimodalModel.from_pretrained(ckpt), new)


def test_missing_adapter_without_aside_is_a_clear_error(tmp_path, tiny_llm_dir):
    ckpt = _lora_model(tiny_llm_dir, 12, 0, "fp", seed=0).save_pretrained(tmp_path / "mllm")
    multimodal_model.shutil.rmtree(ckpt / "adapter")
    with pytest.raises(FileNotFoundError, match="names the adapter folder 'adapter'"):
        MultimodalModel.from_pretrained(ckpt)


# ---- script flags -----------------------------------------------------------------------------------------


class Stop(FileNotFoundError):
    pass


def test_chat_and_demo_scripts_trust_remote_code_only_when_asked(checkpoints, tmp_path, monkeypatch):
    calls = []

    def fake_from_pretrained(*args, **kwargs):
        calls.append(kwargs["trust_remote_code"])
        raise Stop("stop here")

    monkeypatch.setattr(VideoChat, "from_pretrained", fake_from_pretrained)
    chat_cli = load_script("chat")
    base = ["--encoder", str(checkpoints["sefar"]), "--mllm", str(tmp_path), "--video", "x.mp4", "q?"]
    for extra in ([], ["--trust-remote-code"]):
        assert chat_cli.main([*base, *extra]) == 2
    assert calls == [False, True]

    demo_cli = load_script("demo")
    for key in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE"):  # main() points them at its own folder
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])
        else:
            monkeypatch.delenv(key, raising=False)
    sigterm = signal.getsignal(signal.SIGTERM)
    calls.clear()
    try:
        for extra in ([], ["--trust-remote-code"]):
            assert (
                demo_cli.main(["--encoder", str(checkpoints["sefar"]), "--mllm", str(tmp_path), *extra]) == 1
            )
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    assert calls == [False, True]


# ---- demo upload folder -----------------------------------------------------------------------------------


def test_demo_delete_cache_setting(checkpoints):
    from mllm.demo_app import build_demo
    from sefar_encoder.prediction import Predictor

    assert DemoLimits().delete_cache == (600, 3600)  # every 10 min, files older than an hour
    assert DemoLimits(delete_after_s=120).delete_cache == (60, 120)
    assert DemoLimits(delete_after_s=1).delete_cache == (1, 1)
    assert DemoLimits(delete_after_s=0).delete_cache is None
    with pytest.raises(ValueError, match="delete_after_s"):
        DemoLimits(delete_after_s=-1)
    demo = build_demo(Predictor(checkpoints["sefar"]), limits=DemoLimits(delete_after_s=120))
    assert demo.delete_cache == (60, 120)
    assert load_script("demo").parse_args([]).delete_after == DemoLimits.delete_after_s


def test_demo_deletes_old_uploads(tmp_path, checkpoints, framepool_mllm):
    from demo_fixtures import running_demo

    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "clip.mp4").write_bytes(framepool_mllm["clip"].read_bytes())
    with running_demo(tmp_path / "app", checkpoints["sefar"], examples, delete_after_s=1) as server:
        with open(framepool_mllm["clip"], "rb") as fh:
            response = httpx.post(f"{server.url}gradio_api/upload", files={"files": ("up.mp4", fh)})
        response.raise_for_status()
        (uploaded,) = response.json()
        assert Path(uploaded).is_file() and Path(uploaded).is_relative_to(server.dirs.temp)
        deadline = time.monotonic() + 20
        while Path(uploaded).exists() and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not Path(uploaded).exists()  # deleted by gradio's schedule while the server runs
        assert server.examples[0].path.is_file()  # the examples folder is not the upload folder
