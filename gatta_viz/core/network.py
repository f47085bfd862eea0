"""Make any CNN GAttA-enabled by naming its layers; two-pass forward with hooks."""
from __future__ import annotations

import contextlib
import difflib
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .hook_scope import HOOK_PASSES, others_hooks_hidden
from .hooks import forward_hooks, temporarily_eval
from .mechanism import ConvKeyQuery, DenseKeyQuery, agreement, global_query, modulate
from .pass_statistics import NORM_STATS, PassStatistics, is_batchnorm, statistics_frozen
from .prefix_reuse import PrefixReuse
from .trace import GAttATrace, LayerTrace, unknown_layer

__all__ = ["GAttANet", "KEYS_FROM", "forward_hooks", "temporarily_eval"]

KEYS_FROM = ("pass1", "pass2")


def _param_key(name: str) -> str:
    return name.replace(".", "__")


class GAttANet(nn.Module):
    """A CNN with global attention agreement (VanRullen & Alamia 2021).

    ``model(x)`` returns the pass-2 logits as a plain tensor, so attribution tools
    (captum, pytorch-grad-cam, torchcam) work unchanged: hooks that other code registers on
    backbone modules see one forward per call, pass 2 (``model.hook_passes = "both"`` shows them
    pass 1 too; see ``core/hook_scope.py``). ``model.trace(x)`` returns a
    :class:`GAttATrace` with every layer's agreement map, alpha, q_avg and the
    logits of both passes.

    Args:
        backbone: any ``nn.Module`` mapping (B, C, H, W) images to (B, classes) logits.
        layers: names of the modules to attend (as in ``backbone.named_modules()``).
            A module with a 4-D output (B, C, H, W) is a conv layer; one with a 2-D
            output (B, C) is a dense layer. Each must run exactly once per forward.
        input_shape: (C, H, W) of one input image, used once to probe layer shapes.
        d: dimension of keys and queries.
        alpha_init: initial value of every layer's alpha. 0 makes the untrained
            model equal its backbone exactly.
        freeze_backbone: set ``requires_grad=False`` on the backbone's parameters
            (keys, queries and alphas stay trainable; BatchNorm statistics still
            update in train mode, as for any frozen-weight fine-tuning).
        keys_from: ``"pass1"`` (default; agreement maps depend on pass 1 only) or
            ``"pass2"`` (each layer's keys come from its pass-2 input, after the
            layers below it were modulated; q_avg always comes from pass 1).
        norm_stats: ``"per_pass"`` (default): every BatchNorm whose input differs between the
            passes (those after the first GAttA layer) keeps running statistics for pass 1 (its own
            buffers) and for pass 2 (``pass2_stats``); train mode normalises with batch statistics
            as usual, eval mode with that pass's own. ``"shared"``: one set for both passes,
            which then holds a blend of the two (kept for ablations and old checkpoints).
            Either way, the BatchNorms before and inside the first GAttA layer see the same input in both
            passes and update their running statistics once per train-mode call (in pass 1), as in the backbone.

    Raises:
        ValueError: unknown layer name, d <= 0, bad input_shape, a layer whose
            output is neither 2-D nor 4-D, or one that runs more than once; a TorchScript
            ``ScriptModule`` as backbone (GAttA needs forward hooks on Python modules: wrap the
            original ``nn.Module`` instead).
    """

    def __init__(
        self,
        backbone: nn.Module,
        layers: Sequence[str],
        input_shape: Tuple[int, int, int] = (3, 224, 224),
        d: int = 32,
        alpha_init: float = 0.0,
        freeze_backbone: bool = False,
        keys_from: str = "pass1",
        norm_stats: str = "per_pass",
    ) -> None:
        super().__init__()
        if isinstance(backbone, torch.jit.ScriptModule):
            raise ValueError(
                f"cannot wrap a TorchScript ScriptModule ({type(backbone).__name__}): GAttA runs the backbone with "
                "forward hooks, which scripted modules do not call; wrap the original nn.Module instead"
            )
        if not isinstance(backbone, nn.Module):
            raise ValueError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
        if not isinstance(d, int) or isinstance(d, bool) or d <= 0:
            raise ValueError(f"d (key/query dimension) must be a positive integer, got {d!r}")
        if keys_from not in KEYS_FROM:
            raise ValueError(f"keys_from must be one of {KEYS_FROM}, got {keys_from!r}")
        if norm_stats not in NORM_STATS:
            raise ValueError(f"norm_stats must be one of {NORM_STATS}, got {norm_stats!r}")
        if isinstance(layers, str):
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise ValueError("layers must name at least one module of the backbone")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers contains duplicates: {layers}")
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) != 3 or min(input_shape) <= 0:
            raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape}")
        named = dict(backbone.named_modules())
        for name in layers:
            if name not in named or name == "":
                close = difflib.get_close_matches(name, [n for n in named if n], n=5)
                hint = f"; did you mean {close}?" if close else ""
                raise ValueError(f"unknown layer name {name!r} in backbone {type(backbone).__name__}{hint}")

        self.backbone = backbone
        self.d = d
        self.keys_from = keys_from
        self.input_shape = input_shape
        self.in_channels = input_shape[0]
        self.freeze_backbone = bool(freeze_backbone)
        # Training option: run pass 1 without autograd (keys, queries and alpha still get gradients from
        # detached pass-1 activations; the backbone learns through pass 2 only). ~1/3 cheaper to train.
        # Outputs are identical either way; it only changes which gradients exist.
        self.detach_pass1 = False

        shapes, after_first, before_first = self._probe_shapes(layers, input_shape)
        # BatchNorms with the same input in both passes: their statistics are updated in pass 1 only
        self.same_input_norms: List[str] = before_first
        self.layer_names: List[str] = sorted(layers, key=lambda n: shapes[n][0])
        self.layer_kinds: Dict[str, str] = {}
        self.kq = nn.ModuleDict()
        self.alpha = nn.ParameterDict()
        for name in self.layer_names:
            shape = shapes[name][1]
            if len(shape) == 4:
                kind, mod = "conv", ConvKeyQuery(shape[1], d)
            elif len(shape) == 2:
                kind, mod = "dense", DenseKeyQuery(shape[1], d)
            else:
                raise ValueError(
                    f"layer {name!r} outputs shape {tuple(shape)}; GAttA needs (B, C, H, W) for a conv "
                    "layer or (B, C) for a dense layer"
                )
            key = _param_key(name)
            if key in self.kq:
                raise ValueError(f"layer names {name!r} and another collide after replacing '.' by '__'")
            self.layer_kinds[name] = kind
            self.kq[key] = mod
            self.alpha[key] = nn.Parameter(torch.tensor(float(alpha_init)))
        self.norm_stats = norm_stats
        # pass 2's BatchNorm statistics, for the BatchNorms whose input pass 2 changes
        self.pass2_stats = PassStatistics({n: named[n] for n in after_first} if norm_stats == "per_pass" else {})
        if freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        # Under no_grad, pass 2 takes the stem's and the first GAttA layer's outputs from pass 1 instead of
        # recomputing them (identical inputs; see prefix_reuse.py). Same outputs; set False to always recompute.
        self.reuse_prefix = True
        self._prefix = PrefixReuse()
        # Hooks that others registered on backbone modules see pass 2 only ("pass2") or both passes ("both").
        # See hook_scope.py; gatta_viz.hook_passes(model, ...) sets it for a block.
        self.hook_passes = "pass2"

    # ------------------------------------------------------------------ setup
    def _probe_shapes(
        self, layers: Sequence[str], input_shape: Tuple[int, int, int]
    ) -> Tuple[Dict[str, Tuple[int, torch.Size]], List[str], List[str]]:
        """Run the backbone once in eval mode on zeros.

        Returns:
            name -> (call order, output shape) for each layer; the names of the BatchNorm layers
            that run after the first GAttA layer has finished (their input differs between passes);
            the names of those that ran, all before then (the same input in both passes).
        """
        named = dict(self.backbone.named_modules())
        seen: Dict[str, List] = {n: [] for n in layers}
        bns = {n: m for n, m in named.items() if n and is_batchnorm(m)}
        bn_done: Dict[str, List[int]] = {n: [] for n in bns}
        counter = [0]

        def bn_hook(name: str):
            def hook(_m, _i, _out):
                bn_done[name].append(counter[0])
                counter[0] += 1

            return hook

        def make_hook(name: str):
            if name not in seen:
                return bn_hook(name)

            def hook(_m, _i, out):
                if name in bn_done:  # a BatchNorm chosen as a GAttA layer
                    bn_done[name].append(counter[0])
                if not torch.is_tensor(out):
                    raise ValueError(f"layer {name!r} returns {type(out).__name__}, not a tensor")
                seen[name].append((counter[0], out.shape))
                counter[0] += 1

            return hook

        try:
            p = next(self.backbone.parameters())
            device, dtype = p.device, p.dtype
        except StopIteration:
            device, dtype = torch.device("cpu"), torch.float32
        x = torch.zeros((2, *input_shape), device=device, dtype=dtype)
        hooked = {**{n: named[n] for n in layers}, **bns}
        with temporarily_eval(self.backbone), torch.no_grad(), forward_hooks(hooked, make_hook):
            try:
                self.backbone(x)
            except ValueError:
                raise
            except Exception as e:  # noqa: BLE001 - reported as a configuration error
                raise ValueError(f"backbone failed on a probe input of shape {tuple(x.shape)}: {e}") from e
        out = {}
        for name, calls in seen.items():
            if len(calls) != 1:
                raise ValueError(
                    f"layer {name!r} ran {len(calls)} times in one forward pass; GAttA needs a module that "
                    "runs exactly once (name its parent or a distinct module instead)"
                )
            out[name] = calls[0]
        first_done = min(order for order, _ in out.values())
        after_first = [n for n, done in bn_done.items() if done and max(done) > first_done]
        before_first = [n for n, done in bn_done.items() if done and max(done) <= first_done]
        return out, after_first, before_first

    # --------------------------------------------------------------- accessors
    def kq_of(self, name: str) -> nn.Module:
        """The key/query module (:class:`ConvKeyQuery` or :class:`DenseKeyQuery`) of layer ``name``.

        Raises:
            UnknownLayerError (a KeyError and a ValueError): not a GAttA layer; says which was probably meant.
        """
        if name not in self.layer_names:
            raise unknown_layer(name, self.layer_names)
        return self.kq[_param_key(name)]

    def alpha_of(self, name: str) -> torch.Tensor:
        """The learned alpha (0-dim parameter) of layer ``name``.

        Raises:
            UnknownLayerError (a KeyError and a ValueError): not a GAttA layer; says which was probably meant.
        """
        if name not in self.layer_names:
            raise unknown_layer(name, self.layer_names)
        return self.alpha[_param_key(name)]

    @property
    def alphas(self) -> Dict[str, float]:
        """Layer name -> current alpha value, in forward order."""
        return {n: float(self.alpha_of(n).detach()) for n in self.layer_names}

    def gatta_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters GAttA adds: keys, queries and alphas."""
        yield from self.kq.parameters()
        yield from self.alpha.parameters()

    def extra_parameter_count(self) -> int:
        """Number of parameters GAttA adds (2 * C * d + 1 per layer)."""
        return sum(p.numel() for p in self.gatta_parameters())

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError if ``x`` is not a (B, C, H, W) tensor with the expected channel count."""
        if not torch.is_tensor(x):
            raise ValueError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"input must have rank 4 (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"input has {x.shape[1]} channels but the model expects {self.in_channels} (shape {tuple(x.shape)})"
            )
        if x.shape[0] == 0:
            raise ValueError("input batch is empty")

    # ---------------------------------------------------------------- forward
    def _two_pass(
        self,
        x: torch.Tensor,
        keep: bool = False,
        alpha_override: Optional[Mapping[str, float]] = None,
        query: Optional[torch.Tensor] = None,
    ) -> GAttATrace:
        self.check_input(x)
        if query is not None:
            query = self._check_query(query, x)
        if alpha_override:
            unknown = set(alpha_override) - set(self.layer_names)
            if unknown:
                raise ValueError(f"alpha_override names unknown layers {sorted(unknown)}; layers are {self.layer_names}")
        named = dict(self.backbone.named_modules())
        modules = {n: named[n] for n in self.layer_names}
        keys: Dict[str, torch.Tensor] = {}
        mean_q: Dict[str, torch.Tensor] = {}
        calls: Dict[str, int] = {n: 0 for n in self.layer_names}

        def check_once(name: str) -> None:
            calls[name] += 1
            if calls[name] > 1:
                raise RuntimeError(f"layer {name!r} ran more than once in one pass")

        # Pass 1: plain forward, keeping every selected layer's output; then keys and mean queries.
        acts: Dict[str, torch.Tensor] = {}

        if self.hook_passes not in HOOK_PASSES:
            raise ValueError(f"hook_passes must be one of {HOOK_PASSES}, got {self.hook_passes!r}")
        hiding = others_hooks_hidden(named.values()) if self.hook_passes == "pass2" else contextlib.nullcontext(0)
        reuse = self.reuse_prefix and PrefixReuse.possible()
        recording = self._prefix.record(named, x) if reuse else contextlib.nullcontext()

        def pass1_hook(name: str):
            def hook(_m, _i, out):
                check_once(name)
                acts[name] = out
                if rec is not None:
                    rec.mark_layer_done()
                return out.clone()  # downstream in-place ops (e.g. `out += identity`) must not alter acts

            return hook

        # detach_pass1: no autograd through the backbone here; K and Q still learn from the (detached) activations
        with hiding as hidden, recording as rec, forward_hooks(modules, pass1_hook), torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_pass1):
            logits1 = self.backbone(x)
        plan = self._prefix.replay_plan(named, x, rec) if rec is not None else None
        if hidden:  # hooks that ran in pass 2 only may change what the reused prefix computes: recompute it
            plan = None
        for name in self.layer_names:
            keys[name] = self.kq_of(name).keys(acts[name])
            mean_q[name] = self.kq_of(name).mean_query(acts[name])
        q_pass1 = global_query([mean_q[n] for n in self.layer_names])
        q_avg = q_pass1 if query is None else query  # a top-down cue replaces the pooled query
        gatta = {n: agreement(keys[n], q_avg) for n in self.layer_names}

        def alpha_for(name: str) -> torch.Tensor:
            a = self.alpha_of(name)
            if alpha_override and name in alpha_override:
                return torch.as_tensor(float(alpha_override[name]), dtype=a.dtype, device=a.device)
            return a

        # Pass 2: rerun, multiplying each layer's output by (1 + alpha * gatta).
        calls.update({n: 0 for n in self.layer_names})

        def pass2_hook(name: str):
            kq = self.kq_of(name)

            def hook(_m, _i, out):
                check_once(name)
                if self.keys_from == "pass2":
                    keys[name] = kq.keys(out)
                    gatta[name] = agreement(keys[name], q_avg)
                return modulate(out, alpha_for(name), gatta[name])

            return hook

        replay = self._prefix.replay(named, plan, rec) if plan else contextlib.nullcontext()
        # BatchNorms with the same input in both passes counted this batch in pass 1 already
        frozen = statistics_frozen([named[n] for n in self.same_input_norms]) if self.training else contextlib.nullcontext()
        with replay, frozen, self.pass2_stats.active(named), forward_hooks(modules, pass2_hook):
            logits2 = self.backbone(x)

        layers = {
            n: LayerTrace(
                name=n,
                kind=self.layer_kinds[n],
                agreement=gatta[n],
                alpha_tensor=alpha_for(n).detach(),  # a tensor: no host sync per layer per call
                keys=keys[n] if keep else None,
                mean_query=mean_q[n] if keep else None,
            )
            for n in self.layer_names
        }
        return GAttATrace(layers, q_avg, logits1, logits2, meta={"keys_from": self.keys_from, "cued": query is not None},
                          q_pass1=q_pass1 if query is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Two-pass forward. Args: x (B, C, H, W). Returns: pass-2 logits (B, classes)."""
        return self._two_pass(x).logits_pass2

    def trace(
        self,
        x: torch.Tensor,
        return_keys: bool = False,
        alpha_override: Optional[Mapping[str, float]] = None,
        query: Optional[torch.Tensor] = None,
    ) -> GAttATrace:
        """Two-pass forward that returns everything GAttA computed.

        Runs in the model's current train/eval mode and the ambient grad mode (wrap
        in ``torch.no_grad()`` for inspection); neither is changed.

        Args:
            x: images (B, C, H, W).
            return_keys: also keep each layer's keys and mean query.
            alpha_override: layer name -> alpha to use for this call only
                (e.g. ``{"layer2": 0.0}`` switches that layer's modulation off).
            query: a top-down cue: a global query of shape (d,) (the same for every image) or (B, d)
                that replaces the one pooled from pass 1; agreement maps and pass 2 then use it ("what
                would the network attend to if it were looking for this?"). The pooled query is kept
                in ``trace.q_pass1``. See :func:`gatta_viz.class_queries` for one query per class.
        Returns:
            A :class:`GAttATrace` (``q_avg`` = the query the maps were computed with).
        """
        return self._two_pass(x, keep=return_keys, alpha_override=alpha_override, query=query)

    def _check_query(self, query: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A (B, d) query on x's device and dtype, or ValueError naming the problem."""
        if not torch.is_tensor(query):
            raise ValueError(f"query must be a torch.Tensor of shape (d,) or (B, d), got {type(query).__name__}")
        if query.dim() == 1:
            query = query.unsqueeze(0).expand(x.shape[0], -1)
        if query.dim() != 2 or query.shape[1] != self.d or query.shape[0] != x.shape[0]:
            raise ValueError(f"query must have shape ({self.d},) or ({x.shape[0]}, {self.d}) for this batch, "
                             f"got {tuple(query.shape)}")
        if not torch.isfinite(query).all():
            raise ValueError("query contains NaN or infinite values")
        return query.to(device=x.device, dtype=x.dtype)

    def backbone_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The unmodulated backbone alone (pass 1 only). Returns logits."""
        self.check_input(x)
        return self.backbone(x)

    def config(self) -> dict:
        """JSON-able description of the GAttA options (not of the backbone)."""
        return {
            "layers": list(self.layer_names),
            "d": self.d,
            "input_shape": list(self.input_shape),
            "keys_from": self.keys_from,
            "freeze_backbone": self.freeze_backbone,
            "norm_stats": self.norm_stats,
        }
