"""Gymnastics domain: FineGym metadata and hierarchy, the SynthGym generator, Gym-QA questions and scoring.

This package imports no torch: it is the bottom of the dependency graph
(gym_qa <- sefar_encoder <- mllm).
"""
