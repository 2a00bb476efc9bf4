"""Inference: one path from a trained or exported model to a good/bad decision per image.

``Predictor.from_checkpoint(ckpt)`` rebuilds the task of a scratchlab checkpoint (any kind);
``Predictor.from_exported(file)`` loads an ONNX or TorchScript file written by ``scratchlab.export``
(classification and segmentation). Every image then takes the same steps:

1. it becomes an RGB uint8 array by ``scratchlab.data.io.read_image``'s rules (gray replicated, alpha
   dropped, 16-bit >> 8; arrays given in memory are taken as RGB, not OpenCV's BGR);
2. the model's ``Preprocess`` geometry (stretch / letterbox / pad) is applied: the checkpoint path runs
   ``build_transform(pre)`` exactly as evaluation does; the exported path runs the same geometry steps
   (``pre.geometry()``) and the graph normalizes the uint8 image itself;
3. the network gives probabilities: per class for classifiers, a scratch-probability map for segmenters;
4. the map is brought back to the original image size (padding cropped off, letterbox undone, then a
   bilinear resize where the network saw a scaled image) and judged by ``scratchlab.postprocess`` only.

``Prediction.score`` is P(bad) for classifiers; for the segmentation kinds (segmentation, instance,
two_stage) it is the **maximum scratch probability over the image's pixels** at the original size
(instance: over the union of the kept instance masks; two_stage: 0 when the classifier gate passes the
image). The area the decision compares is in ``to_json()["scratch_area"]`` / ``["scratch_area_ratio"]``.

Decision thresholds: the checkpoint config's ``decision`` block, overridden by an operating point stored
with the model (``hyper_parameters["operating_point"]`` of the checkpoint: a mapping of decision values,
or a mapping with such a mapping under ``"decision"``), overridden by ``decision_overrides``. Exported
files carry the thresholds resolved at export time; ``decision_overrides`` apply on top.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np

from scratchlab.data.io import _to_uint8, read_image
from scratchlab.data.transforms import Preprocess, build_transform, content_box, restore_geometry
from scratchlab.errors import ConfigError, DataError
from scratchlab.postprocess import (
    Component,
    DecisionParams,
    MaskDecision,
    decide_from_instances,
    decide_from_probability,
    decide_from_score,
)

KINDS = ("classification", "segmentation", "instance", "two_stage")
SEGMENTATION_KINDS = ("segmentation", "instance", "two_stage")
EXPORTABLE_KINDS = ("classification", "segmentation")
METADATA_KEY = "scratchlab"
"""ONNX ``metadata_props`` key / TorchScript extra file stem holding the model's JSON metadata."""
TORCHSCRIPT_EXTRA = "scratchlab.json"
INPUT_NAME = "image"
"""Exported graphs take (N, H, W, 3) uint8 RGB images at network geometry (after ``pre.geometry()``)."""
OUTPUT_NAMES = {"classification": "probs", "segmentation": "prob_map"}
"""Exported outputs: (N, C) class probabilities (column 1 = P(bad) for good/bad models), or (N, H, W)
scratch probabilities."""


# ----------------------------------------------------------------------------------------------------------
# Per-image result


@dataclass
class Prediction:
    """The outcome for one image.

    ``decision`` is ``"bad"`` or ``"good"``; ``score`` is P(bad) (classifiers) or the maximum scratch
    probability (segmentation kinds); ``mask`` is the (H, W) uint8 0/255 scratch mask at the original
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


def resolve_decision(config_decision: Mapping[str, Any] | None, operating_point: Any = None,
                     overrides: Mapping[str, Any] | None = None) -> DecisionParams:
    """Config ``decision`` block < stored operating point < explicit overrides (see module docstring)."""
    merged = dict(config_decision or {})
    if operating_point is not None:
        op = operating_point.get("decision", operating_point) if isinstance(operating_point, Mapping) else None
        if not isinstance(op, Mapping):
            raise ConfigError("the model's operating_point must be a mapping of decision values "
                              f"(e.g. {{'threshold': 0.3}}), got {type(operating_point).__name__}")
        merged.update(op)
    if overrides:
        names = {f.name for f in fields(DecisionParams)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"decision.{unknown[0]} is not a decision setting; use one of {', '.join(sorted(names))}")
        merged.update({k: v for k, v in overrides.items() if v is not None})
    return DecisionParams.from_config(merged)


def checkpoint_hparams(path: str | Path) -> dict:
    """The ``hyper_parameters`` of a scratchlab checkpoint, read without loading its tensors when possible."""
    import torch

    from scratchlab.checkpoints import read_checkpoint

    p = Path(path).expanduser()
    if p.is_file():
        try:
            hp = torch.load(p, map_location="cpu", mmap=True, weights_only=False).get("hyper_parameters", {})
            if "config" in hp:
                return hp
        except Exception:  # noqa: BLE001 - read_checkpoint below gives the user-facing message
            pass
    return read_checkpoint(p)["hyper_parameters"]


def _try_read(path: str | Path) -> np.ndarray | DataError:
    try:
        return read_image(path)
    except DataError as err:
        return err


# ----------------------------------------------------------------------------------------------------------
# Runners: network input per image, raw output per image


class _TaskRunner:
    """A checkpoint's LightningModule: ``build_transform(pre)`` inputs, the task's own forward."""

    def __init__(self, task: Any, kind: str, pre: Preprocess, device: str) -> None:
        import torch

        self.torch = torch
        self.task = task.to(device).eval()
        self.kind, self.pre, self.device = kind, pre, device
        self.transform = build_transform(pre)

    def prepare(self, image: np.ndarray) -> Any:
        x = self.transform(image=image)["image"]
        if self.kind == "instance":  # as InstanceSegmentationTask: Mask R-CNN takes the unpadded image
            x = x[:, : image.shape[0], : image.shape[1]]
        return x

    def forward(self, inputs: list, sizes: list[tuple[int, int]]) -> list:
        torch = self.torch
        from scratchlab.tasks.classification import logits_to_probs

        with torch.inference_mode():
            if self.kind == "instance":
                outs = self.task.net([x.to(self.device) for x in inputs])
                return [(o["masks"].float().cpu().numpy(), o["scores"].float().cpu().numpy()) for o in outs]
            x = torch.stack(inputs).to(self.device)
            if self.kind == "classification":
                return list(logits_to_probs(self.task(x).float()).cpu().numpy())
            if self.kind == "segmentation":
                return list(torch.sigmoid(self.task(x).float()[:, 0]).cpu().numpy())
            return self._two_stage(x, sizes, logits_to_probs)

    def _two_stage(self, x: Any, sizes: list[tuple[int, int]], logits_to_probs: Callable) -> list:
        """As TwoStageTask: the classifier sees each image in its own geometry, the gated ones are segmented."""
        from scratchlab.tasks.two_stage import resize_for

        task = self.task
        crops = self.torch.stack([resize_for(task.classifier_pre, img[:, :h, :w]) for img, (h, w) in zip(x, sizes)])
        p_bad = logits_to_probs(task.classifier(crops).float())[:, 1]
        gate = p_bad >= task.gate_threshold
        maps: list[np.ndarray | None] = [None] * len(x)
        if gate.any():
            seg = self.torch.sigmoid(task.net(x[gate]).float()[:, 0]).cpu().numpy()
            for i, m in zip(gate.nonzero()[:, 0].tolist(), seg):
                maps[i] = m
        return [(float(p), m) for p, m in zip(p_bad.tolist(), maps)]


class _ExportedRunner:
    """An exported graph: ``pre.geometry()`` in Python, normalization and network inside the graph."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], pre: Preprocess) -> None:
        self.run = run
        self.geometry = A.Compose(pre.geometry())

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.geometry(image=image)["image"])

    def forward(self, inputs: list, sizes: list[tuple[int, int]]) -> list:
        return list(self.run(np.stack(inputs)))


# ----------------------------------------------------------------------------------------------------------
# Predictor


class Predictor:
    """Model -> good/bad decision per image; build it with ``from_checkpoint`` or ``from_exported``.

    ``predictor(image_or_path)`` judges one image; ``predict_batch(images)`` several arrays;
    ``predict_paths(paths, batch_size)`` yields one Prediction per file, in order. Images whose network
    inputs have the same shape are batched together, so a result never depends on the other images.
    """

    def __init__(self, runner: Any, kind: str, preprocess: Preprocess, decision: DecisionParams,
                 class_names: Sequence[str], source: str = "", extra_thresholds: Mapping[str, float] | None = None,
                 task: Any = None) -> None:
        if kind not in KINDS:
            raise ConfigError(f"model task {kind!r} is not one of {', '.join(KINDS)}")
        self.runner, self.kind, self.preprocess, self.decision = runner, kind, preprocess, decision
        self.class_names = list(class_names)
        self.source = source
        self.extra_thresholds = dict(extra_thresholds or {})
        self.task = task
        """The LightningModule when built from a checkpoint (else None)."""

    # -- construction ---------------------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | Path, decision_overrides: Mapping[str, Any] | None = None,
                        device: str = "cpu") -> Predictor:
        """Rebuild a scratchlab checkpoint's task (``scratchlab.checkpoints.load_task``) with the preprocessing
        and decision of its run config (see the module docstring for the operating point)."""
        from omegaconf import OmegaConf

        from scratchlab.builders import preprocess_from_config
        from scratchlab.checkpoints import load_task

        hp = checkpoint_hparams(path)
        cfg = OmegaConf.create(hp["config"])
        kind = str(cfg.model.get("task", "classification"))
        decision = resolve_decision(OmegaConf.to_container(cfg.get("decision") or {}, resolve=True),
                                    hp.get("operating_point"), decision_overrides)
        pre = preprocess_from_config(cfg)
        task = load_task(path)
        extra: dict[str, float] = {}
        if kind == "instance":
            extra["score_threshold"] = float(task.score_threshold)
        if kind == "two_stage":
            extra["gate_threshold"] = float(task.gate_threshold)
        names = getattr(task, "class_names", None) or hp.get("class_names") or ["good", "bad"]
        return cls(_TaskRunner(task, kind, pre, device), kind, pre, decision, names, source=str(path),
                   extra_thresholds=extra, task=task)

    @classmethod
    def from_two_stage(cls, classifier_ckpt: str | Path, segmenter_ckpt: str | Path,
                       gate_threshold: float | None = None, decision_overrides: Mapping[str, Any] | None = None,
                       device: str = "cpu") -> Predictor:
        """A classifier checkpoint gating a segmenter checkpoint (as ``model=two_stage``, which trains nothing
        and so leaves no checkpoint of its own): the segmenter's thresholds (config < operating point <
        ``decision_overrides``) and pad preprocessing; ``gate_threshold`` defaults to the classifier's threshold."""
        from omegaconf import OmegaConf

        from scratchlab.builders import preprocess_from_config
        from scratchlab.checkpoints import load_task
        from scratchlab.tasks.classification import ClassificationTask
        from scratchlab.tasks.segmentation import SegmentationTask
        from scratchlab.tasks.two_stage import TwoStageTask

        classifier, segmenter = load_task(classifier_ckpt), load_task(segmenter_ckpt)
        if not isinstance(classifier, ClassificationTask) or not isinstance(segmenter, SegmentationTask):
            raise ConfigError("two-stage prediction takes a classification checkpoint and a segmentation one")
        hp = checkpoint_hparams(segmenter_ckpt)
        cfg = OmegaConf.create(hp["config"])
        decision = resolve_decision(OmegaConf.to_container(cfg.get("decision") or {}, resolve=True),
                                    hp.get("operating_point"), decision_overrides)
        task = TwoStageTask(classifier, segmenter, decision=asdict(decision), gate_threshold=gate_threshold,
                            config=hp["config"])
        pre = preprocess_from_config(cfg)
        return cls(_TaskRunner(task, "two_stage", pre, device), "two_stage", pre, decision, task.class_names,
                   source=f"{classifier_ckpt} + {segmenter_ckpt}",
                   extra_thresholds={"gate_threshold": float(task.gate_threshold)}, task=task)

    @classmethod
    def from_exported(cls, path: str | Path, decision_overrides: Mapping[str, Any] | None = None,
                      providers: Sequence[str] | None = None) -> Predictor:
        """Load a file written by ``scratchlab.export``: ``.onnx`` runs on onnxruntime, anything else is
        taken as TorchScript. Preprocessing, thresholds, kind and class names come from its metadata."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"exported model {path} does not exist; pass an .onnx or TorchScript .pt file "
                              "written by scratchlab.export")
        if path.suffix.lower() == ".onnx":
            run, meta = _load_onnx(path, providers)
        else:
            run, meta = _load_torchscript(path)
        kind = meta.get("task")
        if kind not in EXPORTABLE_KINDS:
            raise ConfigError(f"{path} holds a model of task {kind!r}; exported models are classification or "
                              "segmentation")
        decision = resolve_decision(meta.get("decision"), None, decision_overrides)
        pre = Preprocess.from_dict(meta["preprocess"])
        return cls(_ExportedRunner(run, pre), kind, pre, decision, meta.get("class_names") or ["good", "bad"],
                   source=str(path))

    def metadata(self) -> dict[str, Any]:
        """What an exported file stores so that ``from_exported`` decides like this predictor."""
        from scratchlab import __version__

        return {"format_version": 1, "scratchlab_version": __version__, "task": self.kind,
                "class_names": self.class_names, "preprocess": self.preprocess.to_dict(),
                "decision": asdict(self.decision), "source": self.source,
                "input": {"name": INPUT_NAME, "layout": "NHWC", "dtype": "uint8", "channels": "RGB",
                          "geometry": "apply preprocess (stretch/letterbox/pad) first; normalization is in the graph"},
                "output": {"name": OUTPUT_NAMES.get(self.kind),
                           "meaning": "class probabilities (N, C), column 1 = P(bad)" if self.kind == "classification"
                           else "scratch probability map (N, H, W) at network geometry"}}

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
        sizes = [(int(im.shape[0]), int(im.shape[1])) for im in rgbs]
        inputs = [self.runner.prepare(im) for im in rgbs]
        groups: dict[Any, list[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(None if self.kind == "instance" else tuple(x.shape), []).append(i)
        raw: list[Any] = [None] * len(inputs)
        for idx in groups.values():
            for i, out in zip(idx, self.runner.forward([inputs[i] for i in idx], [sizes[i] for i in idx])):
                raw[i] = out
        return [self._finish(r, s, p) for r, s, p in zip(raw, sizes, paths)]

    def predict_paths(self, paths: Iterable[str | Path], batch_size: int = 8, skip_errors: bool = False,
                      keep_images: bool = False) -> Iterator[Prediction]:
        """One Prediction per file, in order; files are read in background threads ``batch_size`` at a time.

        An unreadable file raises its DataError, or with ``skip_errors`` gives ``Prediction.failed``;
        ``keep_images`` leaves each RGB image in ``Prediction.image`` (e.g. to draw overlays)."""
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size={batch_size} must be at least 1")
        paths = [str(p) for p in paths]
        chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
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

    # -- post-processing (scratchlab.postprocess only) ------------------------------------------------------

    def _thresholds(self, decision: MaskDecision | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {**asdict(self.decision), **self.extra_thresholds}
        if decision is not None:
            out["area_threshold"] = decision.area_threshold
        return out

    def _finish(self, raw: Any, size: tuple[int, int], path: str | None) -> Prediction:
        h, w = size
        if self.kind == "classification":
            return self._classified(np.asarray(raw, dtype=np.float64), size, path)
        extra: dict[str, Any] = {}
        if self.kind == "instance":
            masks, scores = raw
            score_threshold = self.extra_thresholds["score_threshold"]
            decision = decide_from_instances(masks, scores, self.decision, score_threshold=score_threshold)
            kept = np.asarray(masks, np.float32).reshape(len(scores), h, w)[np.asarray(scores) >= score_threshold]
            prob = kept.max(axis=0) if len(kept) else np.zeros((h, w), np.float32)
        else:
            if self.kind == "two_stage":
                gate_score, raw = raw
                extra = {"gate_score": gate_score, "gated": raw is not None}
            prob = np.zeros((h, w), np.float32) if raw is None else restore_geometry(raw, self.preprocess, h, w)
            decision = decide_from_probability(prob, self.decision)
        return Prediction(decision="bad" if decision.is_bad else "good", score=float(prob.max()),
                          mask=decision.mask * np.uint8(255), components=decision.components,
                          thresholds=self._thresholds(decision), kind=self.kind, image_size=size, path=path,
                          score_name="max_probability", probability=prob, details=decision, extra=extra)

    def _classified(self, probs: np.ndarray, size: tuple[int, int], path: str | None) -> Prediction:
        names = self.class_names if len(self.class_names) == len(probs) else [str(i) for i in range(len(probs))]
        extra: dict[str, Any] = {"class_probs": {n: float(p) for n, p in zip(names, probs)}}
        if len(probs) == 2:
            score, name = float(probs[1]), "p_bad"
            bad = decide_from_score(score, self.decision)
        else:  # N classes: the most probable one; bad unless it is called "good"
            top = int(probs.argmax())
            score, name = float(probs[top]), "p_label"
            extra["label"] = names[top]
            bad = names[top].lower() != "good"
        return Prediction(decision="bad" if bad else "good", score=score, mask=None, components=[],
                          thresholds=self._thresholds(), kind=self.kind, image_size=size, path=path,
                          score_name=name, extra=extra)


# ----------------------------------------------------------------------------------------------------------
# Exported files


def _parse_metadata(text: str | None, path: Path) -> dict[str, Any]:
    if not text:
        raise ConfigError(f"{path} carries no scratchlab metadata; export it with python -m scratchlab.export")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} has unreadable scratchlab metadata ({err}); export it again") from err
    if not isinstance(meta, dict) or "preprocess" not in meta or "task" not in meta:
        raise ConfigError(f"{path} has incomplete scratchlab metadata; export it again")
    return meta


def _load_onnx(path: Path, providers: Sequence[str] | None) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"{path} cannot be loaded by onnxruntime ({str(err).splitlines()[0][:200]})") from err
    meta = _parse_metadata(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), path)
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: batch})[0]

    return run, meta


def _load_torchscript(path: Path) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
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

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).float().numpy()

    return run, meta
