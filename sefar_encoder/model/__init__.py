"""SeFAR model: TimeSformer backbone shared by all views, fusion head, TubeTokenMix, export, presets.

Shape notation: B batch, C channels, V views, T frames of a view, S = sum of view frames, H/W pixels,
N patch tokens per frame, D backbone width, Dh fusion width, K classes.
"""

from .encoder import EncoderOutput, ModelConfig, SeFAREncoder
from .fusion_head import FusionHead
from .image_vit import LoadReport, build_image_vit, image_vit_kwargs, load_image_vit
from .presets import IMAGE_VIT, PRESETS, build_encoder, model_config
from .timesformer import TimeSformer
from .token_mix import MixSpec, TubeMix

__all__ = [
    "IMAGE_VIT",
    "PRESETS",
    "EncoderOutput",
    "FusionHead",
    "LoadReport",
    "MixSpec",
    "ModelConfig",
    "SeFAREncoder",
    "TimeSformer",
    "TubeMix",
    "build_encoder",
    "build_image_vit",
    "image_vit_kwargs",
    "load_image_vit",
    "model_config",
]
