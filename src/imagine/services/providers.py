"""What the operator sees of the providers: routes, reachability, upstream balance."""

from __future__ import annotations

from imagine import catalog
from imagine.providers.registry import ProviderRouter
from imagine.schemas import ProviderReport


async def provider_report(router: ProviderRouter) -> list[ProviderReport]:
    """Each configured provider, checked now (concurrently), with the models routed to it."""
    health = await router.check()
    report: list[ProviderReport] = []
    for provider in router.providers():
        found = health[provider.name]
        routed = [model for model in catalog.MODELS if provider.name in router.routes(model)]
        report.append(
            {
                "name": provider.name,
                "engine": provider.engine,
                "routed_models": routed,
                "ok": found.ok,
                "reachable": found.reachable,
                "detail": found.detail,
                "balance": found.balance,
                "latency_ms": found.latency_ms,
            }
        )
    return report
