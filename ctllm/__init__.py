"""CT-LLM DPO Studio: preference pairs, DPO training and side-by-side chat."""

__version__ = "0.1.0"
