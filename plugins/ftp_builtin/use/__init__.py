"""Using what a run trained: ``ftp chat`` and ``ftp export`` (GGUF, Ollama, safetensors).

`ftp_builtin.use.commands` adds both commands through the ``ftp_cli_commands`` hook; the
heavy libraries (torch, transformers, gguf, llama-cpp-python) are imported only when one runs.
"""
