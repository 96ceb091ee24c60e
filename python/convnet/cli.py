"""The `convnet` command: train, test, predict, summary, plot, export, experiment.

    convnet train fashion_alexnet --data fashion-mnist --epochs 10 --save-dir runs/fashion
    convnet test runs/fashion --multiview
    convnet predict runs/fashion shirt.png --top-k 5
    convnet summary vgg-D
    convnet convert layers-imagenet-2gpu-model.cfg alexnet.json
    convnet plot runs/fashion
    convnet export runs/fashion fashion.onnx
    convnet experiment --list
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import sys

import numpy as np

from . import _core, zoo
from .model import Model

# A cuda-convnet2 cfg does not say its image size (its data provider does): what summary and
# convert assume unless told (--size), ImageNet's 224 crops; training takes the data set's.
CFG_DEFAULT_SIZE = 224

ZOO = {
    "fashion_alexnet": zoo.fashion_alexnet,
    "alexnet_2012": zoo.alexnet_2012,
    "alexnet_one_tower": zoo.alexnet_one_tower,
    "small_convnet": zoo.small_convnet,
    **{f"vgg-{c}": functools.partial(zoo.vgg, c) for c in "ABCDE"},
}


def resolve_model(name: str, classes: int | None = None, channels: int | None = None,
                  size: int | None = None, init: str | None = None,
                  layer_params: str | None = None) -> str:
    """A model definition as JSON text: a JSON file, a cuda-convnet2 layers-*.cfg (with its
    layer-params file, and `size`, the side of the images its data layer delivers), or a zoo name
    built for the data's classes, channels and image size (and `init`, for the zoo models that
    take one)."""
    if os.path.isfile(name):
        if init is not None:
            raise SystemExit(f"convnet: --init is for zoo models; the model file {name} sets each "
                             "layer's init itself")
        if name.endswith(".cfg"):
            return Model.load(name, size=size, layer_params=layer_params).to_json()
        if layer_params:
            raise SystemExit("convnet: --layer-params goes with a cuda-convnet2 layers-*.cfg")
        with open(name) as f:
            return f.read()
    if name not in ZOO:
        raise SystemExit(f"convnet: '{name}' is neither a model file nor a zoo model "
                         f"(zoo: {', '.join(ZOO)})")
    kw = {k: v for k, v in dict(classes=classes, channels=channels, size=size, init=init).items()
          if v is not None}
    if init is not None and "init" not in inspect.signature(ZOO[name]).parameters:
        raise SystemExit(f"convnet: the zoo model {name} has no --init choice")
    return ZOO[name](**kw).to_json()


def cfg_size(model: str, size: int | None) -> int | None:
    """The image side for a cuda-convnet2 cfg, which does not say it: `size`, else CFG_DEFAULT_SIZE,
    said on the console. Other models: `size` as given."""
    if model.endswith(".cfg") and size is None:
        size = CFG_DEFAULT_SIZE
        print(f"(input {size}x{size}: cuda-convnet2 takes the image size from its data provider; "
              "--size N for another)")
    return size


def checkpoint_path(path: str) -> str:
    """A checkpoint file, or the newest checkpoint of a run folder."""
    if os.path.isdir(path):
        latest = _core.latest_checkpoint(path)
        if not latest:
            raise SystemExit(f"convnet: no checkpoint in {path}")
        return latest
    if not os.path.isfile(path):
        raise SystemExit(f"convnet: {path}: no such checkpoint file or run folder")
    return path


def int_arg(lo: int, hi: int | None = None):
    """An argparse type: an integer in [lo, hi] (hi: the engine's bound on integer options,
    beyond which sizes and counts would overflow), so that argparse names the argument and the
    command stops before any work."""
    hi = _core.OPTION_INT_LIMIT if hi is None else hi

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is outside [{lo}, {hi}]")
        return value

    parse.__name__ = "integer"  # argparse's name for the type in its messages
    return parse


def devices_arg(text: str):
    return text.split(",") if "," in text else text


# ---- train ----
def job_args(a) -> list[tuple[str, str]]:
    """The job's options as given on the command line, (name, value) pairs for _core.JobOptions:
    the ones not given are left to the engine's defaults."""
    pairs = []
    for o in _core.job_options():
        value = getattr(a, o["name"].replace("-", "_"))
        for v in value if isinstance(value, list) else [] if value is None else [value]:
            pairs.append((o["name"], v))
    return pairs


def add_job_options(parser: argparse.ArgumentParser) -> None:
    """The training job's options, as the engine declares them (names, defaults, help): the
    same table convnet-train reads, so the two commands take the same options."""
    for o in _core.job_options():
        default = f" (default {o['default']})" if o["value"] and o["default"] else ""
        kw = dict(dest=o["name"].replace("-", "_"), default=None, help=o["help"] + default)
        if not o["value"]:
            kw.update(action="store_const", const="1")
        elif o["repeatable"]:
            kw.update(action="append", metavar=o["value"])
        elif o["bare"]:
            kw.update(nargs="?", const=o["bare"], metavar=o["value"])
        else:
            kw.update(metavar=o["value"])
        parser.add_argument("--" + o["name"], **kw)


def cmd_train(a) -> int:
    from .data import Pipeline
    from .train import DataPrep, ProgressBar, _run, prepare_job

    options = _core.JobOptions(job_args(a))
    prep = DataPrep._of_options(options.data)
    channels, size, _ = prep.shape
    model = resolve_model(a.model, prep.classes, channels, size, init=a.init, layer_params=a.layer_params)
    job, net = prepare_job(model, prep, options)
    if _core.world_rank() != 0:  # rank 0 speaks for an MPI run and writes its files
        job.run()
        return 0
    if a.overwrite and options.save_dir:
        clear_plots(options.save_dir)
    if job.resumed_from:
        print(f"resumed from {job.resumed_from} at step {net.step}", flush=True)
    print(f"convnet train: {a.model} ({job.description})", flush=True)
    progress = ProgressBar(every=options.print_every, batches=not options.quiet)
    result = _run(job, [progress])
    test = result["test"]
    acc = (f"test accuracy {1 - test['top1_error']:.4f}, top-5 {1 - test['top5_error']:.4f}"
           + (f" ({test['skipped_note']})" if test["skipped_note"] else "") if test else "no test was run")
    print(f"done: {result['epochs_done']} epochs, step {result['step']}, {result['elapsed_s']:.0f} s; {acc}"
          + (f"; checkpoint {result['last_checkpoint']}" if result["last_checkpoint"] else ""), flush=True)
    if options.multiview_test:
        m = job.multiview_test(None)
        print(f"10-view test on {m['examples']} images: cost {m['cost']:.4f}  top-1 error {m['top1_error']:.4f}  "
              f"top-5 error {m['top5_error']:.4f}  (accuracy {1 - m['top1_error']:.4f}"
              + (f"; {m['skipped_note']})" if m["skipped_note"] else ")"), flush=True)
    log = options.log_path
    if options.save_dir and not a.no_plots and log and os.path.exists(log):
        test_pipe = Pipeline._of_core(job.test_pipeline, prep.test_source)
        write_plots(options.save_dir, log, net, test_pipe, prep.info()["class_names"])
    return 0


def clear_plots(run_dir: str) -> None:
    """Removes an earlier run's plots (--overwrite; the engine's job removed its checkpoints and log)."""
    for name in ("curves.png", "filters.png", "predictions.png"):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.remove(path)


def write_plots(out_dir: str, log: str, net, test_pipe, class_names) -> list[str]:
    from . import plots

    os.makedirs(out_dir, exist_ok=True)
    written = [plots.plot_curves(log, os.path.join(out_dir, "curves.png"))]
    first = [l["name"] for l in net.layers() if l["type"] == "conv" and
             any(i in net.inputs for i in l.get("inputs", []))]
    if first:
        weights = [net.get_param(f"{n}.weights") for n in first]
        written.append(plots.plot_filters(weights if len(weights) > 1 else weights[0],
                                          os.path.join(out_dir, "filters.png")))
    if test_pipe is not None:
        test_pipe.start_epoch(0)
        batch = next(test_pipe.epoch())
        images, labels = batch.images()[:16], batch.labels()[:16]
        probs = net.predict(images)
        names = class_names or [str(i) for i in range(probs.shape[1])]
        written.append(plots.plot_predictions(images, labels, probs, names,
                                              os.path.join(out_dir, "predictions.png")))
    print("plots: " + ", ".join(written), flush=True)
    return written


# ---- test ----
def load_run(path: str, device: str):
    from .net import Net
    ckpt = checkpoint_path(path)
    net = Net.from_checkpoint(ckpt, devices=devices_arg(device))
    run = net.checkpoint_state.get("run", {}) if isinstance(net.checkpoint_state, dict) else {}
    return ckpt, net, run


def data_of_run(run: dict, spec: str | None = None):
    """The data a run trained on, read the way it read them (crop, mean, scale), or `spec`."""
    from .train import DataPrep

    if not (spec or run.get("data")):
        raise SystemExit("convnet: the checkpoint does not say which data it was trained on: give --data")
    return DataPrep.of_run(run, spec)


def cmd_test(a) -> int:
    from .train import evaluate, evaluate_multiview

    ckpt, net, run = load_run(a.checkpoint, a.device)
    prep = data_of_run(run, a.data)
    if a.multiview:
        if not prep.crop:
            raise SystemExit("convnet: --multiview needs a model trained on crops (the run's crop is 0)")
        m = evaluate_multiview(net, prep.test_source, crop=prep.crop, stats=prep.stats,
                               mean_value=prep.mean_value, subtract_mean_image=prep.mean == "image",
                               scale=prep.scale, batch=a.batch, progress=True)
    else:
        _, test_pipe = prep.pipelines(a.batch)
        m = evaluate(net, test_pipe)
    view = "10-view" if a.multiview else "single-view"
    print(f"{ckpt} on {prep.description} ({m['examples']:,} test images, {view}): cost {m['cost']:.4f}  "
          f"top-1 error {m['top1_error']:.4f}  top-5 error {m['top5_error']:.4f}  "
          f"(accuracy {1 - m['top1_error']:.4f}" + (f"; {m['skipped_note']})" if m["skipped_note"] else ")"))
    return 0


# ---- predict ----
def read_grey_image(path: str, size: int) -> np.ndarray:
    """An image file as 1 x size x size floats in [0, 255] (grey; shorter side resized, centre
    crop), for nets trained on grey data sets (IDX files)."""
    try:
        from PIL import Image
    except ImportError:
        raise SystemExit("convnet predict needs Pillow to read image files for a grey model: pip install pillow") from None
    try:
        img = Image.open(path).convert("L")
    except Exception as e:  # noqa: BLE001
        # Any: a hostile or broken file makes Pillow raise DecompressionBombError (a header of
        # 65535x65535), OSError (truncated, empty, not an image), SyntaxError (broken chunks),
        # MemoryError and others; each is this file's fault, said as such.
        raise SystemExit(f"convnet: cannot read image {path}: {type(e).__name__}: {e}") from None
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32)[None]


def prediction_inputs(paths: list[str], channels: int, size: int, run: dict) -> np.ndarray:
    """Image files as the run's test pipeline gives its images to the net: decoded at the size the
    run's images had (colour files as folder_source decodes them), centre-cropped to the run's
    crop, minus the run's mean (value, or the training set's mean image), times its scale."""
    from . import data

    crop = run.get("crop", 0)
    # The run's source images' side (older runs: image_size for colour crops, else the net's).
    source_size = run.get("source_size") or (run.get("image_size", size) if crop and channels == 3 else size)
    if channels == 3:
        source = data.image_files_source(list(paths), source_size)
        for i, path in enumerate(paths):  # a pipeline would replace an unreadable file: say so instead
            try:
                source.load(i)
            except data.DataError as e:
                raise SystemExit(f"convnet: cannot read image {path}: {e}") from None
    else:
        x = np.stack([read_grey_image(p, source_size) for p in paths])
        source = data.array_source(x, np.zeros(len(paths), np.int32), 1)
    mean_image = run.get("mean") == "image"
    stats = data_of_run(run).stats if mean_image else None  # the training set's mean image
    pipe = data.Pipeline(source, batch=len(paths), shuffle=False, train=False, workers=1, crop=crop,
                         subtract_mean_image=mean_image, mean_value=run.get("mean_value", 0.0),
                         scale=run.get("scale", 1.0), stats=stats)
    images = next(pipe.epoch()).images()
    if images.shape[1:] != (channels, size, size):
        raise SystemExit(f"convnet: the run's data settings give {images.shape[1:]} inputs, the net takes "
                         f"{(channels, size, size)}")
    return images


def cmd_predict(a) -> int:
    ckpt, net, run = load_run(a.checkpoint, a.device)
    shape = net.output_shape(net.inputs[0])  # (C, H, W, N)
    x = prediction_inputs(a.images, shape[0], shape[1], run)
    names = run.get("class_names") or None
    if not net.classifiers:
        raise SystemExit(f"convnet predict: the net of {ckpt} has no cost layer that classifies")
    classes = net.output_shape(net.classifiers[0])[0]
    top_k = min(5, classes) if a.top_k is None else a.top_k
    if top_k > classes:  # int_arg checked >= 1; the classes are known only now
        raise SystemExit(f"convnet predict: --top-k {top_k} is outside [1, {classes}] (the net has "
                         f"{classes} classes)")
    for path, top in zip(a.images, net.top_k(x, top_k, names)):
        print(path)
        for cls, p in top:
            print(f"  {p:7.2%}  {cls}")
    return 0


# ---- export ----
def cmd_export(a) -> int:
    out = a.out
    ext = os.path.splitext(out)[1].lower()
    if ext not in (".onnx", ".safetensors"):
        raise SystemExit(f"convnet: cannot export to {out}: the file name must end with .onnx (an ONNX "
                         "model) or .safetensors (torchvision-style weights)")
    ckpt, net, _ = load_run(a.checkpoint, "cpu")
    if ext == ".onnx":
        from . import onnx_export
        try:
            onnx_export.export(net, out)
        except ImportError as e:
            raise SystemExit(f"convnet: {e}") from None
        print(f"{ckpt} -> {out} (ONNX, opset {onnx_export.OPSET})")
        return 0
    import importlib
    module = f"{__package__}.torchvision_weights"
    try:  # imported only here: the ONNX export does not need it
        torchvision_weights = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            raise SystemExit(f"convnet: exporting .safetensors needs the module {module}, which this "
                             "installation lacks") from None
        raise SystemExit(f"convnet: exporting .safetensors: {module} cannot be imported: {e}") from None
    torchvision_weights.export_state_dict(net, out)
    print(f"{ckpt} -> {out} (safetensors)")
    return 0


# ---- summary ----
def cmd_summary(a) -> int:
    from .summary import format_summary, summary

    size = cfg_size(a.model, a.size)
    model = resolve_model(a.model, a.classes, a.channels, size, layer_params=a.layer_params)
    print(format_summary(summary(model, batch=a.batch)))
    return 0


# ---- convert ----
def cmd_convert(a) -> int:
    """A model between convnet's JSON and cuda-convnet2's layers/layer-params cfg pair."""
    model = resolve_model(a.source, size=cfg_size(a.source, a.size), layer_params=a.layer_params)
    if a.target.endswith(".cfg"):
        params = a.target_params or _core.cuda_convnet_params_path(a.target)
        if not params:
            raise SystemExit(f"convnet convert: name the layer-params file of {a.target} with --target-params "
                             "(or name the target layers-X.cfg, whose params file is layer-params-X.cfg)")
        layers_text, params_text = _core.write_cuda_convnet_cfg(model)
        _write_text(a.target, layers_text)
        _write_text(params, params_text)
        print(f"wrote {a.target} and {params}")
    elif a.target.endswith(".json"):
        _write_text(a.target, Model.from_json(model).to_json() + "\n")
        print(f"wrote {a.target}")
    else:
        raise SystemExit(f"convnet convert: {a.target}: the target is a .json model or a cuda-convnet2 layers-*.cfg")
    return 0


def _write_text(path: str, text: str) -> None:
    """Whole or not at all: a temporary file renamed over the target."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---- plot ----
def layer_types_markdown() -> str:
    """Every layer type with its inputs and options, as docs/MODEL_FILES.md's reference section
    (tests/python/test_model_files.py checks that the page holds exactly this)."""
    out = []
    for name, decl in _core.layer_types().items():
        out.append(f"### `{name}`\n\n{decl['help']}. Role: {decl['role']}"
                   f"{' (classifies)' if decl['classifies'] else ''}; inputs: {_inputs_text(decl)}.\n")
        if decl["options"]:
            out.append("| option | kind | default | meaning |\n|---|---|---|---|")
            for o in decl["options"]:
                given = {"required": "required", "optional": "optional"}.get(o["presence"], f"`{json.dumps(o['default'])}`")
                out.append(f"| `{o['name']}` | {o['kind']} | {given} | {o['help'].replace('|', '/')} |")
            out.append("")
    return "\n".join(out)


def _inputs_text(decl: dict) -> str:
    return (", ".join(decl["input_names"]) if decl["input_names"] else
            "none" if decl["max_inputs"] == 0 else
            f"{decl['min_inputs']} or more" if decl["max_inputs"] < 0 else
            f"{decl['min_inputs']}" if decl["min_inputs"] == decl["max_inputs"] else
            f"{decl['min_inputs']} to {decl['max_inputs']}")


def cmd_layers(a) -> int:
    types = _core.layer_types()
    if a.type and a.type not in types:
        raise ValueError(f"no layer type '{a.type}' (known: {', '.join(types)})")
    if a.markdown:
        print(layer_types_markdown())
        return 0
    for name, decl in types.items():
        if a.type and name != a.type:
            continue
        inputs = _inputs_text(decl)
        print(f"{name} ({decl['role']}{', classifies' if decl['classifies'] else ''}): {decl['help']}")
        print(f"  inputs: {inputs}")
        for o in decl["options"]:
            given = {"required": "required", "optional": "optional"}.get(o["presence"], f"default {json.dumps(o['default'])}")
            print(f"  {o['name']:<11} {o['kind']:<7} {given:<20} {o['help']}")
        print()
    return 0


def cmd_plot(a) -> int:
    from . import plots

    log = a.run
    run_dir = a.run if os.path.isdir(a.run) else os.path.dirname(a.run)
    if os.path.isdir(a.run):
        log = os.path.join(a.run, "log.jsonl")
    out = a.out or run_dir or "."
    written = [plots.plot_curves(log, os.path.join(out, "curves.png"))]
    ckpt = a.checkpoint or (run_dir and _core.latest_checkpoint(run_dir))
    if ckpt:
        _, net, run = load_run(ckpt, "cpu")
        test_pipe = data_of_run(run).pipelines(32)[1] if run.get("data") else None
        written = write_plots(out, log, net, test_pipe, run.get("class_names"))
    else:
        print("plots: " + ", ".join(written))
    return 0


# ---- experiment ----
def cmd_experiment(a) -> int:
    from . import experiments

    if a.list:
        if a.name:
            raise SystemExit("convnet experiment: give a NAME or --list, not both")
        width = max(len(n) for n in experiments.EXPERIMENTS)
        for name, exp in experiments.EXPERIMENTS.items():
            print(f"{name:<{width}}  {exp.question}")
        return 0
    if not a.name:
        raise SystemExit(f"convnet experiment: name an experiment ({experiments.describe_known()}) or give --list")
    if a.name not in experiments.EXPERIMENTS:
        raise SystemExit(f"convnet experiment: unknown experiment '{a.name}'; known experiments: "
                         f"{experiments.describe_known()}")
    out = a.out or os.path.join("experiments", a.name)
    experiments.run_experiment(a.name, out, seeds=a.seeds, epochs=a.epochs, train_subset=a.train_subset,
                               test_subset=a.test_subset, data=a.data, restart=a.restart)
    return 0


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: argparse would take a misspelt --epoch for --epochs (a prefix); an
    # option must be spelt out, as convnet-train's are.
    p = argparse.ArgumentParser(prog="convnet", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_help = next(o["help"] for o in _core.job_options() if o["name"] == "data")

    t = sub.add_parser("train", allow_abbrev=False, help="train a model on a data set",
                       description="Train a model (a JSON model file, a cuda-convnet2 layers-*.cfg or a zoo "
                                   "name) with momentum SGD "
                                   "(or --solver nesterov, adamw).")
    t.add_argument("model", help=f"a model definition (JSON file or cuda-convnet2 layers-*.cfg) or a zoo model: {', '.join(ZOO)}")
    t.add_argument("--layer-params", help="a layers-*.cfg's layer-params file (default: layer-params-X.cfg beside it)")
    add_job_options(t)
    t.add_argument("--init", choices=["gaussian", "kaiming", "xavier"],
                   help="weight init of a zoo model that offers the choice (alexnet_2012, alexnet_one_tower, "
                        "fashion_alexnet, vgg-*; default: the model's own)")
    t.add_argument("--no-plots", action="store_true", help="do not write curves/filters/predictions PNGs into --save-dir")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("test", allow_abbrev=False, help="evaluate a checkpoint on its test set",
                       description="Cost, top-1 and top-5 error of a checkpoint on the test set it was trained with.")
    e.add_argument("checkpoint", help="a checkpoint file, or a run folder (its newest checkpoint)")
    e.add_argument("--data", help="another data set (default: the one the run used)")
    e.add_argument("--multiview", action="store_true", help="AlexNet's 10-view test (corners, centre, reflections)")
    e.add_argument("--batch", type=int_arg(1), default=130, help="batch size (default 130)")
    e.add_argument("--device", default="cpu", help="cpu or cuda:K (default cpu)")
    e.set_defaults(func=cmd_test)

    r = sub.add_parser("predict", allow_abbrev=False, help="top-k classes of image files",
                       description="Classify image files with a checkpoint; prints the top-k classes with probabilities.")
    r.add_argument("checkpoint", help="a checkpoint file, or a run folder (its newest checkpoint)")
    r.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...), resized and centre-cropped to the net's input")
    r.add_argument("--top-k", type=int_arg(1), help="classes to show, 1 to the net's classes (default 5, or all "
                                                     "of fewer)")
    r.add_argument("--device", default="cpu", help="cpu or cuda:K (default cpu)")
    r.set_defaults(func=cmd_predict)

    s = sub.add_parser("summary", allow_abbrev=False, help="layers, shapes, parameters, multiply-adds, receptive fields",
                       description="Per layer: output shape, parameters, multiply-adds per image, receptive "
                                   "field and its jump; and the totals.")
    s.add_argument("model", help=f"a model definition (JSON file or cuda-convnet2 layers-*.cfg) or a zoo model: {', '.join(ZOO)}")
    s.add_argument("--classes", type=int_arg(1), help="classes (zoo models; default: the model's own)")
    s.add_argument("--channels", type=int_arg(1), help="input channels (zoo models)")
    s.add_argument("--size", type=int_arg(1), help=f"input size (zoo models; a cfg's data layer, default {CFG_DEFAULT_SIZE})")
    s.add_argument("--batch", type=int_arg(1), default=1, help="batch size for the activation memory figure (default 1)")
    s.add_argument("--layer-params", help="a layers-*.cfg's layer-params file (default: layer-params-X.cfg beside it)")
    s.set_defaults(func=cmd_summary)

    c = sub.add_parser("convert", allow_abbrev=False, help="a model between convnet's JSON and cuda-convnet2's cfg files",
                       description="Converts a model file: JSON (or a zoo model) to cuda-convnet2's layers-*.cfg and "
                                   "layer-params-*.cfg, or a layers-*.cfg (with its layer-params file) to JSON. "
                                   "docs/MODEL_FILES.md maps the keys.")
    c.add_argument("source", help=f"a .json model, a cuda-convnet2 layers-*.cfg, or a zoo model: {', '.join(ZOO)}")
    c.add_argument("target", help="a .json model, or a layers-*.cfg (its params go to layer-params-*.cfg beside it)")
    c.add_argument("--layer-params", help="the source layers-*.cfg's layer-params file (default: the one beside it)")
    c.add_argument("--target-params", help="where the target's layer-params go (default: layer-params-X.cfg beside it)")
    c.add_argument("--size", type=int_arg(1),
                   help=f"the image side a cfg's data layer delivers (cuda-convnet2 takes it from its data provider; default {CFG_DEFAULT_SIZE})")
    c.set_defaults(func=cmd_convert)

    y = sub.add_parser("layers", allow_abbrev=False, help="the layer types, their inputs and options with defaults",
                       description="Every layer type the engine registers, as its declaration gives it: role, "
                                   "inputs, and each option's type, default and meaning.")
    y.add_argument("type", nargs="?", help="one layer type (default: all)")
    y.add_argument("--markdown", action="store_true", help="all types as docs/MODEL_FILES.md's reference section")
    y.set_defaults(func=cmd_layers)

    g = sub.add_parser("plot", allow_abbrev=False, help="PNG plots of a run: curves, first-layer filters, predictions",
                       description="Writes curves.png (cost, error, learning rate against epochs), and with a "
                                   "checkpoint filters.png and predictions.png.")
    g.add_argument("run", help="a run folder (with log.jsonl and checkpoints) or a log file")
    g.add_argument("--checkpoint", help="checkpoint for the filters and predictions (default: the run's newest)")
    g.add_argument("--out", help="output folder (default: the run folder)")
    g.set_defaults(func=cmd_plot)

    x = sub.add_parser("export", allow_abbrev=False, help="a checkpoint as an ONNX model or safetensors weights",
                       description="Writes a checkpoint's net as an ONNX model (OUT ending in .onnx: opset 17, "
                                   "NCHW float32 input named after the input layer, class probabilities out; "
                                   "see docs/ONNX.md) or as torchvision-style weights (.safetensors).")
    x.add_argument("checkpoint", help="a checkpoint file, or a run folder (its newest checkpoint)")
    x.add_argument("out", help="output file: NAME.onnx or NAME.safetensors")
    x.set_defaults(func=cmd_export)

    xp = sub.add_parser("experiment", allow_abbrev=False, help="a small controlled comparison of a paper's design choice",
                        description="Trains each arm of an experiment (model variants differing in one choice) "
                                    "over several seeds on a subset of the data; writes results.jsonl (one record "
                                    "per run, as it ends: an interrupted experiment resumes), table.md (mean ± std "
                                    "per arm, with the paper's claim) and plot.png. See docs/EXPERIMENTS.md.")
    xp.add_argument("name", nargs="?", help="the experiment (--list shows them)")
    xp.add_argument("--list", action="store_true", help="the experiments and their questions")
    xp.add_argument("--out", help="output folder (default experiments/NAME)")
    xp.add_argument("--seeds", type=int_arg(1), help="seeds per arm (default: the experiment's; more seeds add runs)")
    xp.add_argument("--epochs", type=int_arg(1), help="epochs per run (default: the experiment's)")
    xp.add_argument("--train-subset", type=int_arg(1), help="training images, a fixed subset (default: the experiment's)")
    xp.add_argument("--test-subset", type=int_arg(1), help="test images evaluated each epoch (default: the experiment's)")
    xp.add_argument("--data", help=f"data set (default fashion-mnist). {data_help}")
    xp.add_argument("--restart", action="store_true", help="discard the folder's results (of another setup) and start afresh")
    xp.set_defaults(func=cmd_experiment)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _core.DivergenceError as e:
        # Every rank of an MPI run decides a divergence together: rank 0 says where, all end.
        if _core.world_rank() == 0:
            print(f"convnet {args.command}: error: {e}", file=sys.stderr, flush=True)
        return 3
    except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError, _core.DataError) as e:
        where = f" (rank {_core.world_rank()} of {_core.world_size()})" if _core.world_size() > 1 else ""
        print(f"convnet {args.command}{where}: error: {e}", file=sys.stderr, flush=True)
        if _core.world_size() > 1:  # end every rank now: the others would wait for this one
            _core.abort_world(2)
        return 2
    except KeyboardInterrupt:
        print(f"convnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
