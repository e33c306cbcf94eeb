"""``zoo export RUN_DIR``: a fine-tuning run's best model as a zoo model folder (docs/model-folder.md)
that ``zoo.load`` rebuilds, ``zoo register`` puts in the user's catalogue and ``zoo finetune``
starts from again.

The folder's card has ``architecture`` ``{"kind": "finetune", "name": <parent id>, "kwargs": {cut,
head, base_output_shape, input_size, classes count, the parent's architecture}}``. model.safetensors
holds ``parent.<name>`` (the whole parent network, fine-tuned where it trained; its layers after the
cut are kept but never run) and ``head.<name>``; graph.json is the parent's graph (converted
Caffe / Keras parents; torchvision / timm parents are built from their architecture). With ``--to
onnx|all`` model.onnx is exported and checked against torch (verify.json, the one verify schema),
and the folder is always reloaded and compared with the run's network.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

PREFIX_PARENT = "parent."
PREFIX_HEAD = "head."


def _effective_parent(net: Any, parent: Any) -> tuple[Any, dict[str, Any] | None, str | None, str | None]:
    """(the network the run's base is a cut of, its architecture, feature layer and classifier).
    A run on an exported fine-tuned model cut inside its base is a cut of that model's own parent
    (its base layers are the parent's): the export names that one, so exports never nest."""
    from zoo.finetune.model import FineTuneModel

    full = net._parent()
    arch = parent.architecture.to_dict() if parent.architecture is not None else None
    cut, classifier = parent.default_cut, parent.classifier
    if isinstance(full, FineTuneModel):
        if net.cut_layer in [n for n, _ in full._head_rows()]:
            raise ZooError(
                f"the run cuts its parent inside the parent's head ({net.cut_layer}): not exportable"
            )
        kw = parent.architecture.kwargs if parent.architecture is not None else {}
        full = full._parent()
        arch = kw.get("parent_architecture")
        cut, classifier = kw.get("parent_default_cut"), kw.get("parent_classifier")
    return full, arch, cut, classifier


def export(run_dir: Any, out: Any, *, to: str = "all", force: bool = False, home: Any = None) -> Path:
    """Write the run's best model into the folder ``out``; returns it. ``to``: torch (the folder),
    onnx or all (the folder + model.onnx)."""
    import torch

    from converters.folder import graph_of, write_folder
    from converters.layermap import LayerMap, LayerMapRow
    from zoo.arch import Architecture
    from zoo.cards import Checksum, FileRef, Metric, ModelCard
    from zoo.fileio import sha256_file
    from zoo.finetune.run import load_run, run_card

    if to not in ("torch", "onnx", "all"):
        raise ZooError(f"--to {to!r}: torch, onnx or all")
    run = Path(str(run_dir))
    net, config = load_run(run, home=home)
    parent = ModelCard.from_dict(config["card"])
    metrics_path = run / "metrics.json"
    final = json.loads(metrics_path.read_text())["final"] if metrics_path.is_file() else {}
    full, parent_arch, parent_cut, parent_classifier = _effective_parent(net, parent)
    graph = graph_of(full)  # the parent's graph.json for converted parents, else None
    state = {PREFIX_PARENT + k: v for k, v in full.state_dict().items()}
    state.update({PREFIX_HEAD + k: v for k, v in net.head.state_dict().items()})
    state_np = {k: v.detach().cpu().numpy() for k, v in state.items()}
    classes = list(config["classes"])
    arch = Architecture(
        "finetune",
        parent.id,
        {
            "cut": config["cut"],
            "head": config["head"],
            "base_output_shape": list(config["base_output_shape"]),
            "input_size": list(config["input_size"]),
            "num_classes": len(classes),
            "parent_architecture": parent_arch,
            "parent_default_cut": parent_cut,
            "parent_classifier": parent_classifier,
        },
    )
    weights = run / "model.safetensors"
    acc = final.get("accuracy")
    data_name = Path(config["data"]["source"]).name
    means = _mean_files(parent, home)
    card = dataclasses.replace(
        run_card(config),
        id=f"user/{parent.id.split('/')[-1]}-finetuned",
        name=f"{parent.name} fine-tuned on {data_name}",
        source="user",
        framework="pytorch",
        format="safetensors",
        origin="native",
        architecture=arch,
        dataset=data_name,
        params=int(sum(p.numel() for p in net.parameters())),
        gflops=None,
        metrics=(
            Metric("accuracy", float(acc), data_name, f"zoo finetune, held-out {final.get('n')} images"),
        )
        if acc is not None
        else (),
        files=(
            FileRef(
                name=weights.name,
                urls=(weights.resolve().as_uri(),),
                size=weights.stat().st_size,
                role="weights",
                checksum=Checksum("sha256", sha256_file(weights), "the run's best weights"),
            ),
            *(ref for ref, _ in means),
        ),
        provenance={
            "publisher": "fine-tuned locally by zoo",
            "parent": parent.id,
            "run": str(run.resolve()),
            "training": config["options"],
            "data": {"source": config["data"]["source"], "classes": classes},
            "exported_by": "zoo.export.export",
        },
        notes=f"zoo finetune of {parent.id} cut at {config['cut']}; head {config['head']}",
    )
    lmap = LayerMap(
        [LayerMapRow(k, 0, k, (), tuple(v.shape), tuple(v.shape)) for k, v in state_np.items()],
        source_format="pytorch",
    )
    size = tuple(config["input_size"])

    def add_onnx(tmp: Path) -> None:
        import shutil

        for ref, path in means:  # the parent's mean image: the preprocessing needs it
            shutil.copyfile(path, tmp / ref.name)
        if to in ("onnx", "all"):
            from converters.torch_onnx import export_onnx, verify_onnx

            export_onnx(net, tmp / "model.onnx", size)
            x = torch.randn(3, *size, generator=torch.Generator().manual_seed(0))
            res = verify_onnx(net, tmp / "model.onnx", x.numpy())  # raises when they differ
            (tmp / "verify.json").write_text(json.dumps(res, indent=1, default=float))

    folder = write_folder(out, card, graph, state_np, lmap, extra=add_onnx, force=force)
    # the folder rebuilds the run's network exactly
    from converters.folder import load_folder
    from converters.verify import compare

    again = load_folder(folder)
    x = torch.randn(2, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        c = compare(net.eval()(x).numpy(), again(x).numpy())
    if c["max_abs_diff"] > 0:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        raise ZooError(
            f"{folder}: the export does not rebuild the run's model (max |diff| {c['max_abs_diff']:.3g})"
        )
    return folder


def _mean_files(parent: Any, home: Any) -> list[tuple[Any, Path]]:
    """(FileRef, local path) of the parent card's mean image files, pulled (verified)."""
    from zoo import api

    out = []
    for f in parent.files:
        if f.role == "mean":
            (path,) = api.pull(parent.id, file=f.name, home=home)
            out.append((f, Path(path)))
    return out


def load_exported(folder: Path, card: Any, graph: dict[str, Any] | None) -> Any:
    """The FineTuneModel of an exported folder (``architecture.kind == "finetune"``)."""
    from safetensors.torch import load_file

    from zoo.cards import ModelCard
    from zoo.finetune.config import HeadSpec
    from zoo.finetune.model import FineTuneModel, Head

    a = card.architecture.kwargs
    state = load_file(str(folder / "model.safetensors"))
    parent_state = {k[len(PREFIX_PARENT) :]: v for k, v in state.items() if k.startswith(PREFIX_PARENT)}
    head_state = {k[len(PREFIX_HEAD) :]: v for k, v in state.items() if k.startswith(PREFIX_HEAD)}
    if graph is not None:
        from converters.graph_torch import build_module

        full = build_module(graph, parent_state)
        if a.get("parent_default_cut"):
            full.default_cut = a["parent_default_cut"]
        if a.get("parent_classifier"):
            full.classifier = a["parent_classifier"]
    else:
        from zoo.arch import parse
        from zoo.models import build_library

        if not a.get("parent_architecture"):
            raise ZooError(f"{folder}: the card names neither a graph nor the parent's architecture")
        stub = ModelCard(
            id=card.architecture.name,
            name=card.architecture.name,
            source="user",
            framework="pytorch",
            format="safetensors",
            architecture=parse(a["parent_architecture"]),
            preprocess=card.preprocess,
            default_cut=a.get("parent_default_cut"),
            classifier=a.get("parent_classifier"),
        )
        full = build_library(stub, parent_state, where=str(folder))
    spec = HeadSpec(**{**a["head"], "hidden": tuple(a["head"]["hidden"])})
    base = full.cut(a["cut"])
    head = Head(spec, tuple(a["base_output_shape"]), int(a["num_classes"]))
    head.load_state_dict(head_state)
    net = FineTuneModel(base, head).attach(full, a["cut"])
    net.input_size = tuple(a["input_size"])
    return net.eval()
