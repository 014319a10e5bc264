"""Looking at data before training: ``ftp data preview`` and ``ftp data inspect``.

Both read a pipeline's datasets exactly as ``ftp run`` does (loader, format, split) and ask the
method of the stage that trains on a dataset how it tokenizes (`Method.tokenize_examples`),
loading the tokenizer but never the model.
"""
