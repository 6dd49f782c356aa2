"""Publishing a finished run: its model card, the folder uploaded to the hub, GGUF for llama.cpp and Ollama.

Everything here reads a run directory (``ctllm.runs``) and writes beside it; nothing changes how a run trains.
See docs/architecture.md, "Publishing a run".
"""
