"""The ``dotrio`` command (also ``python -m dotrio``).

Commands are registered on the ``main`` click group; other modules add theirs
(bench, admin) with ``@main.command()`` or ``main.add_command(...)`` in their
own modules, imported at the bottom of this file.

Exit codes: 0 success; 1 runtime failure (e.g. the port is taken); 2 a bad
config file or bad usage, with the message on stderr and no traceback.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from .._config import CONFIG_NAMES, Config, find_config, load_config
from .._errors import ConfigError, DataDirError
from .._version import __version__
from ._cli_fsck import fsck

__all__ = ["main"]

EXIT_RUNTIME = 1
EXIT_USAGE = 2

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _die(message: str, code: int) -> NoReturn:
    # A config error lists every problem, one per line: each gets the prefix.
    for line in message.splitlines() or [""]:
        click.echo(f"dotrio: error: {line}", err=True)
    sys.exit(code)


def _load(config_path: str | None) -> Config:
    if config_path is None:
        found = find_config(".")
        if found is None:
            names = [f"./{n}" for n in CONFIG_NAMES]
            _die(f"no config file given and none found: looked for {', '.join(names[:-1])} and {names[-1]}",
                 EXIT_USAGE)
        config_path = str(found)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _die(str(exc), EXIT_USAGE)
    for warning in config.warnings:
        click.echo(f"dotrio: warning: {warning}", err=True)
    return config


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="dotrio", message="%(prog)s %(version)s")
def main() -> None:
    """dotrio: Cloudflare-style Durable Objects in Python, on Trio."""


_CONFIG_ARG = click.argument("config", required=False, type=click.Path(dir_okay=False))


@main.command()
@_CONFIG_ARG
@click.option("--host", default=None, help="Address to listen on [default: 127.0.0.1, or [server] host].")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Port [default: 8787, or [server] port].")
@click.option("--server", "server", default=None, type=click.Choice(["fast", "hypercorn"]),
              help="Front end: dotrio's own HTTP/1.1 (fast) or hypercorn (HTTP/2, TLS) [default: fast].")
@click.option("--max-request-body", default=None, type=click.IntRange(min=0),
              help="Largest request body in bytes; larger is a 413 [default: 32 MiB, or the config's].")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(_LOG_LEVELS, case_sensitive=False))
@click.option("--access-log/--no-access-log", default=None,
              help="One line per request on the dotrio.access logger [default: off, or [server] access_log].")
@click.option("--shutdown-grace", default=None, type=click.FloatRange(min=0),
              help="Seconds in-flight work may take after SIGTERM/SIGINT [default: 10].")
@click.option("--certfile", default=None, type=click.Path(exists=True, dir_okay=False),
              help="TLS certificate (hypercorn).")
@click.option("--keyfile", default=None, type=click.Path(exists=True, dir_okay=False),
              help="TLS private key (hypercorn).")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Where objects' databases live, instead of the config's data_dir (e.g. a container volume).")
def serve(config: str | None, host: str | None, port: int | None, server: str | None,
          max_request_body: int | None, log_level: str, access_log: bool | None,
          shutdown_grace: float | None, certfile: str | None, keyfile: str | None, data_dir: str | None) -> None:
    """Serve CONFIG until SIGTERM/SIGINT.

    CONFIG defaults to the first of ./dotrio.toml, ./wrangler.jsonc,
    ./wrangler.json and ./wrangler.toml.
    """
    if (certfile is None) != (keyfile is None):
        raise click.UsageError("--certfile and --keyfile go together")
    cfg = _load(config)
    if data_dir is not None:
        cfg = dataclasses.replace(cfg, data_dir=None if data_dir == ":memory:" else Path(data_dir).resolve())
    effective_server = server or cfg.server.server or "fast"
    if certfile is not None and effective_server != "hypercorn":
        raise click.UsageError("TLS needs --server hypercorn")
    _setup_logging(log_level)
    if access_log or (access_log is None and cfg.server.access_log):
        # Asked for explicitly: shown even when --log-level hides other INFO lines.
        logging.getLogger("dotrio.access").setLevel(logging.INFO)
    from ._serve import run_server

    options: dict[str, Any] = {
        "host": host, "port": port, "server": server, "max_request_body": max_request_body,
        "access_log": access_log, "shutdown_grace": shutdown_grace, "certfile": certfile, "keyfile": keyfile,
    }
    try:
        code = run_server(cfg, **options)
    except ConfigError as exc:  # e.g. the runtime refused a value the file allowed
        _die(str(exc), EXIT_USAGE)
    except DataDirError as exc:  # in use, read-only, damaged id-secret or alarm index
        _die(str(exc), EXIT_RUNTIME)
    except OSError as exc:
        where = f"{host or cfg.server.host or '127.0.0.1'}:{port if port is not None else cfg.server.port or 8787}"
        _die(f"cannot serve on {where}: {exc.strerror or exc}", EXIT_RUNTIME)
    sys.exit(code)


@main.command()
@_CONFIG_ARG
@click.option("--host", default=None, help="Address to listen on [default: 127.0.0.1, or [server] host].")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Port [default: 8787, or [server] port].")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(_LOG_LEVELS, case_sensitive=False))
def dev(config: str | None, host: str | None, port: int | None, log_level: str) -> None:
    """Serve CONFIG and restart it when its code or config changes.

    Watches the config file's folder (*.py, the config file, .dev.vars). A
    reload drains the running server gracefully (WebSockets are closed with
    1001 and clients reconnect), keeps the data dir, and starts the new code
    on the same address; if the new code or config fails to load, the errors
    are printed and the running version keeps serving.
    """
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        _die("dotrio dev needs the watchfiles package: pip install 'dotrio[dev]'", EXIT_USAGE)
    from ._dev import run_dev

    if config is None:
        found = find_config(".")
        if found is None:
            names = [f"./{n}" for n in CONFIG_NAMES]
            _die(f"no config file given and none found: looked for {', '.join(names[:-1])} and {names[-1]}",
                 EXIT_USAGE)
        config = str(found)
    _setup_logging(log_level)

    def echo(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    try:
        code = run_dev(Path(config), host=host, port=port, echo=echo)
    except DataDirError as exc:  # in use, read-only, damaged id-secret or alarm index
        _die(str(exc), EXIT_RUNTIME)
    except OSError as exc:
        _die(f"cannot serve: {exc.strerror or exc}", EXIT_RUNTIME)
    sys.exit(code)


@main.command()
@_CONFIG_ARG
def check(config: str | None) -> None:
    """Validate CONFIG, import its classes and print a summary."""
    cfg = _load(config)
    out = click.echo
    out(f"config:   {cfg.path}")
    if cfg.name:
        out(f"name:     {cfg.name}")
    if cfg.worker is not None:
        out(f"worker:   {cfg.worker.__module__}.{cfg.worker.__qualname__} (main = {cfg.main!r})")
    else:
        out("worker:   none (default routing /<binding>/<name>/...)")
    out(f"data_dir: {cfg.data_dir if cfg.data_dir is not None else ':memory: (not persisted)'}")
    out(f"max_request_body: {cfg.max_request_body} bytes")
    out("bindings:")
    for b in cfg.bindings:
        renamed = f", stored as {b.namespace!r}" if b.namespace != b.class_name.rpartition(':')[2] else ""
        out(f"  {b.name} -> {b.cls.__module__}.{b.cls.__qualname__}{renamed}")
    if cfg.vars:
        # Names only: values may be secrets (and the others are in the file).
        shown = [f"{k} (secret: {cfg.secrets[k]})" if k in cfg.secrets else k for k in cfg.vars]
        out(f"vars:     {', '.join(shown)}")
    if cfg.runtime:
        out("runtime:  " + ", ".join(f"{k}={v!r}" for k, v in cfg.runtime.items()))
    if cfg.migrations:
        out(f"migrations: {', '.join(m.tag for m in cfg.migrations)}")
    out("ok")


def _find_bench_suite() -> Any:
    """The suite's ``main(argv, prog=...)``: from an installed ``dotrio.bench``
    entry point, else the ``benchmarks`` package if it is importable (the
    current folder is a checkout and Python put it on the path, as
    ``python -m dotrio`` does). Never edits ``sys.path``."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="dotrio.bench"):
        return ep.load()
    try:
        from benchmarks.__main__ import main as bench_main
    except ModuleNotFoundError as exc:
        if exc.name in ("benchmarks", "benchmarks.__main__"):
            return None
        raise  # the suite is there but something it needs is not: say so
    return bench_main


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmark suite (benchmarks/, a source checkout): dotrio bench --help."""
    bench_main = _find_bench_suite()
    if bench_main is None:
        _die(
            "the benchmark suite is not installed with dotrio: it lives in the source checkout "
            "(benchmarks/). From the root of a dotrio checkout run `python -m benchmarks ARGS` "
            "(or `python -m dotrio bench ARGS`), or install a package that provides a "
            "'dotrio.bench' entry point",
            EXIT_USAGE,
        )
    sys.exit(bench_main(list(args), prog="dotrio bench"))


main.add_command(fsck)

if __name__ == "__main__":  # pragma: no cover
    main(prog_name="dotrio")
