"""Which providers serve which model, in what order, from configuration.

A provider is a module (or a package, as `local` is) of this package with a
`create(context)` function: adding one (fal, Replicate) is one new module, found here by
its name. Finding them imports each one, so none may import heavy dependencies at import
time: `local` loads torch only when a worker first runs one of its tasks.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import Iterable, Mapping
from typing import Any

from imagine import catalog
from imagine.config import Settings, SettingsError
from imagine.errors import BadRequest, InvalidInput
from imagine.providers.base import Health, Provider, ProviderContext, SourceTask

_NOT_PROVIDERS = frozenset({"base", "budget", "shared_budget", "registry", "media", "upstream"})


class UnknownProvider(LookupError):
    pass


def provider_names() -> list[str]:
    """The providers this installation has: the modules of this package with `create`."""
    import imagine.providers as package

    names = []
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.startswith("_") or module.name in _NOT_PROVIDERS:
            continue
        if hasattr(importlib.import_module(f"imagine.providers.{module.name}"), "create"):
            names.append(module.name)
    return sorted(names)


def route_table(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Per model, the providers to try in order: its IMAGINE_ROUTES entry, or the default."""
    return {model: settings.routes.get(model, (settings.provider,)) for model in catalog.MODELS}


def build_router(settings: Settings, context: ProviderContext) -> ProviderRouter:
    """Create every provider a route names. Raises SettingsError, in one line, for an
    unknown provider, missing credentials, or an explicit route a provider can't serve."""
    known = provider_names()
    table = route_table(settings)
    # preview needs nothing and finishes tasks created before a configuration change.
    names = ["preview", *dict.fromkeys(name for chosen in table.values() for name in chosen)]
    providers: dict[str, Provider] = {}
    for name in dict.fromkeys(names):
        if name not in known:
            where = "IMAGINE_ROUTES" if name != settings.provider else "IMAGINE_PROVIDER"
            raise SettingsError(
                f"invalid setting {where}: unknown provider {name!r}; use " + ", ".join(known)
            )
        module: Any = importlib.import_module(f"imagine.providers.{name}")
        providers[name] = module.create(context)
    routes: dict[str, tuple[str, ...]] = {}
    for model, chosen in table.items():
        unable = [name for name in chosen if model not in providers[name].models]
        if unable and model in settings.routes:
            raise SettingsError(
                f"invalid setting IMAGINE_ROUTES: {unable[0]} can't serve {model}; "
                "route it to a provider that can"
            )
        # The default provider simply doesn't get the models it can't serve (xAI: upscale).
        routes[model] = tuple(name for name in chosen if name not in unable)
    return ProviderRouter(providers, routes)


class ProviderRouter:
    def __init__(self, providers: Mapping[str, Provider], routes: Mapping[str, tuple[str, ...]]):
        self._providers = dict(providers)
        self._routes = dict(routes)

    def routes(self, model: str) -> tuple[str, ...]:
        return self._routes.get(model, ())

    def providers(self) -> Iterable[Provider]:
        return self._providers.values()

    def route(
        self, model: str, given: Mapping[str, Any], source: SourceTask | None = None
    ) -> Provider:
        """The provider a new task goes to: the first of its routes that can run it.
        Raises BadRequest when no provider serves the model here, InvalidInput naming the
        field when none can run this particular task."""
        chosen = self.routes(model)
        if not chosen:
            raise BadRequest(
                f"model: {model} is not available on this server; no configured provider can run it"
            )
        reasons = []
        for name in chosen:
            provider = self._providers[name]
            reason = provider.refusal(model, given, source)
            if reason is None:
                return provider
            reasons.append(reason if len(chosen) == 1 else f"{name}: {reason}")
        raise InvalidInput("; ".join(reasons))

    def failover(
        self, model: str, current: str, given: Mapping[str, Any], source: SourceTask | None
    ) -> Provider | None:
        """The next route after `current` (wrapping around) that can run the task, if any."""
        chosen = self.routes(model)
        if current not in chosen or len(chosen) < 2:
            return None
        start = chosen.index(current)
        for offset in range(1, len(chosen)):
            provider = self._providers[chosen[(start + offset) % len(chosen)]]
            if provider.refusal(model, given, source) is None:
                return provider
        return None

    def get(self, name: str) -> Provider:
        """The provider that holds an existing task (it may no longer be routed to)."""
        try:
            return self._providers[name]
        except KeyError:
            raise UnknownProvider(name) from None

    async def check(self) -> dict[str, Health]:
        """Every provider's health, asked concurrently."""
        names = list(self._providers)
        found = await asyncio.gather(*(self._providers[name].check() for name in names))
        return dict(zip(names, found, strict=True))

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
