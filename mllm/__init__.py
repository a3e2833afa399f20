"""Multimodal LLM: video encoders behind one interface, feature cache, projector, LLM + LoRA, chat."""

import logging


class _UnusedCpu4bitKernelNotice(logging.Filter):
    """Drops one bitsandbytes warning. On a CPU with AVX512-BF16, importing bitsandbytes (peft does) asks
    the HF hub for a CPU 4-bit GEMM kernel and, offline or for an unverified publisher, warns and suggests
    ``trust_remote_code=True``. This toolkit never runs 4-bit on the CPU (4-bit needs CUDA:
    ``mllm/language_model.py``), so the warning is noise on every command; other warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to load CPU gemm_4bit_forward")


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_UnusedCpu4bitKernelNotice())
