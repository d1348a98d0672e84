"""The `imagine` command: serve, run a worker, manage keys and credits."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import logging.config
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from imagine import __version__, cli_client
from imagine.clock import iso_z
from imagine.terminal import command_name, console, err_console

# The server's modules load in the commands that use them, so that the client commands
# (cli_client.py) start without them.
if TYPE_CHECKING:
    from imagine.config import Settings
    from imagine.metrics_server import MetricsServer
    from imagine.providers.registry import ProviderRouter
    from imagine.services.keys import CreatedKey
    from imagine.store.db import Database

T = TypeVar("T")

app = typer.Typer(
    help="imagine: a self-hostable server for the Grok Imagine generation API.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
credits_app = typer.Typer(help="Grant and show credits.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
providers_app = typer.Typer(help="Upstream providers.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(providers_app, name="providers")
app.add_typer(credits_app, name="credits")
app.add_typer(db_app, name="db")


DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder for the database and results [env IMAGINE_DATA_DIR; default ./imagine-data].",
        show_default=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _settings(**overrides: Any) -> Settings:
    from imagine.config import SettingsError, load_settings

    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _with_db(
    settings: Settings,
    work: Callable[[Database], Awaitable[T]],
    *,
    migrate: Callable[[Database], Awaitable[None]] | None = None,
) -> T:
    """Run one database operation and turn domain errors into exit 1. Before it, an empty
    database gets its schema; one at another revision stops here (only `db upgrade`
    migrates, given as `migrate`)."""
    from imagine.errors import ImagineError
    from imagine.store.db import Database
    from imagine.store.migrate import SchemaMismatch, prepare

    async def run() -> T:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url)
        try:
            await (migrate or prepare)(db)
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except ImagineError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    except SchemaMismatch as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None


def _configure_logging(settings: Settings) -> dict[str, Any]:
    from imagine.logs import logging_config

    config = logging_config(settings.log_level, settings.log_format)
    logging.config.dictConfig(config)
    return config


def _with_providers(
    settings: Settings, public_url: str, work: Callable[[ProviderRouter], Awaitable[T]]
) -> T:
    """Build the configured providers (exit 2 with one line if they can't run) and use them."""
    from imagine.config import SettingsError
    from imagine.fetch import Fetcher
    from imagine.runtime import USER_AGENT, providers_for
    from imagine.storage import build_storage

    async def run() -> T:
        fetcher = Fetcher.from_settings(build_storage(settings, public_url), settings, USER_AGENT)
        try:
            router = providers_for(settings, public_url, fetcher)
            try:
                return await work(router)
            finally:
                await router.aclose()
        finally:
            await fetcher.aclose()

    try:
        return asyncio.run(run())
    except SettingsError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


async def _nothing(router: ProviderRouter) -> None:
    return None


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    data_dir: DataDir = None,
    public_url: Annotated[
        str | None,
        typer.Option(help="Base of result URLs [env IMAGINE_PUBLIC_URL].", show_default=False),
    ] = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run the task worker in this process.")
    ] = True,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log")] = True,
) -> None:
    """Serve the API (and, by default, the worker) on the embedded default or your settings."""
    import uvicorn

    from imagine.api.app import create_app
    from imagine.services import keys as key_service
    from imagine.serving import QuietStop, listen

    settings = _settings(data_dir=data_dir, public_url=public_url)
    # The address first: nothing is created (no key shown "only this once") for a
    # server that can't start.
    try:
        sockets = listen(host, port)
    except OSError as exc:
        err_console.print(
            f"[red]error:[/red] can't listen on {host}:{port} ({exc.strerror or exc}): "
            f"stop what uses it, or pick another port with --port",
            highlight=False,
        )
        raise typer.Exit(3) from None
    log_config = _configure_logging(settings)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = settings.public_url or f"http://{shown_host}:{port}"
    _with_providers(settings, base, _nothing)
    first_key = _with_db(settings, key_service.ensure_first_key)
    _welcome(settings, base, f"http://{shown_host}:{port}", first_key, worker)
    config = uvicorn.Config(
        create_app(settings, public_url=base, run_worker=worker),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        log_config=log_config,
        access_log=access_log,
        timeout_graceful_shutdown=15,
    )
    server = QuietStop(config)
    server.run(sockets=sockets)
    if not server.started:
        raise typer.Exit(3)


def _welcome(
    settings: Settings, base: str, listen: str, first_key: CreatedKey | None, worker: bool
) -> None:
    database = (
        "SQLite in " + str(settings.data_dir) if settings.database_url is None else "your database"
    )
    console.print(
        f"[bold]imagine {__version__}[/bold] on {listen}  ({database}, "
        f"provider {settings.provider}{', worker on' if worker else ', no worker'})"
    )
    console.print(f"API docs: {listen}/docs    results: {base}/files/")
    if first_key is not None:
        key = first_key.key
        console.print(
            f"\nA development key with {first_key.balance} credits was created. "
            "It is shown only this once:\n"
        )
        typer.echo(f"    {key}\n")
    else:
        key = "<YOUR_API_KEY>"
        console.print(
            f"\nCreate a key with:  {command_name()} keys create --name me --credits 100"
            + (
                f" --data-dir {settings.data_dir}"
                if settings.data_dir != Path("imagine-data")
                else ""
            )
        )
    console.print("Try it (then poll the task_id it returns):\n")
    body = (
        '{"model":"grok-imagine/text-to-image",'
        '"input":{"prompt":"A majestic dragon flying over a neon-lit cyberpunk city"}}'
    )
    # Plain echo, never wrapped: these lines must work when pasted as printed.
    typer.echo(
        f"    curl -s {listen}/api/generate -H 'Authorization: Bearer {key}' "
        f"-H 'Content-Type: application/json' -d '{body}'"
    )
    typer.echo(
        f"    curl -s '{listen}/api/status?task_id=<TASK_ID>' -H 'Authorization: Bearer {key}'\n"
    )


@app.command()
def worker(
    data_dir: DataDir = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve /metrics, /healthz and /readyz on this port "
            "[env IMAGINE_METRICS_PORT; host IMAGINE_METRICS_HOST, default 127.0.0.1].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run only the task worker (for fleets: any number, beside `serve --no-worker`)."""
    from imagine.runtime import Runtime
    from imagine.store.migrate import SchemaMismatch

    settings = _settings(data_dir=data_dir, metrics_port=metrics_port)
    _configure_logging(settings)
    public_url = settings.public_url or "http://127.0.0.1:8000"
    _with_providers(settings, public_url, _nothing)

    async def run() -> None:
        runtime = Runtime(settings, public_url=public_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server: MetricsServer | None = None
        try:
            if settings.metrics_port is not None:
                server = _metrics_server(settings, runtime.db, loop)
            await runtime.start()
            if server is not None:
                server.start()
            # As in `serve`: what lives as long as the process is kept out of GC scans.
            gc.collect()
            gc.freeze()
            await stop.wait()
        finally:
            if server is not None:
                await asyncio.to_thread(server.stop)
            await runtime.close()

    try:
        asyncio.run(run())
    except SchemaMismatch as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None


def _metrics_server(
    settings: Settings, db: Database, loop: asyncio.AbstractEventLoop
) -> MetricsServer:
    from imagine.metrics_server import MetricsServer

    assert settings.metrics_port is not None
    try:
        return MetricsServer(db, loop, settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        err_console.print(
            f"[red]error:[/red] can't serve metrics on {settings.metrics_host}:"
            f"{settings.metrics_port} (IMAGINE_METRICS_HOST, IMAGINE_METRICS_PORT): "
            f"{exc.strerror or exc}",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(2) from None


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who the key is for.")],
    credits: Annotated[int, typer.Option(help="Credits of the new account.", min=0)] = 0,
    account: Annotated[
        str | None, typer.Option(help="Add the key to this existing account instead.")
    ] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Create a key (on a new account with --credits). The key is printed once."""
    from imagine.services import keys as key_service

    settings = _settings(data_dir=data_dir)
    created = _with_db(
        settings,
        lambda db: key_service.create_key(db, name=name, credits=credits, account_id=account),
    )
    if as_json:
        _print_json(
            {
                "key": created.key,
                "key_id": created.key_id,
                "account_id": created.account_id,
                "name": created.name,
                "balance": created.balance,
            }
        )
        return
    console.print(
        f"Key {created.key_id} for account {created.account_id} "
        f"(balance {created.balance}). Shown only once:"
    )
    typer.echo(created.key)


@keys_app.command("list")
def keys_list(as_json: JsonFlag = False, data_dir: DataDir = None) -> None:
    """List keys with their accounts and balances (never the secrets)."""
    from imagine.services import keys as key_service

    found = _with_db(_settings(data_dir=data_dir), key_service.list_keys)
    rows = [key_service.key_view(key) for key in found]
    if as_json:
        _print_json(rows)
        return
    table = Table("key id", "name", "prefix", "account", "balance", "created", "revoked")
    for row in rows:
        table.add_row(
            *(str(row[field] or "") for field in ("key_id", "name", "prefix", "account_id")),
            str(row["balance"]),
            row["created_at"],
            row["revoked_at"] or "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key id (key_...) or the key itself.")],
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Revoke a key: it answers 401 from now on."""
    from imagine.services import keys as key_service

    revoked = _with_db(_settings(data_dir=data_dir), lambda db: key_service.revoke_key(db, key))
    if as_json:
        _print_json(
            {
                "key_id": revoked.id,
                "revoked_at": iso_z(revoked.revoked_at) if revoked.revoked_at else None,
            }
        )
        return
    console.print(f"Key {revoked.id} ({revoked.name}) is revoked.")


@credits_app.command("grant")
def credits_grant(
    account: Annotated[str, typer.Argument(help="Account id, key id or key.")],
    amount: Annotated[int, typer.Argument(help="Credits to add; negative takes them back.")],
    note: Annotated[str | None, typer.Option(help="Why, for the ledger.")] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Grant credits to an account (written to its ledger)."""
    from imagine.services import keys as key_service

    account_id, balance = _with_db(
        _settings(data_dir=data_dir),
        lambda db: key_service.grant_credits(db, account, amount, note),
    )
    if as_json:
        _print_json({"account_id": account_id, "balance": balance})
        return
    console.print(f"Account {account_id} now has {balance} credits.")


@credits_app.command("show")
def credits_show(
    account: Annotated[str, typer.Argument(help="Account id, key id or key.")],
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Show an account's balance and its latest ledger rows."""
    from imagine.services import keys as key_service

    found = _with_db(
        _settings(data_dir=data_dir), lambda db: key_service.account_credits(db, account)
    )
    view = key_service.credits_view(found)
    if as_json:
        _print_json(view)
        return
    console.print(f"Account {found.account_id}: [bold]{found.balance}[/bold] credits")
    table = Table("when", "kind", "amount", "balance after", "task", "note")
    for row in view["ledger"]:
        table.add_row(
            row["created_at"],
            row["kind"],
            f"{row['amount']:+d}",
            str(row["balance_after"]),
            row["task_id"] or "",
            row["note"] or "",
        )
    console.print(table)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None) -> None:
    """Migrate the database to the newest schema. Back it up first: serve and worker
    create the schema of an empty database, but refuse to start on an older one."""

    async def nothing(_: Database) -> None:
        return None

    from imagine.store.migrate import upgrade

    _with_db(_settings(data_dir=data_dir), nothing, migrate=upgrade)
    console.print("The database schema is up to date.")


cli_client.register(app)


def main() -> None:
    app()


@providers_app.command("check")
def providers_check(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Ask each configured provider now: reachable, credentials accepted, upstream balance.
    Exits 1 when one is not usable."""
    from imagine.services.providers import provider_report

    settings = _settings(data_dir=data_dir)
    report = _with_providers(
        settings, settings.public_url or "http://127.0.0.1:8000", provider_report
    )
    if as_json:
        _print_json(report)
    else:
        table = Table("provider", "engine", "ok", "detail", "balance", "latency", "routed models")
        for row in report:
            table.add_row(
                row["name"],
                row["engine"],
                "[green]yes[/green]" if row["ok"] else "[red]no[/red]",
                row["detail"],
                "" if row["balance"] is None else f"{row['balance']:g}",
                "" if row["latency_ms"] is None else f"{row['latency_ms']:.0f} ms",
                ", ".join(model.removeprefix("grok-imagine/") for model in row["routed_models"]),
            )
        console.print(table)
    if not all(row["ok"] for row in report):
        raise typer.Exit(1)
