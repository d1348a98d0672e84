"""The `imagine` commands that use a server as its clients do, through the SDK
(`imagine.client`): generate and wait, status, tasks, download, balance, cancel, login.

Human output by default, `--json` for scripts; the exit code says what went wrong
(EXIT_CODES, listed in `imagine --help` and docs/cli.md). Nothing here loads the server.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from imagine.client import (
    AuthenticationError,
    Client,
    ConfigError,
    ConnectionFailed,
    ImagineError,
    InsufficientCredits,
    Task,
    TaskFailed,
    WaitTimeout,
    login_path,
    remove_login,
    save_login,
)
from imagine.client.config import resolve
from imagine.terminal import command_name, console, err_console

T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1
"""The server refused the request for another reason (bad input, not found, ...)."""
EXIT_USAGE = 2
"""The command line is wrong (Typer's own code for usage errors)."""
EXIT_AUTH = 3
EXIT_CREDITS = 4
EXIT_TASK_FAILED = 5
EXIT_TIMEOUT = 6
EXIT_UNREACHABLE = 7

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_ERROR: "the server refused the request (bad input, unknown task, ...)",
    EXIT_USAGE: "usage error (a wrong option or argument)",
    EXIT_AUTH: "no API key, or the key was refused (401)",
    EXIT_CREDITS: "not enough credits (402)",
    EXIT_TASK_FAILED: "the task ended FAILED",
    EXIT_TIMEOUT: "--wait gave up after --timeout seconds; the task goes on",
    EXIT_UNREACHABLE: "the server could not be reached",
}

EXIT_CODES_HELP = "Exit codes: " + "; ".join(
    f"{code} {meaning}" for code, meaning in EXIT_CODES.items()
)


BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="The server [env IMAGINE_BASE_URL; else the stored login; else "
        "http://127.0.0.1:8000].",
        show_default=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Timeout = Annotated[
    float | None,
    typer.Option("--timeout", help="With --wait: give up after this many seconds.", min=0),
]
OutDir = Annotated[
    Path | None, typer.Option("--out", help="Save the results into this folder (made if missing).")
]


def _fail(code: int, message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _exit_code(exc: ImagineError) -> int:
    if isinstance(exc, AuthenticationError):
        return EXIT_AUTH
    if isinstance(exc, InsufficientCredits):
        return EXIT_CREDITS
    if isinstance(exc, TaskFailed):
        return EXIT_TASK_FAILED
    if isinstance(exc, WaitTimeout):
        return EXIT_TIMEOUT
    if isinstance(exc, ConnectionFailed):
        return EXIT_UNREACHABLE
    return EXIT_ERROR


def _advice(exc: ImagineError, base_url: str) -> str:
    """What to do next, after the server's own words."""
    if isinstance(exc, AuthenticationError):
        return f" (run `{command_name()} login`, or set IMAGINE_API_KEY)"
    if isinstance(exc, ConnectionFailed):
        return f" (is the server running at {base_url}? `{command_name()} serve` starts one)"
    return ""


@contextmanager
def _client(base_url: str | None) -> Iterator[Client]:
    """A client of the chosen server; an SDK error ends the command with its exit code."""
    try:
        url, key = resolve(base_url)
    except ConfigError as exc:
        raise _fail(EXIT_USAGE, f"{exc.message} ({login_path()})") from None
    if key is None:
        raise _fail(
            EXIT_AUTH,
            f"no API key for {url}: run `imagine login --base-url {url}`, or set IMAGINE_API_KEY",
        )
    try:
        with Client(key, base_url=url) as client:
            yield client
    except ImagineError as exc:
        if isinstance(exc, WaitTimeout):
            raise _fail(
                EXIT_TIMEOUT,
                f"{exc.task.task_id} is still {exc.task.status} after the timeout; it goes on "
                f"(`imagine status {exc.task.task_id} --wait`)",
            ) from None
        raise _fail(_exit_code(exc), f"{exc}{_advice(exc, url)}") from None


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _task_json(task: Task, files: list[Path] | None = None) -> dict[str, Any]:
    shown = dict(task.raw) or {"task_id": task.task_id, "status": task.status}
    if files is not None:
        shown["files"] = [str(path) for path in files]
    return shown


def _options(given: list[str]) -> dict[str, str]:
    options = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise _fail(EXIT_USAGE, f"--option {item!r}: write it as key=value")
        options[name.strip()] = value.strip()
    return options


# -- the live display of a wait ---------------------------------------------------------


class _Watch:
    """What `--wait` shows while it waits: the task's status, the time gone and, where
    the provider reports it, a progress bar. Rendered afresh at each refresh, so the
    clock moves between polls."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self._started = time.monotonic()

    def update(self, task: Task) -> None:
        self.task = task

    def __rich__(self) -> RenderableType:
        task = self.task
        elapsed = time.monotonic() - self._started
        line = Text.assemble(
            (task.task_id, "bold"),
            "  ",
            (task.status, _STATUS_STYLE.get(task.status, "")),
            f"  {elapsed:5.1f} s",
        )
        if task.progress is None or task.done:
            return line
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=100, completed=task.progress, width=40), f"{task.progress}%")
        return Group(line, bar)


_STATUS_STYLE = {"IN_PROGRESS": "yellow", "SUCCESS": "green", "FAILED": "red"}


def _wait(client: Client, task: Task, timeout: float | None, as_json: bool) -> Task:
    """The task once it ended, shown live on a terminal (nothing extra with --json)."""
    if as_json or not err_console.is_terminal:
        return client.wait(task, timeout=timeout)
    watch = _Watch(task)
    with Live(watch, console=err_console, refresh_per_second=8, transient=True):
        done = client.wait(task, timeout=timeout, on_update=watch.update)
    return done


def _show(task: Task, files: list[Path] | None = None) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_row("task", task.task_id)
    table.add_row("status", Text(task.status, _STATUS_STYLE.get(task.status, "")))
    table.add_row("model", task.model)
    if task.progress is not None and not task.done:
        table.add_row("progress", f"{task.progress}%")
    if task.consumed_credits is not None:
        table.add_row("credits", str(task.consumed_credits))
    if task.error_message:
        table.add_row("error", Text(task.error_message))
    for url in task.result_urls:
        table.add_row("result", url)
    for path in files or []:
        table.add_row("saved", str(path))
    console.print(table)


def _finish(client: Client, task: Task, out: Path | None, as_json: bool) -> None:
    """Print the ended task (and save its results into `out`); exit 5 if it FAILED."""
    files = client.download(task, out) if out is not None and task.succeeded else None
    if as_json:
        _print_json(_task_json(task, files))
    else:
        _show(task, files)
    if task.failed:
        raise typer.Exit(EXIT_TASK_FAILED)


# -- the commands -------------------------------------------------------------------------


def generate(
    prompt: Annotated[
        str | None, typer.Argument(help="What to make (not needed to upscale --from-task).")
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="A model, full (grok-imagine/text-to-video) or short (upscale)."
        ),
    ] = "grok-imagine/text-to-image",
    image: Annotated[
        list[str] | None,
        typer.Option("--image", help="A source image URL (image-to-video); repeatable."),
    ] = None,
    from_task: Annotated[
        str | None, typer.Option("--from-task", help="Use the result of one of your tasks.")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option", "-o", help="A model option as key=value (aspect_ratio=16:9); repeatable."
        ),
    ] = None,
    public: Annotated[bool, typer.Option("--public", help="Show it in the gallery.")] = False,
    callback_url: Annotated[
        str | None, typer.Option("--callback-url", help="Where to POST the result (webhook).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Wait for the task to end, showing its progress.")
    ] = False,
    out: OutDir = None,
    timeout: Timeout = None,
    base_url: BaseUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a task; with --wait, watch it until it ends and save its results (--out,
    default the current folder). Charged at once, refunded if it fails."""
    options = _options(option or [])
    with _client(base_url) as client:
        task: Task = client.generate(
            prompt,
            model=model,
            image_urls=image or None,
            task_id=from_task,
            callback_url=callback_url,
            public=public,
            options=options or None,
        )
        if not (wait or out is not None):
            if as_json:
                _print_json(_task_json(task))
            else:
                console.print(
                    f"{task.task_id} {task.status}; follow it with "
                    f"`imagine status {task.task_id} --wait`",
                    highlight=False,
                )
            return
        if not task.done:
            task = _wait(client, task, timeout, as_json)
        _finish(client, task, out or Path("."), as_json)


def status(
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait for it to end.")] = False,
    out: OutDir = None,
    timeout: Timeout = None,
    base_url: BaseUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Show a task; with --wait, watch it until it ends (and save its results with --out)."""
    with _client(base_url) as client:
        task: Task = client.status(task_id)
        if wait and not task.done:
            task = _wait(client, task, timeout, as_json)
        if task.done:
            _finish(client, task, out, as_json)
        elif as_json:
            _print_json(_task_json(task))
        else:
            _show(task)


def tasks(
    status_filter: Annotated[
        str | None,
        typer.Option("--status", help="Only tasks in this state: IN_PROGRESS, SUCCESS, FAILED."),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many.", min=1)] = 20,
    base_url: BaseUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Your tasks, newest first."""
    with _client(base_url) as client:
        found = list(client.tasks(status=status_filter, model=model, limit=limit))
    if as_json:
        _print_json([_task_json(task) for task in found])
        return
    table = Table("task", "status", "model", "created", "credits", "result or error")
    for task in found:
        table.add_row(
            task.task_id,
            Text(task.status, _STATUS_STYLE.get(task.status, "")),
            task.model.removeprefix("grok-imagine/"),
            task.created_at.strftime("%Y-%m-%d %H:%M:%S") if task.created_at else "",
            "" if task.consumed_credits is None else str(task.consumed_credits),
            Text(task.error_message or (task.result_urls[0] if task.result_urls else "")),
        )
    console.print(table)


def download(
    task_id: Annotated[str, typer.Argument(help="A finished task's id.")],
    out: Annotated[
        Path, typer.Option("--out", help="The folder to save into (made if missing).")
    ] = Path("."),
    base_url: BaseUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Save every result of a finished task."""
    with _client(base_url) as client:
        task = client.status(task_id)
        if not task.done:
            raise _fail(
                EXIT_ERROR,
                f"{task_id} is still {task.status}: `imagine status {task_id} --wait --out "
                f"{out}` waits and saves",
            )
        if task.failed:
            raise _fail(EXIT_TASK_FAILED, f"{task_id} failed: {task.error_message}")
        files = client.download(task, out)
    if as_json:
        _print_json([str(path) for path in files])
    else:
        for path in files:
            console.print(str(path), highlight=False)


def balance(base_url: BaseUrl = None, as_json: JsonFlag = False) -> None:
    """Your account's credits."""
    with _client(base_url) as client:
        account = client.account()
    if as_json:
        _print_json({"account_id": account.account_id, "balance": account.balance})
    else:
        console.print(f"{account.balance} credits (account {account.account_id})", highlight=False)


def cancel(
    task_id: Annotated[str, typer.Argument(help="An unfinished task's id.")],
    base_url: BaseUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Cancel an unfinished task (it ends FAILED; see the README for when it is refunded)."""
    with _client(base_url) as client:
        task = client.cancel(task_id)
    if as_json:
        _print_json(_task_json(task))
    else:
        _show(task)


def models(base_url: BaseUrl = None, as_json: JsonFlag = False) -> None:
    """The models, their prices and options."""
    with _client(base_url) as client:
        found = client.models()
    if as_json:
        _print_json(
            [
                {
                    "model": model.name,
                    "credits": model.credits,
                    "output": model.output,
                    "engine": model.engine,
                    "available": model.available,
                    "options": {name: list(values) for name, values in model.options.items()},
                }
                for model in found
            ]
        )
        return
    table = Table("model", "credits", "output", "options")
    for model in found:
        table.add_row(
            model.name,
            str(model.credits),
            model.output,
            "; ".join(f"{name}: {', '.join(values)}" for name, values in model.options.items()),
        )
    console.print(table)


def login(
    base_url: Annotated[
        str, typer.Option("--base-url", help="The server to log in to.")
    ] = "http://127.0.0.1:8000",
    key_stdin: Annotated[
        bool, typer.Option("--key-stdin", help="Read the key from standard input.")
    ] = False,
) -> None:
    """Store an API key for a server (checked against it first) in your config folder,
    readable by you only. Asks for the key unless --key-stdin."""
    if key_stdin:
        key = sys.stdin.readline().strip()
    else:
        key = typer.prompt("API key", hide_input=True).strip()
    if not key:
        raise _fail(EXIT_USAGE, "no key given")
    try:
        with Client(key, base_url=base_url) as client:
            account = client.account()
    except ImagineError as exc:
        raise _fail(_exit_code(exc), f"{exc}{_advice(exc, base_url)}") from None
    path = save_login(client.base_url, key)
    console.print(
        f"Logged in to {client.base_url} (account {account.account_id}, {account.balance} "
        f"credits); the key is stored in {path}.",
        highlight=False,
    )


def logout() -> None:
    """Remove the stored login."""
    if remove_login():
        console.print(f"Logged out: removed {login_path()}.", highlight=False)
    else:
        console.print("Not logged in; nothing to remove.")


COMMANDS: tuple[Callable[..., None], ...] = (
    generate,
    status,
    tasks,
    download,
    balance,
    cancel,
    models,
    login,
    logout,
)


def register(app: typer.Typer) -> None:
    for command in COMMANDS:
        app.command(epilog=EXIT_CODES_HELP)(command)
