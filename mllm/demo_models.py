"""The models behind the demo, each loaded once, and each clip decoded once for both of them.

    predictor = Predictor("runs/quickstart/encoder")
    chat, video_encoder = load_chat(mllm_dir, predictor, "runs/quickstart/encoder")   # shares the encoder
    clips = DemoClips(predictor, video_encoder)
    clips.predict(path)        # the classifier's top-k, and the frames for the gallery: the one decode
    clips.mllm_input(path)     # the MLLM's tokens [1, N, D] of that same decode
    clips.segment_input(path, 3.2, 5.6)   # tokens of seconds [3.2, 5.6) only (the routine tab's segments)

When the MLLM was trained on the classifier's own checkpoint (the quickstart's case), its video encoder
wraps the classifier's loaded model instead of loading the weights a second time, and its tokens come
from the classifier's input tensor: the demo decodes an uploaded clip once, whether the visitor then
looks at the top-5, chats or takes the quiz. An MLLM trained on other features (``--mllm-encoder``) gets
its own encoder, and its own decode of a clip unless it takes exactly the classifier's input.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import torch

from gym_qa.lists import ListEntry
from mllm.encoders import SeFARVideoEncoder, VideoEncoder, builder_options
from mllm.feature_cache import encode_entries
from sefar_encoder.decoding import DecodeError
from sefar_encoder.detection.features import FeatureFolderError, video_fps
from sefar_encoder.prediction import ClipPrediction, Predictor
from sefar_encoder.sampling import DualLevelSampler, FrameSample

if TYPE_CHECKING:
    from mllm.chat import VideoChat
    from mllm.generation import GenerationOptions


def load_chat(
    mllm_dir: str | os.PathLike,
    predictor: Predictor,
    encoder_dir: str | os.PathLike,
    mllm_encoder: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    generation: GenerationOptions | None = None,
    trust_remote_code: bool = False,
    llm_name_or_path: str | None = None,
) -> tuple[VideoChat, VideoEncoder]:
    """The MLLM of ``mllm_dir`` and its video encoder: the predictor's own model (loaded from
    ``encoder_dir``) when the MLLM was trained on SeFAR features and no other ``mllm_encoder`` weights are
    named, else the encoder :meth:`VideoChat.from_pretrained` loads from ``mllm_encoder or encoder_dir``.

    ``llm_name_or_path`` replaces the base LLM recorded in the MLLM checkpoint (:meth:`VideoChat.from_pretrained`).

    Raises :class:`mllm.chat.EncoderMismatchError` when the encoder is not the one the MLLM was trained on.
    """
    from mllm.chat import VideoChat, check_encoder  # the LLM stack loads only when an MLLM is used
    from mllm.multimodal_model import MultimodalModel

    options: dict[str, Any] = {
        "device": device,
        "generation": generation,
        "trust_remote_code": trust_remote_code,
        "llm_name_or_path": llm_name_or_path,
    }
    described = MultimodalModel.read_instruction(mllm_dir).get("encoder")
    if mllm_encoder is None and described and described.get("name") == SeFARVideoEncoder.name:
        chat = VideoChat.from_pretrained(mllm_dir, **options)  # tokens only: the encoder is the predictor's
        encoder = SeFARVideoEncoder(predictor.model, **builder_options(described))
        encoder.requires_grad_(False).eval()
        check_encoder(encoder, chat.model)
        return chat, encoder
    chat = VideoChat.from_pretrained(mllm_dir, encoder_weights=mllm_encoder or encoder_dir, **options)
    return chat, chat.encoder


@dataclass
class _Clip:
    """What the demo keeps of a recently decoded clip: the classifier's input ``[n_test, C, S, h, w]``,
    its top-1 and, once asked for, the MLLM's tokens ``[1, N, D]``."""

    video: torch.Tensor
    top1: int
    tokens: torch.Tensor | None = None


class DemoClips:
    """Each clip decoded once for the classifier and the MLLM's video encoder (``None``: the chat model
    decodes clips itself). The last ``max_clips`` clips are kept, by path, size and modification time.

    The MLLM's tokens reuse the classifier's input when the video encoder takes exactly that input (same
    views, size and normalisation, one view per clip); otherwise they come from the encoder's own pass
    through the data path (:func:`mllm.feature_cache.encode_entries`). Safe to call from several threads.
    """

    def __init__(self, predictor: Predictor, video_encoder: VideoEncoder | None, max_clips: int = 8):
        self.predictor = predictor
        self.video_encoder = video_encoder
        self.max_clips = max_clips
        self._clips: OrderedDict[tuple[str, int, int], _Clip] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def shares_input(self) -> bool:
        """True when the video encoder's input is the classifier's (so one decode serves both)."""
        if self.video_encoder is None:
            return False
        p, augment = self.video_encoder.preprocess, self.predictor.augment
        classifier = (self.predictor.views, self.predictor.config.img_size, augment.mean, augment.std)
        one_view = (augment.test_offsets, augment.test_crops) == (1, 1)
        return one_view and (p.views, p.image_size, p.mean, p.std) == classifier

    def predict(self, path: Path) -> ClipPrediction:
        """The classifier's prediction, with the decoded frames for display; raises DecodeError."""
        return self._decode(path)[0]

    def top1(self, path: Path) -> int:
        """The classifier's top-1 class of the clip (decoded only if not kept)."""
        return self._clip(path).top1

    def mllm_input(self, path: Path) -> torch.Tensor | Path:
        """What the chat model is given: the MLLM's tokens ``[1, N, D]``, or the path without a video
        encoder. Raises DecodeError."""
        if self.video_encoder is None:
            return path
        clip = self._clip(path)
        if clip.tokens is None:
            if self.shares_input:
                clip.tokens = self.video_encoder.encode(clip.video[:1]).cpu()  # [1, N, D]
            else:
                entry = ListEntry(path, 0, 1, str(path))
                (batch,) = encode_entries(self.video_encoder, [entry], batch_size=1, progress=False)
                clip.tokens = batch.tokens.cpu()
        return clip.tokens

    def segment_input(self, path: Path, start_s: float, end_s: float) -> torch.Tensor:
        """The MLLM's tokens ``[1, N, D]`` of seconds ``[start_s, end_s)`` of a clip (a segment of a routine):
        its video encoder's eval input, sampled from the frames of that part only (:class:`PartSampler` in
        the data path's eval dataset), then encoded. Needs the video encoder; raises DecodeError."""
        if self.video_encoder is None:
            raise ValueError("the tokens of part of a clip need the MLLM's video encoder (load_chat)")
        try:
            fps = video_fps(path)  # the rate the detector's segment times were computed with
        except (av.FFmpegError, OSError, FeatureFolderError) as err:
            raise DecodeError(path, str(err)) from None
        first = max(0, math.floor(start_s * fps + 1e-6))
        end = max(first + 1, math.ceil(end_s * fps - 1e-6))
        dataset = self.video_encoder.preprocess.eval_dataset([ListEntry(path, 0, 1, str(path))])
        dataset.sampler = PartSampler(dataset.sampler, first, end)  # which frames: the part's only
        video = dataset[0]["video"]  # [1, C, S, h, w]: one eval view, as encode_entries takes it
        return self.video_encoder.encode(video).cpu()  # [1, N, D]

    def _decode(self, path: Path) -> tuple[ClipPrediction, _Clip]:
        prediction = self.predictor.predict(path)  # the clip's one decode
        clip = _Clip(prediction.video, prediction.top1.label)
        with self._lock:
            self._clips[_key(path)] = clip
            while len(self._clips) > self.max_clips:
                self._clips.popitem(last=False)
        return prediction, clip

    def _clip(self, path: Path) -> _Clip:
        key = _key(path)
        with self._lock:
            if key in self._clips:
                self._clips.move_to_end(key)
                return self._clips[key]
        return self._decode(path)[1]


class PartSampler:
    """The eval frames of frames ``[first, end)`` of a clip: ``sampler``'s choice on that part (as if the
    part were the whole clip), shifted to the clip's frame numbers. Replaces the sampler of an eval
    :class:`~sefar_encoder.dataset.VideoClipDataset`, so the decode and transforms stay the data path's.
    A part reaching past the clip's end is cut at the last frame (one frame at least)."""

    def __init__(self, sampler: DualLevelSampler, first: int, end: int):
        if first < 0 or end <= first:
            raise ValueError(f"a part of a clip needs 0 <= first < end, got [{first}, {end})")
        self.sampler, self.first, self.end = sampler, first, end

    def eval(self, num_frames: int, num_offsets: int = 1) -> list[FrameSample]:
        first = min(self.first, num_frames - 1)
        length = max(1, min(self.end, num_frames) - first)
        return [
            FrameSample(tuple(v + first for v in s.per_view)) for s in self.sampler.eval(length, num_offsets)
        ]


def _key(path: Path) -> tuple[str, int, int]:
    """A clip's identity: its file, size and modification time (an upload under a reused name differs)."""
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns
