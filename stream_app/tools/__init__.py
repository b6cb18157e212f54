"""Command-line tools: the stream generator, replay, and the demo."""
