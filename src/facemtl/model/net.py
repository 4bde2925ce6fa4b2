"""The multi-task network: hard parameter sharing with task-specific upper layers.

``MultiTaskNet`` maps images ``(N, 3, H, W)`` with values in [0, 1] to a dict
``{task_name: raw outputs (N, D_task)}``. Layout, top to bottom:

1. ``trunk``: the first ``shared_stages`` stages of the backbone (stem + MBConv
   stages), shared by every task (paper Fig. 2, "shallow MBConv features").
2. ``branches``: one deep copy of the remaining stages per branch key: the task's
   category (``nominal`` / ``ordinal``, as the paper draws it) or the task's own name.
   With ``shared_stages`` = all stages there is one branch and the whole trunk is
   shared (the thesis).
3. per branch, global average pooling and ``shared_fc`` layers
   (Linear -> BatchNorm -> LeakyReLU, the thesis's shared fully connected layers);
4. per task, ``task_fc`` layers and dropout (the thesis's task layers), then the
   task's output layer from :meth:`Task.make_head`. A task that trains another's head
   (:attr:`Task.output_of`, e.g. soft targets) has no tower: its output is that task's.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from ..tasks import Task
from ..tasks.base import check_shared_heads
from .backbones import BACKBONES

_ACTS = {"leaky_relu": lambda: nn.LeakyReLU(0.01), "relu": nn.ReLU, "silu": nn.SiLU, "relu6": nn.ReLU6}


def mlp(sizes: Sequence[int], in_features: int, act: str, batch_norm: bool, dropout: float) -> tuple[nn.Module, int]:
    """``[Dropout ->] Linear -> [BatchNorm1d] -> act`` for each width in ``sizes``."""
    layers: list[nn.Module] = []
    for width in sizes:
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(in_features, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(_ACTS[act]())
        in_features = width
    return nn.Sequential(*layers), in_features


class TaskTower(nn.Module):
    """Task-specific layers: ``task_fc`` MLP, dropout, then the task's output layer."""

    def __init__(self, task: Task, in_features: int, hidden: Sequence[int], act: str, batch_norm: bool, dropout: float):
        super().__init__()
        self.body, width = mlp(hidden, in_features, act, batch_norm, dropout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = task.make_head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.body(x)))


class MultiTaskNet(nn.Module):
    """See the module docstring. ``branch_of[task]`` names the branch a task reads."""

    def __init__(
        self,
        tasks: Sequence[Task],
        backbone: str = "efficientnet_lite0",
        pretrained: bool = True,
        shared_stages: int | None = None,
        branch_by: str = "category",
        shared_fc: Sequence[int] = (),
        task_fc: Sequence[int] = (),
        dropout: float = 0.2,
        activation: str = "leaky_relu",
        batch_norm: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a model needs at least one task")
        if activation not in _ACTS:
            raise ValueError(f"unknown activation {activation!r}; choose one of: {', '.join(_ACTS)}")
        if branch_by not in ("category", "task"):
            raise ValueError("branch_by must be 'category' or 'task'")
        factory = BACKBONES.get(backbone)
        try:
            net = factory(pretrained=pretrained, drop_path=drop_path)
        except TypeError as exc:
            if "keyword argument" not in str(exc):
                raise
            # a factory of one's own without these keywords
            raise ValueError(f"backbone {backbone!r} could not be built: {exc}; facemtl calls a backbone's factory "
                             "as factory(pretrained=bool, drop_path=float) (take **kwargs to ignore them)") from exc
        missing = [a for a in ("stages", "num_features", "mean", "std") if not hasattr(net, a)]
        if missing:
            raise ValueError(f"backbone {backbone!r} has no {', '.join(missing)}: a backbone is a module with "
                             "'stages' (modules run in order), 'num_features' (channels out of the last stage) and "
                             "'mean', 'std' (its input normalisation); see facemtl.model.backbones.BACKBONES")
        if torch.as_tensor(net.mean).numel() != 3 or torch.as_tensor(net.std).numel() != 3:
            raise ValueError(f"backbone {backbone!r} has mean {list(net.mean)} and std {list(net.std)}; each is three "
                             "numbers, one per colour channel (R, G, B) of its [0, 1] input")
        stages = list(net.stages)
        n = len(stages) if shared_stages is None else int(shared_stages)
        if not 1 <= n <= len(stages):
            raise ValueError(f"shared_stages must be between 1 and {len(stages)} for {backbone}")
        self.tasks = list(tasks)
        self.register_buffer("mean", torch.tensor(net.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(net.std).view(1, 3, 1, 1), persistent=False)
        self.trunk = nn.Sequential(*stages[:n])
        upper = stages[n:]
        check_shared_heads(list(tasks))
        own = [t for t in tasks if t.output_of is None]  # tasks with a head of their own
        #: ``{task: the task whose output it is}`` for tasks without a head of their own
        self.output_of = {t.name: str(t.output_of) for t in tasks if t.output_of is not None}
        if upper:
            keys = [t.category if branch_by == "category" else t.name for t in own]
        else:
            keys = ["shared"] * len(own)
        self.branch_of = dict(zip((t.name for t in own), keys))
        self.branches = nn.ModuleDict()
        self.necks = nn.ModuleDict()
        width = 0
        for i, key in enumerate(dict.fromkeys(keys)):
            # The first branch takes the (pretrained) upper stages, later ones a copy,
            # so every branch starts from the same weights.
            body = nn.Sequential(*(upper if i == 0 else copy.deepcopy(upper)))
            self.branches[key] = body
            self.necks[key], width = mlp(shared_fc, net.num_features, activation, batch_norm, 0.0)
        self.towers = nn.ModuleDict(
            {t.name: TaskTower(t, width, task_fc, activation, batch_norm, dropout) for t in own}
        )
        self.num_features = net.num_features
        self.backbone_name = backbone
        self._frozen: set[str] = set()
        self._backbone_frozen = False

    def check_shapes(self, size: int) -> None:
        """Run two blank ``size x size`` images through the network, in eval mode and without
        gradients, and check what each part gives: every branch's last stage ``(N, C, H, W)`` with
        ``C`` the backbone's ``num_features``, every task's head ``(N, output_size)``.
        ``ValueError`` in one sentence naming the part otherwise (a backbone or task type of one's
        own that broke these rules failed on the first batch with PyTorch's words about tensor
        sizes, or an ``IndexError`` inside facemtl). About 50 ms at 224 px on a CPU."""
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                x = torch.zeros(2, 3, size, size, device=self.mean.device)
                try:
                    ends = self._stage_ends(x)
                except Exception as exc:
                    raise ValueError(f"backbone {self.backbone_name!r} fails on a batch of shape {tuple(x.shape)}: "
                                     f"{type(exc).__name__}: {exc}") from exc
                for end in ends.values():
                    if end.dim() != 4 or end.shape[1] != self.num_features:
                        raise ValueError(f"backbone {self.backbone_name!r}'s last stage gives shape {tuple(end.shape)} "
                                         f"for a batch of {tuple(x.shape)}; it must give (N, num_features, H, W) = "
                                         f"(2, {self.num_features}, H, W) (the network pools it itself)")
                feats = self._necks(ends)
                for t in self.tasks:
                    if t.output_of is not None:
                        continue
                    try:
                        out = self.towers[t.name](feats[self.branch_of[t.name]])
                    except Exception as exc:
                        raise ValueError(f"the head of task {t.name!r} ({type(t).__qualname__}.make_head) fails: "
                                         f"{type(exc).__name__}: {exc}") from exc
                    if tuple(out.shape) != (2, t.output_size):
                        raise ValueError(f"the head of task {t.name!r} ({type(t).__qualname__}.make_head) gives shape "
                                         f"{tuple(out.shape)} for 2 faces, where its output_size says (2, "
                                         f"{t.output_size})")
        finally:
            self.train(was)

    @classmethod
    def from_config(cls, cfg: Any, tasks: Sequence[Task], pretrained: bool | None = None) -> "MultiTaskNet":
        """The network a :class:`~facemtl.config.ModelConfig` describes (``pretrained``: override
        the config's, e.g. ``False`` when a checkpoint's weights follow)."""
        return cls(
            tasks,
            backbone=cfg.backbone,
            pretrained=cfg.pretrained if pretrained is None else pretrained,
            shared_stages=cfg.shared_stages,
            branch_by=cfg.branch_by,
            shared_fc=cfg.shared_fc,
            task_fc=cfg.task_fc,
            dropout=cfg.dropout,
            activation=cfg.activation,
            batch_norm=cfg.batch_norm,
            drop_path=cfg.drop_path,
        )

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pooled, neck-processed features per branch: ``{branch: (N, F)}``."""
        return self._necks(self._stage_ends(x))

    def _stage_ends(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each branch's last stage for a ``(N, 3, S, S)`` batch in ``[0, 1]``: ``{branch: (N, C, H, W)}``."""
        h = self.trunk((x - self.mean) / self.std)
        return {key: body(h) for key, body in self.branches.items()}

    def _necks(self, ends: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Global average pooling of each branch's last stage, then its neck: ``{branch: (N, F)}``."""
        return {key: self.necks[key](end.mean((2, 3))) for key, end in ends.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.features(x)
        out = {name: tower(feats[self.branch_of[name]]) for name, tower in self.towers.items()}
        out.update({name: out[of] for name, of in self.output_of.items()})
        return out

    # -- parameter groups (Early Freeze, GradNorm) -------------------------------
    def own_modules(self, task: str) -> list[nn.Module]:
        """Modules only ``task`` uses: its tower, plus its branch when no other task reads it
        (none for a task that trains another's head)."""
        if task in self.output_of:
            return []
        mods: list[nn.Module] = [self.towers[task]]
        key = self.branch_of[task]
        if sum(k == key for k in self.branch_of.values()) == 1:
            mods += [self.branches[key], self.necks[key]]
        return mods

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return [p for m in self.own_modules(task) for p in m.parameters()]

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every parameter that more than one task uses (trunk, shared branches and necks)."""
        own = {id(p) for t in self.towers for p in self.task_parameters(t)}
        return [p for p in self.parameters() if id(p) not in own]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The last shared stage's parameters (GradNorm measures gradient norms there)."""
        return list(self.trunk[-1].parameters())

    def freeze(self, task: str) -> None:
        """Freeze the shared layers and ``task``'s own layers (thesis Early Freeze).

        Frozen parameters stop receiving gradients and frozen BatchNorm layers stop
        updating their running statistics (they stay in eval mode).
        """
        self._frozen.add(task)
        for p in self.shared_parameters() + self.task_parameters(task):
            p.requires_grad_(False)
        self.train(self.training)

    def freeze_backbone(self) -> None:
        """Freeze every backbone stage (trunk and branches): only necks and task towers train.

        The thesis's "frozen backbone" baseline, against fine-tuning the whole network.
        Frozen BatchNorm layers keep their (ImageNet) running statistics.
        """
        self._backbone_frozen = True
        for m in [self.trunk, *self.branches.values()]:
            for p in m.parameters():
                p.requires_grad_(False)
        self.train(self.training)

    @property
    def frozen_tasks(self) -> set[str]:
        return set(self._frozen)

    def shared_modules(self) -> list[nn.Module]:
        """The trunk, plus every branch and neck that more than one task reads."""
        own = {id(m) for t in self.towers for m in self.own_modules(t)}
        rest = [m for m in list(self.branches.values()) + list(self.necks.values()) if id(m) not in own]
        return [self.trunk] + rest

    def _frozen_modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = [self.trunk, *self.branches.values()] if self._backbone_frozen else []
        if self._frozen:
            mods += self.shared_modules() + [m for t in self._frozen for m in self.own_modules(t)]
        return mods

    def train(self, mode: bool = True) -> "MultiTaskNet":
        super().train(mode)
        if mode:
            for m in self._frozen_modules():
                m.eval()
        return self
