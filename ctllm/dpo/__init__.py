"""DPO: tokenization (``tokenize``), batching (``batching``), log-probs (``logps``), losses and metrics
(``losses``), cached reference log-probs (``reference``), data snapshots (``snapshot``), and the training loop.

Import the submodules directly; this package imports nothing so that light modules (config, presets) stay light.
"""
