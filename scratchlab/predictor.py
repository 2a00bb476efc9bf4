"""Prediction: one path from a trained or exported model to a good/bad decision per image.

``Predictor.from_checkpoint(ckpt)`` rebuilds the task of a scratchlab checkpoint (any kind);
``Predictor.from_exported(file)`` loads an ONNX or TorchScript file written by ``scratchlab.export``.
Every image then takes the same steps, owned by the model's task class (``scratchlab.tasks``):

1. it becomes an RGB uint8 array by ``scratchlab.data.io.read_image``'s rules (gray replicated, alpha
   dropped, 16-bit >> 8; arrays given in memory are taken as RGB, not OpenCV's BGR);
2. the model's ``Preprocess`` geometry and normalization (the checkpoint path runs ``build_transform(pre)``
   as evaluation does; the exported path runs ``pre.geometry()`` and the graph normalizes);
3. the network's raw outputs per image (class probabilities, or a scratch-probability map);
4. ``task_class.judge``: the map is brought back to the original image size and judged by
   ``scratchlab.postprocess``, so areas are original-image pixels everywhere.

``Prediction.score`` is P(bad) for classifiers; for models that localize scratches it is the maximum
scratch probability over the image at its original size, or the mean of its ``decision.score_top_k`` most
probable pixels (two_stage: 0 when the classifier gate passes the image). Decision thresholds: ``scratchlab.postprocess.resolve_decision`` (run config < operating point
stored with the model < ``decision_overrides``); exported files carry the resolved rule of export time.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np

from scratchlab.checkpoints import ModelSpec
from scratchlab.data.io import _to_uint8, decode_pool, read_image
from scratchlab.data.transforms import Preprocess
from scratchlab.errors import ConfigError, DataError
from scratchlab.postprocess import Component, DecisionParams, MaskDecision, Verdict, resolve_decision

METADATA_KEY = "scratchlab"
"""ONNX ``metadata_props`` key / TorchScript extra file stem holding the model's JSON metadata."""
TORCHSCRIPT_EXTRA = "scratchlab.json"
EXPORT_FORMAT = 2
"""Exported graphs take uint8 RGB images at network geometry (``BaseTask.export_inputs``: one input for
most tasks, a second one at the classifier's geometry for two_stage) and return the task's raw outputs
(``BaseTask.export_outputs``)."""


# ----------------------------------------------------------------------------------------------------------
# Per-image result


@dataclass
class Prediction:
    """The outcome for one image.

    ``decision`` is ``"bad"`` or ``"good"``; ``score`` is P(bad) (classifiers) or the maximum scratch
    probability (segmentation kinds; ``score_name`` says which score); ``mask`` is the (H, W) uint8 0/255 scratch mask at the original
    image size after speck removal (None for classifiers); ``components`` the kept scratch regions;
    ``thresholds`` the decision values used. A file that could not be read gives a Prediction with
    ``error`` set and nothing else (``predict_paths(..., skip_errors=True)``).
    """

    decision: str | None
    score: float | None
    mask: np.ndarray | None = field(default=None, repr=False)
    components: list[Component] = field(default_factory=list, repr=False)
    thresholds: dict[str, Any] = field(default_factory=dict)
    kind: str = "classification"
    image_size: tuple[int, int] | None = None
    path: str | None = None
    score_name: str = "p_bad"
    probability: np.ndarray | None = field(default=None, repr=False)
    """Segmentation kinds: the (H, W) float32 scratch probabilities at the original size."""
    details: MaskDecision | None = field(default=None, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)
    """Kind-specific values: ``class_probs`` (classifiers), ``gate_score``/``gated`` (two_stage)."""
    error: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    """The RGB uint8 image as judged, when asked for (``predict_paths(..., keep_images=True)``)."""

    @classmethod
    def failed(cls, path: str | None, message: str) -> Prediction:
        return cls(decision=None, score=None, path=path, error=message)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def is_bad(self) -> bool:
        return self.decision == "bad"

    def to_json(self, contours: bool = False) -> dict[str, Any]:
        """Plain-type dict: path, decision, score, image size, thresholds, scratch area and every component's
        box ``[x1, y1, x2, y2]`` (x2/y2 exclusive), area, length, area ratio and score (outline with ``contours``)."""
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        out: dict[str, Any] = {"path": self.path, "kind": self.kind, "decision": self.decision,
                               "score": self.score, "score_name": self.score_name,
                               "image_size": list(self.image_size) if self.image_size else None,
                               "thresholds": self.thresholds}
        if self.details is not None:
            d = self.details.to_json()
            out.update(scratch_area=d["scratch_area"], scratch_area_ratio=d["scratch_area_ratio"])
            comps = d["components"]
        else:
            comps = []
        out["components"] = [c if contours else {k: v for k, v in c.items() if k != "contour"} for c in comps]
        out.update(self.extra)
        return out


# ----------------------------------------------------------------------------------------------------------
# Shared helpers


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An image array of any common form as (H, W, 3) uint8 RGB, by ``read_image``'s rules: gray
    replicated, alpha dropped, wider integers >> 8, floats in [0, 1] scaled."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.size == 0 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (2, 3, 4)):
        raise DataError(f"image must be (H, W) gray or (H, W, 3|4) RGB(A), got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    arr = _to_uint8(arr)
    if arr.ndim == 3 and arr.shape[2] >= 3:
        return np.ascontiguousarray(arr[:, :, :3])
    gray = arr if arr.ndim == 2 else arr[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_GRAY2RGB)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scratchlab")
    except PackageNotFoundError:
        return "unknown"


def _try_read(path: str | Path) -> np.ndarray | DataError:
    try:
        return read_image(path)
    except DataError as err:
        return err


# ----------------------------------------------------------------------------------------------------------
# Predictor


class Predictor:
    """Model -> good/bad decision per image; build it with ``from_checkpoint`` or ``from_exported``.

    ``predictor(image_or_path)`` judges one image; ``predict_batch(images)`` several arrays;
    ``predict_paths(paths, batch_size)`` yields one Prediction per file, in order. Images whose network
    inputs have the same shape are batched together, so a result never depends on the other images.
    ``run`` turns RGB images into the task's raw outputs; ``spec.task``'s class judges them.
    """

    def __init__(self, spec: ModelSpec, run: Callable[[list[np.ndarray]], list[dict[str, np.ndarray]]],
                 source: str = "", task: Any = None) -> None:
        from scratchlab.tasks import task_class

        self.spec, self.run, self.source = spec, run, source
        self.task_class = task_class(spec.task)
        self.task = task
        """The LightningModule when built from a checkpoint (else None)."""

    @property
    def kind(self) -> str:
        return self.spec.task

    @property
    def preprocess(self) -> Preprocess:
        return self.spec.preprocess

    @property
    def decision(self) -> DecisionParams:
        return self.spec.decision

    @property
    def class_names(self) -> list[str]:
        return list(self.spec.class_names)

    # -- construction ---------------------------------------------------------------------------------------

    @classmethod
    def from_task(cls, task: Any, decision: DecisionParams | None = None, source: str = "",
                  device: str = "cpu") -> Predictor:
        """A LightningModule of ``scratchlab.tasks`` (optionally judged under another ``decision``)."""
        task = task.to(device).eval()
        spec = task.spec if decision is None else task.spec.with_decision(decision)
        return cls(spec, task.predict_raw, source=source, task=task)

    @classmethod
    def from_checkpoint(cls, path: str | Path, decision_overrides: Mapping[str, Any] | None = None,
                        device: str = "cpu", use_operating_point: bool = True) -> Predictor:
        """Rebuild a scratchlab checkpoint's task with its stored preprocessing and decision rule."""
        from scratchlab.builders import load_task
        from scratchlab.checkpoints import read_checkpoint

        ckpt = read_checkpoint(path)
        decision = ckpt.decision(decision_overrides, use_operating_point)
        return cls.from_task(load_task(ckpt), decision, source=str(path), device=device)

    @classmethod
    def from_two_stage(cls, classifier_ckpt: str | Path, segmenter_ckpt: str | Path,
                       gate_threshold: float | None = None, decision_overrides: Mapping[str, Any] | None = None,
                       device: str = "cpu") -> Predictor:
        """A classifier checkpoint gating a segmenter checkpoint (as ``model=two_stage``, which trains nothing
        and so leaves no checkpoint of its own): the segmenter's rule (run config < operating point <
        ``decision_overrides``) and preprocessing; ``gate_threshold`` defaults to the classifier's threshold."""
        from scratchlab.builders import load_task
        from scratchlab.checkpoints import read_checkpoint
        from scratchlab.tasks.two_stage import TwoStageTask

        seg = read_checkpoint(segmenter_ckpt)
        task = TwoStageTask.assemble(load_task(classifier_ckpt), load_task(seg), seg.decision(decision_overrides),
                                  gate_threshold)
        return cls.from_task(task, source=f"{classifier_ckpt} + {segmenter_ckpt}", device=device)

    @classmethod
    def from_exported(cls, path: str | Path, decision_overrides: Mapping[str, Any] | None = None,
                      providers: Sequence[str] | None = None) -> Predictor:
        """Load a file written by ``scratchlab.export``: ``.onnx`` runs on onnxruntime, anything else is
        taken as TorchScript. Preprocessing, decision rule, task and class names come from its metadata."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"exported model {path} does not exist; pass an .onnx or TorchScript .pt file "
                              "written by scratchlab.export")
        graph, meta = _load_onnx(path, providers) if path.suffix.lower() == ".onnx" else _load_torchscript(path)
        spec = ModelSpec.from_dict(meta["spec"])
        spec = spec.with_decision(resolve_decision(asdict(spec.decision), None, decision_overrides))
        from scratchlab.tasks import task_class

        task = task_class(spec.task)
        geometries = {name: A.Compose(steps) for name, (_, steps) in task.export_inputs(spec).items()}

        def run(images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
            feeds = [{name: np.ascontiguousarray(g(image=im)["image"]) for name, g in geometries.items()}
                     for im in images]
            out: list[dict[str, np.ndarray]] = [{} for _ in feeds]
            groups: dict[Any, list[int]] = {}
            for i, feed in enumerate(feeds):
                key = i if task.one_image_per_forward else tuple(x.shape for x in feed.values())
                groups.setdefault(key, []).append(i)
            for idx in groups.values():
                arrays = graph({name: np.stack([feeds[i][name] for i in idx]) for name in geometries})
                for j, i in enumerate(idx):
                    out[i] = {name: a[j] for name, a in arrays.items()}
            return out

        return cls(spec, run, source=str(path))

    def metadata(self) -> dict[str, Any]:
        """What an exported file stores so that ``from_exported`` decides like this predictor."""
        return {"format_version": EXPORT_FORMAT, "scratchlab_version": _version(), "spec": self.spec.to_dict(),
                "source": self.source,
                "inputs": {name: {"layout": "NHWC", "dtype": "uint8", "channels": "RGB",
                                  "geometry": f"resize={pre.resize} image_size={pre.image_size} first; "
                                              "normalization is in the graph"}
                           for name, (pre, _) in self.task_class.export_inputs(self.spec).items()},
                "outputs": list(self.task_class.export_outputs)}

    # -- prediction -----------------------------------------------------------------------------------------

    def __call__(self, image: np.ndarray | str | Path) -> Prediction:
        """Judge one image: an array (gray / RGB / RGBA, any integer or float dtype) or an image file path."""
        if isinstance(image, (str, Path)):
            return self.predict_batch([read_image(image)], [str(image)])[0]
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray],
                      paths: Sequence[str | None] | None = None) -> list[Prediction]:
        """Judge several image arrays; inputs of equal network shape run as one batch."""
        rgbs = [as_rgb(im) for im in images]
        paths = list(paths) if paths is not None else [None] * len(rgbs)
        raws = self.run(rgbs) if rgbs else []
        return [self._prediction(self.task_class.judge(raw, im.shape[:2], self.spec), im.shape[:2], path)
                for raw, im, path in zip(raws, rgbs, paths)]

    def predict_paths(self, paths: Iterable[str | Path], batch_size: int = 8, skip_errors: bool = False,
                      keep_images: bool = False) -> Iterator[Prediction]:
        """One Prediction per file, in order; files are read in background threads ``batch_size`` at a time.

        An unreadable file raises its DataError, or with ``skip_errors`` gives ``Prediction.failed``;
        ``keep_images`` leaves each RGB image in ``Prediction.image`` (e.g. to draw overlays)."""
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size={batch_size} must be at least 1")
        paths = [str(p) for p in paths]
        chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
        pool = decode_pool()  # threads that outlive the call: none ends under OpenCV's lock before a fork
        pending: list[Future] | None = [pool.submit(_try_read, p) for p in chunks[0]] if chunks else None
        for n, chunk in enumerate(chunks):
            loaded = [f.result() for f in pending]
            pending = [pool.submit(_try_read, p) for p in chunks[n + 1]] if n + 1 < len(chunks) else None
            good = [(p, im) for p, im in zip(chunk, loaded) if isinstance(im, np.ndarray)]
            preds = iter(self.predict_batch([im for _, im in good], [p for p, _ in good]))
            for p, im in zip(chunk, loaded):
                if isinstance(im, DataError):
                    if not skip_errors:
                        raise im
                    yield Prediction.failed(p, str(im))
                else:
                    pred = next(preds)
                    if keep_images:
                        pred.image = im
                    yield pred

    def _prediction(self, verdict: Verdict, size: tuple[int, int], path: str | None) -> Prediction:
        options = {k: v for k, v in self.spec.options.items() if isinstance(v, (int, float, str))}  # not parts, flips
        thresholds: dict[str, Any] = {**asdict(self.decision), **options}
        details = verdict.details
        if details is not None:
            thresholds["area_threshold"] = details.area_threshold
        return Prediction(decision="bad" if verdict.is_bad else "good", score=verdict.score,
                          mask=None if details is None else details.mask * np.uint8(255),
                          components=[] if details is None else details.components, thresholds=thresholds,
                          kind=self.kind, image_size=(int(size[0]), int(size[1])), path=path,
                          score_name=verdict.score_name, probability=verdict.probability, details=details,
                          extra=verdict.extra)


# ----------------------------------------------------------------------------------------------------------
# Exported files


def _parse_metadata(text: str | None, path: Path) -> dict[str, Any]:
    if not text:
        raise ConfigError(f"{path} carries no scratchlab metadata; export it with python -m scratchlab.export")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} has unreadable scratchlab metadata ({err}); export it again") from err
    if not isinstance(meta, dict) or meta.get("format_version") != EXPORT_FORMAT or "spec" not in meta:
        raise ConfigError(f"{path} was exported by another scratchlab version (metadata format "
                          f"{meta.get('format_version') if isinstance(meta, dict) else '?'}, this one reads "
                          f"{EXPORT_FORMAT}); export it again with python -m scratchlab.export")
    return meta


Graph = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
"""Input name -> batch (the order of ``export_inputs``) to output name -> batch."""


def _load_onnx(path: Path, providers: Sequence[str] | None) -> tuple[Graph, dict]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"{path} cannot be loaded by onnxruntime ({str(err).splitlines()[0][:200]})") from err
    meta = _parse_metadata(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), path)
    outputs = [o.name for o in session.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(outputs, session.run(outputs, feeds)))

    return run, meta


def _load_torchscript(path: Path) -> tuple[Graph, dict]:
    import torch

    extra = {TORCHSCRIPT_EXTRA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still the way to load it
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"{path} is neither an .onnx file nor a TorchScript model "
                          f"({err.__class__.__name__})") from err
    text = extra[TORCHSCRIPT_EXTRA]
    meta = _parse_metadata(text.decode() if isinstance(text, bytes) else text, path)

    names = meta.get("outputs") or []

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(x) for x in feeds.values()))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return {n: t.float().numpy() for n, t in zip(names, out)}

    return run, meta
