"""Looking at data before training: the library behind ``ftp data preview`` and ``inspect``.

Both read a pipeline's datasets exactly as ``ftp run`` does (loader, format, split) and ask the
method of the stage that trains on a dataset how it tokenizes (`Method.tokenize_examples`),
loading the tokenizer but never the model. Nothing here knows about the command line: the
commands in `ftp.cli.data` call it and print what it returns.
"""
