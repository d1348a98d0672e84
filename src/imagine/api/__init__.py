"""The HTTP layer: thin routes over the services, errors rendered in the envelope."""
