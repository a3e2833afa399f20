"""SeFAR encoder: the video data path (lists, decoding, sampling, augmentation), the TimeSformer
model with dual-level temporal elements, and semi-supervised training pieces.

The data path, module by module in the order a clip passes through it: ``decoding`` (file -> frames) ->
``sampling`` (which frames) -> ``transforms`` (frames -> views) -> ``dataset`` (one clip -> one sample;
``clip_checks`` finds the clips that cannot be decoded) -> ``collate`` (samples -> a batch) ->
``batch_sampler`` (which clips make a batch) -> ``loader`` (a data set folder -> datasets -> batches).

Shape notation used throughout: B batch, V views, T frames, C channels, H/W pixels, N tokens, D width.
"""
