"""SeFAR encoder: the video data path (lists, decoding, sampling, augmentation), the TimeSformer
model with dual-level temporal elements, and semi-supervised training pieces.

Shape notation used throughout: B batch, V views, T frames, C channels, H/W pixels, N tokens, D width.
"""
