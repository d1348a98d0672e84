"""Domain rules: credits, keys and the task lifecycle. No HTTP here."""
