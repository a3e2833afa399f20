"""Multimodal LLM: video encoders behind one interface, feature cache, projector, LLM + LoRA, chat."""
