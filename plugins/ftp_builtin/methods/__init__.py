"""Built-in training methods, one plugin module each."""
