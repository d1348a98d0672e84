"""imagine: a self-hostable server for the Grok Imagine generation API."""

__version__ = "0.1.0"
