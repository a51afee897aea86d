"""Training as the original did it, evaluation of a split through the engine, and the demo."""
