"""The web page of ``zoo serve``: server-rendered HTML (Jinja2 templates in ``templates/``, every
value escaped) with a little JavaScript (sorting the results table, copying a command).

- ``/``: a search box with the filters of ``zoo search`` (the same query parameters as
  ``/api/models``), the results table (sortable by top-1, params and GFLOPs);
- ``/models/<id>``: one card: files with checksums and sizes, preprocessing, metrics with their
  sources, licence, provenance, the layer list where the server has the converted graph, and
  copyable ``zoo pull`` / ``zoo finetune`` commands; a fine-tuned model registered from ``zoo
  export`` links its run's report;
- ``/runs/<id>/<file>``: that report (``report.html`` and the figures it shows), read from the run
  folder the card's provenance names; only those file names, only regular files in that folder.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from zoo import api
from zoo.errors import UnknownModelError, ZooError

SOURCES = ("torchvision", "keras", "caffe", "timm", "testdata", "user")
SORTS = ("relevance", "top1", "params", "gflops", "name")
FILTERS = (
    "q",
    "source",
    "framework",
    "origin",
    "task",
    "tag",
    "min_top1",
    "max_params",
    "max_gflops",
    "input_size",
)
REPORT_FILES = (
    "report.html",
    "confusion_matrix.png",
    "curves.png",
    "most_confident_right.png",
    "most_confident_wrong.png",
    "most_uncertain.png",
    "classification_report.txt",
)


@cache
def _env() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("zoo.serve", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
    )
    env.filters["size"] = _size
    env.filters["num"] = _num
    return env


def _size(n: Any) -> str:
    if n is None:
        return "-"
    from zoo.cache import human_size

    return human_size(int(n))


def _num(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, int) or float(v).is_integer() and abs(v) >= 1000:
        n = float(v)
        for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(n) >= div:
                return f"{n / div:.1f}{unit}"
        return str(int(n))
    return f"{float(v):.{digits}f}"


def _render(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    return HTMLResponse(_env().get_template(name).render(**ctx), status_code=status)


def _home(request: Request) -> Path | None:
    return request.app.state.zoo.home


def _run_dir(card: Any) -> Path | None:
    """The run folder of an exported fine-tuning run, if the card names one that has a report."""
    run = (card.provenance or {}).get("run")
    if not run or card.architecture is None or card.architecture.kind != "finetune":
        return None
    d = Path(str(run))
    return d if (d / "report.html").is_file() else None


def _layers(card: Any, home: Path | None) -> list[dict[str, Any]] | None:
    """The layer rows of the converted graph the server has for this card (zoo's converted-model
    cache), without loading torch; None when it has none."""
    from zoo.paths import zoo_home

    root = (Path(home) if home else zoo_home()) / "converted"
    if not root.is_dir():
        return None
    prefix = card.id.replace("/", "--") + "-"
    for d in sorted(root.glob(prefix + "*")):
        g = d / "graph.json"
        if d.name[len(prefix) :].isalnum() and g.is_file():
            try:
                nodes = json.loads(g.read_text(encoding="utf-8"))["nodes"]
            except (OSError, ValueError, KeyError):
                return None
            rows = []
            for i, n in enumerate(nodes):
                shapes = n.get("output_shapes") or [None]
                shape = shapes[0][1:] if shapes[0] else None
                rows.append(
                    {"index": i, "name": n["name"], "type": n.get("type", n.get("op")), "shape": shape}
                )
            return rows
    return None


async def index(request: Request) -> Response:
    from zoo.serve.app import search_args

    params = {k: v for k, v in request.query_params.items() if v != ""}
    form = {k: params.get(k, "") for k in (*FILTERS, "sort")}
    error = None
    rows: list[Any] = []
    total = 0
    try:
        text, kw = search_args(_QueryParams(params))
        results = await run_in_threadpool(lambda: api.search(text, home=_home(request), **kw))
        rows, total = list(results), results.total
    except (ValueError, ZooError) as e:
        error = str(e)
    return _render(
        "index.html",
        form=form,
        rows=rows,
        total=total,
        error=error,
        sources=SOURCES,
        sorts=SORTS,
        searched=bool(params),
    )


class _QueryParams(dict):  # type: ignore[type-arg]
    """A plain dict that search_args reads like Starlette's query parameters."""

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self.items())


async def model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    try:
        card = await run_in_threadpool(api.info, model_id, home=_home(request))
    except UnknownModelError as e:
        return _render("error.html", status=404, message=str(e))
    except ZooError as e:
        return _render("error.html", status=400, message=str(e))
    layers = await run_in_threadpool(_layers, card, _home(request))
    run = _run_dir(card)
    base = str(request.base_url).rstrip("/")
    slug = card.id.split("/")[-1]
    commands = [
        ("pull", f"zoo pull {card.id}"),
        ("pull through this server", f"ZOO_MIRROR={base} zoo pull {card.id}"),
        ("fine-tune", f"zoo finetune {card.id} --data DATA_DIR --out runs/{slug} --cache-features"),
    ]
    return _render(
        "model.html",
        card=card,
        d=card.to_dict(),
        layers=layers,
        report=f"/runs/{card.id}/report.html" if run else None,
        commands=commands,
        provenance=json.dumps(card.provenance, indent=1, ensure_ascii=False, default=str),
    )


async def run_file(request: Request) -> Response:
    model_id, name = request.path_params["model_id"], request.path_params["filename"]
    if name not in REPORT_FILES:
        return _render("error.html", status=404, message=f"no report file {name!r}")
    try:
        card = await run_in_threadpool(api.info, model_id, home=_home(request))
    except ZooError:
        return _render("error.html", status=404, message=f"no model {model_id!r}")
    run = _run_dir(card)
    if run is None:
        return _render("error.html", status=404, message=f"{model_id} has no fine-tuning report here")
    path = run / name
    real = Path(os.path.realpath(path))
    if real.parent != Path(os.path.realpath(run)) or not real.is_file():
        return _render("error.html", status=404, message=f"no report file {name!r}")
    return FileResponse(real)


def routes() -> list[BaseRoute]:
    """The page's routes (zoo.serve.app.create_app puts them before the mirror catch-all)."""
    return [
        Route("/", index, methods=["GET"]),
        Route("/models/{model_id:path}", model, methods=["GET"]),
        Route("/runs/{model_id:path}/{filename}", run_file, methods=["GET"]),
    ]
