"""The accurate variant (opt-in): dlib's face descriptor beside the network, its knowledge in the answer.

A linear classifier per classification task, fitted on dlib's 128-D face descriptors of
the model's training faces (:func:`fit_fusion`), gives a second opinion; the answer is the
mixture ``p = mix * p_network + (1 - mix) * p_descriptor`` of the two probability vectors.
The descriptor costs tens of milliseconds a face on a CPU (``facemtl benchmark`` measures
it), which is why the default path never computes it: ``facemtl analyze --accurate``.

Optionally, per task, a line below which the networks answer it alone
(``networks_alone``: ``{"gender": {"task": "age", "below": 10}}``: on a face whose answer to
the ``age`` task is under 10, gender is the networks' probabilities unmixed). dlib's
descriptor network learnt to tell adults apart; on the shipped split, letting the networks
alone answer gender on faces under 10 narrowed the gender gap between races (MODEL_CARD.md,
``docs/results/fusion_young_rule.md``).

The fusion file (JSON) holds the descriptor's standardisation (the training faces' mean and
spread), per task its classes, weights ``W (C, 128)`` and biases ``b (C,)``, and ``mix``;
optionally ``networks``, the model files (paths relative to the fusion file) that the accurate
variant runs when no model is named; several are an ensemble, the mean of their raw outputs
(:mod:`facemtl.inference.runtimes.ensemble`). The shipped fusion file names seven networks
trained on the same split: a 160 px network (``utkface_lite0_160.onnx``,
``configs/cpu_distill_soft_160.yaml``), the shipped 112 px INT8 network, a second seed of it
(``utkface_lite0_seed1.onnx``) and four more seeds of the 160 px recipe
(``utkface_lite0_160_seed1.onnx`` .. ``seed4``, trained on a lent GPU). The accurate variant
spends tens of milliseconds a face on the descriptor anyway, so the networks cost it less
(MODEL_CARD.md has the accuracy, ``facemtl benchmark`` the speed).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..tasks.base import answers_of
from .model_info import file_version
from .predictor import Predictor, load_predictor
from .results import TaskAnswer

DEFAULT_FUSION = "utkface_lite0_fusion.json"


@dataclass
class FusionHead:
    teacher: str
    mean: np.ndarray
    std: np.ndarray
    tasks: dict[str, dict[str, Any]]
    mix: float = 0.5
    #: The model files the accurate variant runs unless another is named (several: an
    #: ensemble): as the file says them (relative to the fusion file) when written, resolved
    #: to full paths by :meth:`load`.
    networks: list[str] | None = None
    #: Per task, the face's answer to another (numeric) task under which the networks answer it
    #: alone: ``{"gender": {"task": "age", "below": 10.0}}``.
    networks_alone: dict[str, dict[str, Any]] | None = None
    #: The file it was read from (its name) and the first 12 hex digits of the SHA-256 of its
    #: bytes (:meth:`load`), recorded beside each answer the accurate variant gives.
    source: str | None = None
    version: str | None = None

    def probabilities(self, task: str, features: np.ndarray) -> np.ndarray:
        """``(N, C)`` class probabilities of ``task`` from descriptors ``(N, 128)``."""
        from ..logistic import logistic_probabilities

        spec = self.tasks[task]
        return logistic_probabilities((np.asarray(features, np.float32) - self.mean) / self.std, spec["W"], spec["b"])

    def fused(self, task: str, raw: dict[str, np.ndarray], features: np.ndarray, tasks: dict[str, Any]) -> np.ndarray:
        """``(N, C)`` probabilities of ``task`` as the accurate variant answers: ``mix * p_network +
        (1 - mix) * p_descriptor``, or ``p_network`` alone where :attr:`networks_alone` says so.

        ``raw``: the networks' raw outputs per task; ``features``: descriptors ``(N, 128)``;
        ``tasks``: the model's tasks by name (the line reads another task's answer)."""
        net = tasks[task].probabilities(raw[task])
        p = self.mix * net + (1 - self.mix) * self.probabilities(task, features)
        when = (self.networks_alone or {}).get(task)
        if when:  # below the line the networks answer alone
            alone = tasks[when["task"]].predict(raw[when["task"]]) < when["below"]
            p = np.where(alone[:, None], net, p)
        return p

    def to_dict(self) -> dict[str, Any]:
        d = {"teacher": self.teacher, "mix": self.mix, "mean": self.mean.tolist(), "std": self.std.tolist(),
             "tasks": self.tasks}
        if self.networks_alone:
            d["networks_alone"] = self.networks_alone
        if not self.networks:
            return d
        # one network under "network", as files written before ensembles: older versions still read it
        return {**d, "network": self.networks[0]} if len(self.networks) == 1 else {**d, "networks": list(self.networks)}

    @classmethod
    def load(cls, path: str | Path) -> "FusionHead":
        if Path(path).is_dir():
            raise ValueError(f"{path} is a folder; give the fusion file (JSON) that facemtl fusion wrote")
        if not Path(path).is_file():
            raise FileNotFoundError(f"fusion file {path} does not exist")
        try:
            d = json.loads(Path(path).read_text())
            networks = d.get("networks", [d["network"]] if d.get("network") else None)  # "network": one, before
            if networks is not None:
                if isinstance(networks, str) or not networks:
                    raise TypeError("'networks' must be a list of model files")
                networks = [str(Path(path).parent / str(n)) for n in networks]  # an absolute path stays as it is
            alone = checked_networks_alone(d.get("networks_alone") or {}, d["tasks"]) or None
            head = cls(d["teacher"], np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32), d["tasks"],
                       float(d.get("mix", 0.5)), networks, alone)
            head.check_shapes()
            head.source, head.version = Path(path).name, file_version(path)
            return head
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a facemtl fusion file ({type(exc).__name__}: {exc})") from None

    def check_shapes(self) -> None:
        """``ValueError`` unless ``mean`` and ``std`` are one finite number per descriptor value and
        each task's ``W (C, D)``, ``b (C,)`` match its ``C`` classes (a hand-edited file said
        NumPy's "operands could not be broadcast together" at the first face: a user test)."""
        from ..faces.descriptor import DIM

        if self.mean.shape != (DIM,) or self.std.shape != (DIM,):
            raise ValueError(f"'mean' and 'std' must be lists of {DIM} numbers, one per descriptor value, not "
                             f"{len(self.mean.reshape(-1))} and {len(self.std.reshape(-1))}")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.std).all() and (self.std > 0).all()):
            raise ValueError("'mean' and 'std' must be finite numbers, 'std' above 0")
        for task, spec in self.tasks.items():
            w, b = np.asarray(spec["W"], float), np.asarray(spec["b"], float)
            classes = spec.get("classes")
            c = len(classes) if classes is not None else len(b)
            if w.shape != (c, DIM) or b.shape != (c,) or not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise ValueError(f"task {task!r} needs 'W' of shape ({c}, {DIM}) and 'b' of shape ({c},), finite "
                                 f"numbers, not {w.shape} and {b.shape}")


def checked_networks_alone(alone: Any, fused: Iterable[str],
                           numeric: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """``networks_alone`` (``{task: {"task": line_task, "below": line}}``) checked and with float lines,
    or a ValueError in a sentence: each task is one of the ``fused`` tasks, its line task is not
    (and is one of ``numeric``, where the caller knows the model's numeric tasks), its line a
    finite number. One check for every way in: ``facemtl fusion``, a fusion file, a model."""
    if not isinstance(alone, dict):
        raise ValueError("networks_alone must map fused tasks to {'task': NUMERIC_TASK, 'below': LINE}")
    fused = list(fused)
    numeric = None if numeric is None else sorted(numeric)
    out = {}
    for task, when in alone.items():
        if task not in fused:
            raise ValueError(f"networks_alone names task {task!r}; the fusion file covers {', '.join(fused)}")
        if not isinstance(when, dict) or not isinstance(when.get("task"), str):
            raise ValueError(f"networks_alone of {task!r} must be {{'task': NUMERIC_TASK, 'below': LINE}}, not {when!r}")
        if when["task"] in fused or (numeric is not None and when["task"] not in numeric):
            raise ValueError(f"networks_alone reads task {when['task']!r}; it must be one of the model's numeric tasks"
                             + (f": {', '.join(numeric) or 'none'}" if numeric is not None else ", not a fused one"))
        below = when.get("below")
        if isinstance(below, bool) or not isinstance(below, (int, float)) or not math.isfinite(below):
            raise ValueError(f"networks_alone needs a finite line for {task!r}, not {below!r}")
        out[task] = {"task": when["task"], "below": float(below)}
    return out


def default_fusion_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("facemtl") / "weights" / DEFAULT_FUSION))


def load_accurate(fusion: str | Path | bool, checkpoint: Any = None, runtime: str | None = None,
                  device: str = "auto", batch_size: int = 64, interval: float = 0.8,
                  threads: int | None = None, predictor: Predictor | None = None) -> "FusedPredictor":
    """The accurate variant: ``fusion`` (``True``: the shipped fusion file, or a fusion file's path)
    beside ``predictor``, or ``checkpoint``'s network, or with neither the networks the fusion file
    names (else the default model). The other arguments load the network (:func:`load_predictor`).
    One way in for ``analyze``, ``stream``, ``serve`` and the library's analyzers."""
    head = FusionHead.load(default_fusion_path() if fusion is True else fusion)
    if predictor is None and checkpoint is None and head.networks:
        checkpoint = head.networks
        for network in head.networks:
            if not Path(network).is_file():
                raise FileNotFoundError(f"the accurate variant's network {network} (named by its fusion "
                                        "file) does not exist; give the model with --checkpoint")
    if predictor is None:
        predictor = load_predictor(checkpoint, runtime, device, batch_size, interval, threads)
    return FusedPredictor(predictor, head)


class FusedPredictor:
    """A :class:`Predictor` whose classification answers mix in the descriptor's opinion.

    The pipeline computes each face's descriptor in its worker threads (:meth:`describe_face`)
    and hands them to :meth:`predict` with the crops.
    """

    def __init__(self, predictor: Predictor, head: FusionHead) -> None:
        from ..faces.descriptor import NAME, check_available

        if head.teacher != NAME:
            raise ValueError(f"the fusion file needs the {head.teacher!r} descriptor, which facemtl does not have")
        known = {t.name for t in predictor.tasks}
        unknown = sorted(set(head.tasks) - known)
        if unknown:
            raise ValueError(f"the fusion file covers task {unknown[0]!r}, which this model lacks: give the model it "
                             "was fitted for with --checkpoint, or name it in the fusion file (facemtl fusion --network)")
        by_name = {t.name: t for t in predictor.tasks}
        for name, spec in head.tasks.items():  # mixed class by class: the same classes in the same order
            ours, fitted = by_name[name].class_names(), spec.get("classes")
            if fitted is not None and list(ours or []) != list(fitted):
                raise ValueError(f"the fusion file was fitted for task {name!r} with the classes {fitted}, but this "
                                 f"model's are {ours}: its probabilities would be mixed with the wrong classes; fit "
                                 "it again for this model (facemtl fusion)")
        checked_networks_alone(head.networks_alone or {}, head.tasks,
                               [t.name for t in predictor.tasks if t.class_names() is None])
        check_available()  # the accurate variant without dlib: one sentence now, not an error per face
        self.predictor, self.head = predictor, head
        self.tasks, self.size = predictor.tasks, predictor.size
        self.info = fused_info(predictor.info, head)
        self.batch_size, self.interval = predictor.batch_size, predictor.interval
        self._local = threading.local()

    def describe_face(self, rgb: np.ndarray, face: Any | None) -> np.ndarray:
        """dlib's descriptor of ``face`` (a detected :class:`~facemtl.faces.Face`, or ``None``: the
        whole of ``rgb`` is an aligned crop). One descriptor network per thread."""
        desc = getattr(self._local, "desc", None)
        if desc is None:
            from ..faces.descriptor import DlibDescriptor

            desc = self._local.desc = DlibDescriptor()
        if face is None:
            return desc.describe(rgb)
        if face.scheme == "dlib5":
            return desc.describe(rgb, face.landmarks)
        return desc.describe_box(rgb, face.box)

    def predict(self, crops: Sequence[np.ndarray], features: Sequence[np.ndarray] | None = None
                ) -> list[dict[str, TaskAnswer]]:
        """The answers for aligned ``crops``, the descriptor's opinion mixed in: ``features``, one
        descriptor ``(128,)`` per crop (:meth:`describe_face`, as the pipeline computes them from the
        photo), or without them each crop's own, the crop taken as an aligned face (a library
        caller's ``predict_crops``; the networks alone answered it before, without a word). A crop
        described at its network's 112 or 160 px reads a little otherwise than the photo's own
        pixels would."""
        if len(crops) == 0:
            return []
        if features is None:
            features = [self.describe_face(np.asarray(c), None) for c in crops]
        raw = self.predictor.raw(crops)
        feats = np.stack(features)
        by_name = {t.name: t for t in self.tasks}
        per_task = {}
        for t in self.tasks:
            if t.name in self.head.tasks:
                per_task[t.name] = t.answers_from_probabilities(self.head.fused(t.name, raw, feats, by_name))
            else:
                per_task[t.name] = answers_of(t, raw[t.name], self.interval)
        return [{name: answers[j] for name, answers in per_task.items()} for j in range(len(crops))]


def fused_info(info: Any, head: FusionHead) -> Any:
    """What the accurate variant says about itself: the network's :class:`ModelInfo` under a name
    and version of its own (``NAME+fusion``; the SHA-256 of the network's version and the fusion
    file's), so that its answers are told apart from the network's alone wherever they are kept
    (a results database's faces, ``/v1/version``: both read the same before), and the fusion file
    in ``extra``."""
    import dataclasses
    import hashlib

    version = hashlib.sha256(f"{info.version}+{head.version}".encode()).hexdigest()[:12]
    return dataclasses.replace(info, name=f"{info.name}+fusion", version=version,
                               extra={**info.extra, "network_version": info.version, "fusion": head.source,
                                      "fusion_version": head.version})


def fit_fusion(features: np.ndarray, labels: dict[str, np.ndarray], classes: dict[str, list[str]],
               val_features: np.ndarray, val_labels: dict[str, np.ndarray], teacher: str,
               l2: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
               sample_weights: dict[str, np.ndarray] | None = None) -> tuple[FusionHead, dict[str, Any]]:
    """Fit one multinomial logistic regression per task on standardised descriptors.

    ``features``: ``(N, 128)`` training descriptors (NaN rows skipped); ``labels``: per task, class
    indices ``(N,)`` (NaN = missing); ``sample_weights``: per task (any subset), a weight ``(N,)`` per
    training face in its loss (:func:`facemtl.logistic.fit_logistic`), e.g. ``1 / cell size`` over
    race x gender cells so each cell counts alike; a task not named weighs every face alike. The
    L2 strength is chosen per task on the validation faces, by plain accuracy.
    Returns the head and, per task, the validation accuracy of each strength.
    """
    from ..logistic import fit_logistic

    ok = ~np.isnan(features).any(1)
    mean, std = features[ok].mean(0), features[ok].std(0) + 1e-6
    z = lambda f: ((f - mean) / std).astype(np.float32)  # noqa: E731
    heads, scores = {}, {}
    for task, sw in (sample_weights or {}).items():
        if task not in labels or np.shape(sw) != (len(features),):
            raise ValueError(f"sample_weights of {task!r}: one weight per training face of a fitted task is needed")
    for task, y in labels.items():
        m = ok & ~np.isnan(y)
        mv = ~np.isnan(val_features).any(1) & ~np.isnan(val_labels[task])
        xv, tv = z(val_features[mv]), val_labels[task][mv].astype(np.int64)
        best = None
        scores[task] = {}
        sw = None if task not in (sample_weights or {}) else np.asarray(sample_weights[task], float)[m]
        for lam in l2:
            w, b = fit_logistic(z(features[m]), y[m], len(classes[task]), lam, sample_weight=sw)
            acc = float(((xv @ w.T + b).argmax(1) == tv).mean())
            scores[task][str(lam)] = acc
            if best is None or acc > best[0]:
                best = (acc, w.tolist(), b.tolist())
        heads[task] = {"classes": list(classes[task]), "W": best[1], "b": best[2]}
    return FusionHead(teacher, mean.astype(np.float32), std.astype(np.float32), heads), scores
