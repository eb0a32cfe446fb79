"""unimp-bench: a benchmark toolkit for unified multi-modal personalization."""

__version__ = "0.1.0"
