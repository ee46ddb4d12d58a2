"""Training FLOPs and memory, in the conventions of the sparse-training literature.

FLOPs follow RigL (Evci et al. 2020): FLOPs = 2 x MACs of the convolutions and linear layers;
a backward pass costs 2 x its forward (gradients w.r.t. activations and w.r.t. weights); a sparse
layer costs its dense FLOPs times its density. Dense per-layer FLOPs come from
`torch.utils.flop_counter`.

The accounting rule: every pass a method needs in order to train is counted, whether at a step or at
a task end; a pass that only measures is not. Counted at a step: what the step actually forwards
(replay examples, SAM's second pass, the IDS scoring forward, a reduced second pass, A-GEM's
reference gradient, a teacher's forward, a projection head such as CO2L's); removed examples are
never forwarded, so they cost nothing. Counted at a task end: EWC's Fisher (a forward and backward
per training example), CO2L's linear probe (the features' forward and the head's training),
batch-norm recalibration. Not counted in the total: evaluation (reported separately as
`measure.evaluation`), sharpness measurements and the O(parameters) element-wise updates. A weight gradient is
counted as far as the update consumes it: only the live entries of a masked layer, except where an
update rule reads the dense gradient of its prunable layers (dual averaging moves its accumulator
at pruned positions too; gradual magnitude pruning steps every weight before it re-selects): there
the weight-gradient term of the pass that feeds the update is dense.
"""

import functools
import resource

import torch
from torch.utils.flop_counter import FlopCounterMode


_COUNTED: dict[tuple, dict[str, int]] = {}  # architecture -> its counts: a grid's runs count once


def dense_forward_flops(model: torch.nn.Module, input_shape: tuple, device) -> dict[str, int]:
    """Per-example forward FLOPs of each leaf module with FLOPs, keyed by module name ('stage1.0.0').
    Counted once per architecture (its repr: every layer's shape) and input shape in a process: the
    counting forward costs 0.2 s, a tenth of a split_digits run's start."""
    key = (repr(model), tuple(input_shape), torch.device(device).type)
    if key not in _COUNTED:
        _COUNTED[key] = _count_dense_forward(model, input_shape, device)
    return dict(_COUNTED[key])


def _count_dense_forward(model: torch.nn.Module, input_shape: tuple, device) -> dict[str, int]:
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros((1, *input_shape), device=device))
    model.train(was_training)
    root = type(model).__name__ + "."
    leaves = {name for name, m in model.named_modules() if not list(m.children())}
    return {
        name[len(root) :]: sum(ops.values())
        for name, ops in counter.get_flop_counts().items()
        if name.startswith(root) and name[len(root) :] in leaves
    }


class FlopMeter:
    """Counts a run's training FLOPs by component, on the device (no host sync per step).

    The step names the component it is in (`with meter.phase("second_pass"):`); a forward
    pre-hook on the backbone's first layer adds batch x per-example forward cost, and the backward
    cost too when gradients are enabled. Hooking the first layer rather than the model's root
    counts every forward through the backbone: feature-only forwards, and deep copies of the model
    (a meter is shared, never copied). `set_density` keeps the costs current as masks change; a
    phase entered with `dense_weight_grad=True` (the pass whose gradient feeds a dense-gradient
    update rule) prices the prunable layers' weight gradients as dense.
    """

    def __init__(self, model: torch.nn.Module, input_shape: tuple, device):
        self.by_module = dense_forward_flops(model, input_shape, device)
        self.dense_forward = float(sum(self.by_module.values()))  # per example
        self.layer_flops: dict[str, float] = {}  # prunable param name -> its module's FLOPs
        self.forward_cost = torch.tensor(self.dense_forward, dtype=torch.float64, device=device)
        self.backward_cost = 2 * self.forward_cost  # activation + weight gradients, per example
        self.backward_cost_dense_wgrad = self.backward_cost  # the same, prunable weight gradients dense
        self.totals: dict[str, torch.Tensor] = {}  # component -> FLOPs so far, on the device
        self.device = device
        self._dense = torch.tensor(
            self.dense_forward, dtype=torch.float64, device=device
        )  # made once: no copy per step
        self._phase = None
        self._dense_wgrad = False
        self._first = model.get_submodule(next(iter(self.by_module)))  # flop_counter lists modules in call order
        self._hook = self._first.register_forward_pre_hook(self._count)
        self._parts: list[tuple] = []  # (module, hook, handle) of `watch`ed parts

    def under_compile(self) -> None:
        """Keep the counting hook out of `torch.compile`'s graphs (config key 'compile'): a guard on the
        phase name would compile one graph per phase and exhaust dynamo's recompile limit; the cost is one
        graph break at the first layer. Done here, not at import, since `torch.compiler.disable` imports
        dynamo (1.6 s)."""
        self._hook.remove()
        self._hook = self._first.register_forward_pre_hook(torch.compiler.disable(self._count))
        for i, (module, hook, handle) in enumerate(self._parts):
            handle.remove()
            self._parts[i] = (module, hook, module.register_forward_pre_hook(torch.compiler.disable(hook)))

    def __deepcopy__(self, memo):
        return self  # copies of the model report here too

    def track(self, prunable: list[str]) -> None:
        """Declare the prunable parameters whose density scales their layer's FLOPs."""
        self.layer_flops = {name: float(self.by_module[name.rsplit(".", 1)[0]]) for name in prunable}

    def set_density(self, masks: dict[str, torch.Tensor], grad_density: dict[str, float] | None = None) -> None:
        """Per-example costs at these weight masks (device arithmetic: no sync). A backward pass is the
        gradient w.r.t. activations (the forward's cost) plus w.r.t. weights: for a masked layer its live
        entries, or, where only part of a layer's weight gradient is kept (SparCL's DGM), the layer's
        dense cost times `grad_density[name]` (the share of its gradient entries kept), at most its
        live share. The dense-weight-gradient variant prices every masked layer's weight gradient dense."""
        forward = weight_grad = self._dense
        for name, mask in masks.items():
            density = mask.double().mean()
            forward = forward - self.layer_flops[name] * (1 - density)
            if grad_density and name in grad_density:
                density = density.clamp(max=grad_density[name])
            weight_grad = weight_grad - self.layer_flops[name] * (1 - density)
        self.forward_cost, self.backward_cost = forward, forward + weight_grad
        self.backward_cost_dense_wgrad = forward + self._dense

    def watch(self, module: torch.nn.Module, input_shape: tuple) -> None:
        """Also count forwards through `module` ([N, *input_shape] in), a dense part the backbone's forward
        does not run (CO2L's projector), at its own per-example cost; its backward is 2x that."""
        cost = float(sum(_count_dense_forward(module, input_shape, self.device).values()))
        hook = functools.partial(self._count_part, torch.tensor(cost, dtype=torch.float64, device=self.device))
        self._parts.append((module, hook, module.register_forward_pre_hook(hook)))

    def add(self, name: str, flops: float) -> None:
        """Add `flops` to component `name`: work priced by hand, not by the backbone's forward."""
        self._add(name, torch.tensor(flops, dtype=torch.float64, device=self.device))

    def count(self, name: str, n: int, backward: bool = False) -> None:
        """Add `n` examples' forwards (and backwards, live weight gradients) at the current costs as
        component `name`: for passes the hook cannot count per example (vmap's per-example gradients run
        the backbone once per chunk) or that run outside any phase."""
        self._add(f"{name}.forward", n * self.forward_cost)
        if backward:
            self._add(f"{name}.backward", n * self.backward_cost)

    def phase(self, name: str, dense_weight_grad: bool = False):
        """Count forwards (and their backwards) inside this block as component `name`; with
        `dense_weight_grad`, the prunable layers' weight gradients are priced dense."""
        return _Phase(self, name, dense_weight_grad)

    def _count(self, module, args):
        if self._phase is None:
            return
        n = args[0].shape[0]
        self._add(f"{self._phase}.forward", n * self.forward_cost)
        if torch.is_grad_enabled():
            cost = self.backward_cost_dense_wgrad if self._dense_wgrad else self.backward_cost
            self._add(f"{self._phase}.backward", n * cost)

    def _count_part(self, cost: torch.Tensor, module, args):
        if self._phase is None:
            return
        n = args[0].shape[0]
        self._add(f"{self._phase}.forward", n * cost)
        if torch.is_grad_enabled():
            self._add(f"{self._phase}.backward", 2 * n * cost)

    def _add(self, key: str, value: torch.Tensor) -> None:
        if key not in self.totals:
            self.totals[key] = torch.zeros((), dtype=torch.float64, device=self.device)
        self.totals[key] += value

    def snapshot(self) -> dict[str, float]:
        """Totals by component; `total` the training FLOPs, `measure` what only measured (`measure.*`
        components, left out of `total`). One host sync."""
        keys = sorted(self.totals)
        values = torch.stack([self.totals[k] for k in keys]).tolist() if keys else []
        out = dict(zip(keys, values))
        out["total"] = sum(v for k, v in zip(keys, values) if not k.startswith("measure."))
        out["measure"] = sum(v for k, v in zip(keys, values) if k.startswith("measure."))
        return out

    def state_dict(self) -> dict:
        return dict(totals=dict(self.totals))

    def load_state_dict(self, state: dict) -> None:
        self.totals = dict(state["totals"])


def training_components(snapshot: dict[str, float]) -> dict[str, float]:
    """A `FlopMeter.snapshot`'s training components: its totals and the measurement components left out."""
    return {k: v for k, v in snapshot.items() if k not in ("total", "measure") and not k.startswith("measure.")}


def sparse_model_bytes(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, int]:
    """Model size dense, and sparse as nonzeros + a one-bit-per-weight bitmap for masked layers."""
    dense = sparse = 0
    for name, p in model.named_parameters():
        size = p.numel() * p.element_size()
        dense += size
        if name in masks:
            nnz = int(masks[name].sum())  # host sync: task end only
            sparse += nnz * p.element_size() + (p.numel() + 7) // 8
        else:
            sparse += size
    return dict(model_dense=dense, model_sparse=sparse)


def peak_memory_bytes(device: torch.device) -> dict:
    """The process's peak: CUDA's allocator peak on a GPU, the peak resident set size on a CPU."""
    if device.type == "cuda":
        return dict(peak=torch.cuda.max_memory_allocated(device), peak_kind="cuda max_memory_allocated")
    return dict(peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, peak_kind="process max RSS")


class _Phase:
    """`FlopMeter.phase`'s context: sets the component and restores the enclosing one."""

    __slots__ = ("meter", "inner", "outer")

    def __init__(self, meter: FlopMeter, name: str, dense_weight_grad: bool):
        self.meter, self.inner = meter, (name, dense_weight_grad)

    def __enter__(self):
        self.outer = self.meter._phase, self.meter._dense_wgrad
        self.meter._phase, self.meter._dense_wgrad = self.inner

    def __exit__(self, *exc):
        self.meter._phase, self.meter._dense_wgrad = self.outer
