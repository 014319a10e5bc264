"""Built-in evaluators, one plugin module per family."""
