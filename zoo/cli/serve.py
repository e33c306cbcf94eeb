"""`zoo serve`: the registry as an HTTP service and a caching mirror of $ZOO_HOME."""

from __future__ import annotations

import click

from zoo.cli._app import cli


def _bind(host: str, port: int) -> tuple[object, str]:
    """A listening socket on host:port (port 0: a free one) and the URL it answers on."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    sock.listen(1024)
    sock.set_inheritable(True)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return sock, f"http://{shown}:{bound}"


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--port", type=int, default=8000, show_default=True, help="0 picks a free port.")
@click.option(
    "--upstream/--no-upstream",
    default=True,
    show_default=True,
    help="Pull files that are not cached (through $ZOO_MIRROR, then their URLs), or answer 404.",
)
@click.option("--max-concurrency", type=int, default=64, show_default=True, help="Requests handled at once.")
@click.option(
    "--max-connections", type=int, default=256, show_default=True, help="Open connections; more get 503."
)
@click.option("--quiet", is_flag=True, help="No access log on stderr.")
def serve(
    host: str, port: int, upstream: bool, max_concurrency: int, max_connections: int, quiet: bool
) -> None:
    """Serve the registry (search API) and this machine's cache as a mirror for `zoo pull`.

    The first line on stdout is the URL; other machines set ZOO_MIRROR to it. Routes and
    options: docs/serve.md.
    """
    import logging
    import sys

    from zoo.errors import require

    require("serve", what="zoo serve")
    from zoo.paths import zoo_home
    from zoo.serve.app import build_server, create_app

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    for name in ("zoo.serve", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    if quiet:
        logging.getLogger("zoo.serve.access").setLevel(logging.WARNING)
    home = zoo_home()
    app = create_app(home, upstream=upstream, max_concurrency=max_concurrency)
    sock, url = _bind(host, port)
    click.echo(url)
    sys.stdout.flush()
    click.echo(
        f"zoo serve: {url} serving {home} ({'pulling misses upstream' if upstream else 'cache only'})",
        err=True,
    )
    server = build_server(app, max_connections=max_connections)
    server.run(sockets=[sock])
