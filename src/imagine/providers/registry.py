"""Which provider serves which model, from configuration."""

from __future__ import annotations

from collections.abc import Iterable

from imagine.providers.base import Provider


class UnknownProvider(LookupError):
    pass


class ProviderRouter:
    def __init__(self, providers: Iterable[Provider], default: str) -> None:
        self._providers = {provider.name: provider for provider in providers}
        if default not in self._providers:
            raise UnknownProvider(default)
        self._default = default

    def route(self, model: str) -> Provider:
        """The provider a new task of `model` goes to."""
        return self._providers[self._default]

    def get(self, name: str) -> Provider:
        """The provider that holds an existing task (it may no longer be the default)."""
        try:
            return self._providers[name]
        except KeyError:
            raise UnknownProvider(name) from None

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
