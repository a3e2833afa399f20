"""Weakly-supervised temporal element detection (HAAN, Li, He and Xu 2022): find the elements of an untrimmed
routine from routine-level labels only.

In data-flow order: ``features`` (a routine video -> sliding-window features of a SeFAR encoder, cached per
routine) -> ``routine_data`` (features + routine-level labels -> padded batches) -> ``kmeans`` (atomic
actions: clustering of clip embeddings) -> ``haan`` (the four MLPs and HAAN's losses) -> ``inference``
(clip logits -> routine class scores -> segments) -> ``routine_detection`` (a trained detector with its
window encoder: a routine video -> segments). ``scripts/train_detector.py`` trains, ``scripts/detect.py``
and the demo's routine tab find the segments of new routines through ``routine_detection``; the ground truth and the mAP are ``gym_qa.routine_annotations`` and
``gym_qa.detection_eval``. docs/detection.md describes it all.

Shape notation: B routines in a batch, T clips (windows) of a routine, D feature width, E embedding width,
H hidden width, C fine classes (elements), G coarse classes (sets), K clusters (atomic actions).
"""
