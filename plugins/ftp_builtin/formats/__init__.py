"""Built-in formats, one plugin module per family of record shapes."""
