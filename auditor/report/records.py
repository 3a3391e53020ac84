"""The report's schema: one typed record per section, the schema version, and what a check's
status and the verdict are.

Each section of the JSON report is a :class:`Record` class whose fields carry their type,
unit and meaning (``docs/report-format.md`` is generated from them: ``python -m
auditor.report.reference``).  :meth:`Record.parse` reads a section leniently (a key it does not
declare is kept, in place; a value of an unexpected type is kept as it is, for the renderers to
show as n/a); :meth:`Record.to_dict` gives the same dict back, key order included, so a report
read and written again is byte-identical.  Fields marked ``check`` are what the renderers,
``diff`` and ``--baseline`` rely on: :func:`check_report` refuses a report where one is missing
(``required``) or of the wrong type, with one line naming it.
"""

from __future__ import annotations

import json
import math
import typing
from typing import Any, Literal

#: the schema version this tool writes and reads
SCHEMA_VERSION = 1
#: the deepest nesting a report may have (real ones stay under 10)
MAX_REPORT_DEPTH = 40


class Num(float):
    """Type marker: a JSON number, or ``"inf"`` / ``"-inf"`` (JSON has no spelling for infinities)."""


#: type marker: any JSON value
JSON = Any
Verdict = Literal["PASS", "FAIL", "INCOMPLETE"]


class Field:
    """A declared field of a record: its name (set when the record class is made) and its
    ``metadata`` (``doc``, ``unit``, ``check``, ``null``, ``volatile``)."""

    __slots__ = ("name", "metadata")

    def __init__(self, metadata: dict):
        self.name = ""
        self.metadata = metadata


def fld(doc: str, unit: str = "", *, check: str = "", null: bool = False, volatile: bool = False) -> Any:
    """A record field: ``doc`` its meaning, ``unit`` (SI), ``check`` ``"required"`` or
    ``"optional"`` (checked when present) for the fields the renderers rely on, ``null``: may be
    null, ``volatile``: differs between identical runs (timestamps, durations)."""
    return Field({"doc": doc, "unit": unit, "check": check, "null": null, "volatile": volatile})


class Record:
    """A section of the report: subclasses declare its fields as ``name: type = fld(...)`` (a
    field redeclared in a subclass keeps its place); a field the section lacks reads None.
    (Plain classes, not dataclasses: the CLI imports the records at start, and generating an
    ``__init__`` per section costs more than the rest of the module.)"""

    #: one line on what the section is (the docs' heading text)
    ABOUT: typing.ClassVar[str] = ""
    _fields: typing.ClassVar[tuple] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        fields = {f.name: f for f in cls._fields}
        for k, v in list(vars(cls).items()):
            if isinstance(v, Field):
                v.name = k
                fields[k] = v
                setattr(cls, k, None)  # what an absent field reads
        cls._fields = tuple(fields.values())

    def __init__(self, _keys: tuple = (), _extra: dict | None = None, **values):
        #: the keys of the dict it was read from, in order (what :meth:`to_dict` writes back)
        self._keys = tuple(_keys)
        #: the keys it does not declare (a newer report's sections), kept as read
        self._extra = dict(_extra or {})
        types = self.types()
        for k, v in values.items():
            if k not in types:
                raise TypeError(f"{type(self).__name__} has no field {k!r}")
            setattr(self, k, v)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self._fields if getattr(self, f.name) is not None)
        return f"{type(self).__name__}({shown})"

    @classmethod
    def declared(cls) -> list[Field]:
        return list(cls._fields)

    @classmethod
    def types(cls) -> dict[str, Any]:
        hints = _HINTS.get(cls)
        if hints is None:
            every = typing.get_type_hints(cls)
            hints = _HINTS[cls] = {f.name: every[f.name] for f in cls._fields}
        return hints

    @classmethod
    def parse(cls, d: dict) -> "Record":
        """The record of section ``d`` (lenient: see the module doc)."""
        types = cls.types()
        kw, extra = {}, {}
        for k, v in d.items():
            if k in types:
                kw[k] = _parse(types[k], v)
            else:
                extra[k] = v
        return cls(_keys=tuple(d), _extra=extra, **kw)

    @classmethod
    def of(cls, v) -> "Record":
        """``v`` when it is a ``cls`` record, else an empty one (every field None): renderers read
        a malformed section as missing values instead of failing."""
        return v if isinstance(v, cls) else cls()

    @classmethod
    def list_of(cls, v) -> list:
        """The ``cls`` records of list ``v`` (nothing when ``v`` is no list; other entries left out)."""
        return [x for x in v if isinstance(x, cls)] if isinstance(v, list) else []

    def extra(self) -> dict:
        """The keys this record does not declare (a newer report's sections), in order."""
        return dict(self._extra)

    def __bool__(self) -> bool:
        """False for an empty section (``{}``), as the dict was."""
        return bool(self._keys or self._extra) or any(getattr(self, f.name) is not None for f in self.declared())

    def has(self, name: str) -> bool:
        """Whether the section has the key ``name`` (a null value counts: it is there)."""
        return name in self._keys

    def to_dict(self) -> dict:
        """The section as the report dict it was read from (key order included)."""
        types = self.types()
        keys = self._keys or tuple(k for k in types if getattr(self, k) is not None) + tuple(self._extra)
        return {k: _dump(getattr(self, k)) if k in types else self._extra[k] for k in keys}


_HINTS: dict[type, dict[str, Any]] = {}


def _record_type(tp) -> type | None:
    return tp if isinstance(tp, type) and issubclass(tp, Record) else None


def _parse(tp, v):
    if _record_type(tp):
        return tp.parse(v) if isinstance(v, dict) else v
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list and args and _record_type(args[0]) and isinstance(v, list):
        return [args[0].parse(x) if isinstance(x, dict) else x for x in v]
    if origin is dict and len(args) == 2 and _record_type(args[1]) and isinstance(v, dict):
        return {k: args[1].parse(x) if isinstance(x, dict) else x for k, x in v.items()}
    return v


def _dump(v):
    if isinstance(v, Record):
        return v.to_dict()
    if isinstance(v, list):
        return [_dump(x) for x in v]
    if isinstance(v, dict):
        return {k: _dump(x) for k, x in v.items()}
    return v


# ----------------------------------------------------------------------------------------------
# the sections (in the order of the report)
# ----------------------------------------------------------------------------------------------

_REQ, _OPT = "required", "optional"


class Stats(Record):
    ABOUT = "a distribution over inputs"
    mean: Num = fld("mean", check=_REQ)
    worst: Num = fld("the worst (largest) value", check=_REQ)
    min: Num = fld("the smallest value")
    p50: Num = fld("median")
    p95: Num = fld("95th percentile", check=_REQ)


class MeanStats(Stats):
    ABOUT = "a distribution over inputs (only `mean` is relied on)"
    worst: Num = fld("the worst value")
    p95: Num = fld("95th percentile")


class MeanWorst(Record):
    ABOUT = "over the verified attacked inputs"
    mean: Num = fld("mean")
    worst: Num = fld("the worst (largest) value")


class Quantiles(Record):
    ABOUT = "a quantile summary"
    count: int = fld("values summarised")
    n_infinite: int = fld("of them infinite")
    mean: Num = fld("mean of the finite values")
    quantiles: dict = fld("quantile (\"0\", \"0.05\", ..., \"1\") -> value")


class Tool(Record):
    ABOUT = "the tool that wrote the report"
    name: str = fld("`auditor`")
    version: str = fld("its version", check=_REQ)


class Model(Record):
    ABOUT = "the audited model"
    path: str = fld("the model file as given", check=_REQ)
    sha256: str = fld("SHA-256 of the model as loaded (after folding and any upgrade)", check=_REQ)
    opset: int = fld("ONNX opset", check=_REQ)
    load_notes: list[str] = fld("what loading changed that the results depend on (a float16 model audited in "
                                "float32; an int8 QDQ model's gradients straight-through)")


class ScenarioEcho(Record):
    ABOUT = "the scenario as validated (every field, defaults filled in; see docs/reference.md)"
    name: str = fld("its name", check=_REQ)
    description: str = fld("what it is for")
    seed: int = fld("its seed")
    path: str = fld("its folder (relative paths in it are resolved from here)")


class DataInfo(Record):
    ABOUT = "the audit data"
    description: str = fld("where the inputs come from", check=_REQ)
    count: int = fld("inputs audited", check=_REQ)
    labels: bool = fld("whether they are labelled")
    shape: list[int] = fld("the shape of one input")


class Check(Record):
    ABOUT = "one check of a profile"
    name: str = fld("the check (a scenario `checks:` or `regression:` key)", check=_REQ)
    profile: str = fld("the profile it ran on", check=_REQ)
    measured: Num = fld("the measured value; null = not measured (a failure)", check=_REQ, null=True)
    threshold: Num = fld("the scenario's threshold", check=_REQ, null=True)
    op: str = fld("`<=` (a maximum) or `>=` (a minimum)", check=_REQ)
    passed: bool = fld("whether it holds", check=_REQ)
    detail: str = fld("what the figure is, or why it is not decided", check=_OPT, null=True)
    decided: bool = fld("false when the time budget stopped what measures it (`passed` is then false, but it is "
                        "no failure of the model)")

    @property
    def status(self) -> str:
        return check_status(self)


class Warning_(Record):
    ABOUT = "a sanity warning (never changes the verdict)"
    code: str = fld("`clean_accuracy_near_chance`, `robustness_at_chance`, `baseline_without_regression`, "
                    "`baseline_other_scenario`, `baseline_scenario_changed`, `baseline_other_model`, "
                    "`baseline_other_profiles`, `baseline_other_seed`")
    profile: str = fld("the profile it concerns (null: the whole audit)", null=True)
    message: str = fld("one line")


class Baseline(Record):
    ABOUT = "with `--baseline`: the old report the regression checks compare with"
    path: str = fld("the old report file")
    model_sha256: str = fld("its model's SHA-256")
    model_path: str = fld("its model path")
    scenario: str = fld("its scenario name")
    verdict: str = fld("its verdict")
    profiles: dict = fld("profile name -> its `summary` (the Markdown's deltas)")


class Budget(Record):
    ABOUT = "with `--max-seconds`: what the time budget stopped"
    max_seconds: Num = fld("the budget", "s")
    cut_short: list[str] = fld("`profile:search` stopped or never started")
    cut_short_units: list[str] = fld("the units of work stopped (`profile/energy[0]:whitebox/1`; see "
                                     "auditor.pipeline.units)")


class Timing(Record):
    ABOUT = "when the audit ran (volatile)"
    started: str = fld("ISO 8601 start time", volatile=True)
    seconds: Num = fld("wall time of the audit", "s", volatile=True)


class Density(Record):
    ABOUT = ("model-wide density: the element-weighted mean over `tensors` of the fraction of non-zero "
             "elements, what a zero-skipping machine can skip")
    mean: Num = fld("mean over the clean inputs", "fraction", check=_REQ)
    worst: Num = fld("the largest", "fraction", check=_REQ)
    min: Num = fld("the smallest", "fraction")
    p50: Num = fld("median", "fraction")
    p95: Num = fld("95th percentile", "fraction")
    counted: str = fld("`activations`: the outputs of activation ops that reach a compute layer's data input "
                       "through data-path ops (a gate such as squeeze-excite's Sigmoid is not counted); "
                       "`layer_inputs`: the data inputs of the Conv/ConvTranspose/Gemm/MatMul layers", check=_REQ)
    tensors: list[str] = fld("the tensors counted")
    rule: str = fld("`counted` in words")


class LayerCost(Record):
    ABOUT = "one compute layer of the slowest clean input"
    layer: str = fld("node name", check=_REQ)
    op: str = fld("op type", check=_REQ)
    macs: int = fld("multiply-accumulates")
    input_density: Num = fld("density of its data input", "fraction", check=_REQ)
    cycles: int = fld("cycles on the profile's machine", "cycles", check=_REQ)
    dense_cycles: int = fld("cycles without zero skipping", "cycles", check=_REQ)
    energy_j: Num = fld("energy", "J", check=_REQ)


class WorstInput(Record):
    ABOUT = "the slowest clean input"
    index: int = fld("its index in the audit data", check=_REQ)
    layers: list[LayerCost] = fld("per compute layer", check=_REQ)


class Clean(Record):
    ABOUT = "the clean evaluation of a profile"
    accuracy: Num = fld("top-1 accuracy on the audit data (null without labels)", "fraction", check=_REQ, null=True)
    classes: int = fld("classes the model outputs (chance = 1/classes)")
    density: Density = fld("model-wide density", check=_REQ)
    tensor_density: dict = fld("mean density of every probed tensor", "fraction")
    latency_s: Stats = fld("latency per input", "s", check=_REQ)
    energy_j: Stats = fld("energy per input", "J", check=_REQ)
    edp: Stats = fld("energy-delay product per input", "J·s", check=_REQ)
    cycles: Stats = fld("cycles per input", "cycles")
    dense_cycles: Stats = fld("cycles per input without zero skipping", "cycles")
    speedup_over_dense: MeanStats = fld("dense cycles over cycles", "ratio", check=_REQ)
    energy_breakdown_j: dict = fld("mean energy per event class (e.g. mac, buffer, offchip, static)", "J")
    layer_shares: dict = fld("per compute layer `{runtime, energy}` share (the W_l of the white-box search)",
                             "fraction")
    worst_input: WorstInput = fld("the slowest clean input, per layer", check=_REQ)
    per_input: dict = fld("per input: `latency_s[]`, `energy_j[]`, `density[]`, `layer_density{layer: []}`")


class Summary(Record):
    ABOUT = "the numbers the checks read"
    clean_mean_latency_s: Num = fld("mean clean latency", "s")
    clean_mean_energy_j: Num = fld("mean clean energy", "J")
    worst_latency_s: Num = fld("worst over clean and verified attacked inputs", "s", check=_REQ)
    worst_energy_j: Num = fld("worst over clean and verified attacked inputs", "J", check=_REQ)
    worst_edp: Num = fld("worst energy-delay product", "J·s")
    worst_density: Num = fld("worst over clean and verified attacked inputs", "fraction", check=_REQ)
    clean_accuracy: Num = fld("clean top-1 accuracy", "fraction", check=_OPT, null=True)
    latency_increase: Num = fld("the largest over the searches (see `attacks[]`)", "ratio")
    energy_increase: Num = fld("the largest over the searches", "ratio")


class SearchLayer(Record):
    ABOUT = "one compute layer, clean vs attacked: where the sparsity was lost"
    layer: str = fld("node name")
    density_clean: Num = fld("mean density of its data input, clean", "fraction")
    density_attacked: Num = fld("the same on the verified attacked inputs", "fraction")
    cycles_clean: Num = fld("mean cycles, clean", "cycles")
    cycles_attacked: Num = fld("mean cycles, attacked", "cycles")


class Uniformity(Record):
    ABOUT = "input uniformity (Müller & Quiring): mean over inputs of the share of the most common pixel value"
    clean: Num = fld("of the attacked clean inputs", "fraction")
    attacked: Num = fld("of the verified attacked inputs (null when none)", "fraction", null=True)


class DefenceWhatIf(Record):
    ABOUT = ("an input defence of the scenario as a what-if; the defence's own parameters (`bits`, `quality`, "
             "`budget`, ...) follow `defence`")
    defence: str = fld("the defence (`quantize`, `jpeg`, `median`, `threshold`, ...)")
    clean_label_agreement: Num = fld("clean inputs whose label the defence keeps", "fraction")
    clean_latency_change: Num = fld("mean clean latency defended over undefended (latency searches)", "ratio")
    clean_energy_change: Num = fld("mean clean energy defended over undefended (energy searches)", "ratio")
    clean_accuracy: Num = fld("clean accuracy without the defence (labelled data)", "fraction")
    defended_clean_accuracy: Num = fld("clean accuracy with it", "fraction")
    clean_accuracy_loss: Num = fld("clean accuracy the defence costs (read when present)", "fraction")
    recovery: Num = fld("share of the attack's cost increase the defence removes: 1 fully recovered, 0 no effect, "
                        "< 0 worse (null when no input was verified)", "fraction", null=True)


class PreactivationShift(Record):
    ABOUT = ("per pre-activation tensor: channel statistics clean vs attacked (Müller & Quiring Fig. 7), "
             "averaged over inputs")
    std_clean: Num = fld("median over channels of the channel-wise std, clean")
    std_attacked: Num = fld("the same, attacked (tighter for sponge examples)")
    abs_mean_clean: Num = fld("median |channel mean|, clean")
    abs_mean_attacked: Num = fld("the same, attacked (closer to zero for sponge examples)")
    positive_clean: Num = fld("share of positive values, clean", "fraction")
    positive_attacked: Num = fld("the same, attacked", "fraction")
    std_ratio: Num = fld("std_attacked / std_clean", "ratio")
    positive_gain: Num = fld("positive_attacked − positive_clean", "fraction")
    above_theta_clean: Num = fld("share above the channel's zero threshold, clean (with thresholds)", "fraction")
    above_theta_attacked: Num = fld("the same, attacked", "fraction")


class SearchWorstInput(Record):
    ABOUT = "the costliest verified attacked input"
    index: int = fld("the clean input it started from")
    latency_s: Num = fld("its latency", "s")
    energy_j: Num = fld("its energy", "J")
    density: Num = fld("its density", "fraction")
    files: list[str] = fld("with `--save-inputs`: the saved `.npy` and `.png`")


class EnergySearch(Record):
    ABOUT = ("one `energy_attacks` entry. A search cut short by the budget is `{search, cut_short: true}`; one "
             "not run because the cost does not depend on the input has `skipped`, a `note`, and increases 1.0")
    search: str = fld("the search", check=_REQ)
    params: dict = fld("its parameters as used")
    cost: str = fld("`latency` or `energy`: what it maximises")
    count: int = fld("inputs attacked")
    queries: int = fld("model queries")
    seconds: Num = fld("its run time", "s", volatile=True)
    seconds_per_input: Num = fld("run time per input", "s", volatile=True)
    verified: int = fld("inputs that passed the independent re-verification (label kept where required, inside "
                        "the ε ball, inside the pixel range)")
    rejected: int = fld("inputs that failed it")
    label_kept_rate: Num = fld("verified inputs that keep their label", "fraction")
    perturbation: dict = fld("`{l2, linf, eps, norm}` (`eps` as used: with `eps: auto` also `rule` and "
                             "`per_pixel_rms`)")
    changed: int = fld("inputs the search changed")
    note: str = fld("e.g. when it changed none")
    density_clean: Num = fld("mean density of the clean inputs", "fraction")
    density_attacked: Num = fld("mean density of the verified attacked inputs", "fraction")
    density_attacked_worst: Num = fld("the largest of them", "fraction")
    latency_s: MeanWorst = fld("of the verified inputs", "s")
    energy_j: MeanWorst = fld("of the verified inputs", "J")
    edp: MeanWorst = fld("of the verified inputs", "J·s")
    clean_latency_s: MeanWorst = fld("of the same inputs clean", "s")
    clean_energy_j: MeanWorst = fld("of the same inputs clean", "J")
    latency_increase: Num = fld("`increase_of: input`: the largest ratio of a verified attacked input to the same "
                                "input clean (1.0 unchanged); `increase_of: mean_clean`: the worst found over the "
                                "mean clean input (searches that make their own inputs)", "ratio")
    energy_increase: Num = fld("the same for energy", "ratio")
    increase_of: str = fld("`input` or `mean_clean`: what the increases compare with")
    mean_latency_ratio: Num = fld("mean attacked over mean clean latency of the same inputs", "ratio")
    mean_energy_ratio: Num = fld("the same for energy", "ratio")
    sparsity_ratio: Num = fld("(1 − clean density) / (1 − attacked density)", "ratio")
    layers: list[SearchLayer] = fld("per compute layer, clean vs attacked")
    per_input: dict = fld("per verified input: `latency_s[]`, `energy_j[]`, `density[]`, `layer_density{}`")
    uniformity: Uniformity = fld("input uniformity, clean vs attacked")
    transfer: dict = fld("with a surrogate: `{kendall_tau_density, p_value}` of per-input densities")
    defences: list[DefenceWhatIf] = fld("the scenario's input defences as what-ifs")
    preactivation_shift: dict[str, PreactivationShift] = fld("pre-activation tensor -> its shift")
    worst_input: SearchWorstInput = fld("the costliest verified attacked input")
    cut_short: bool = fld("true when the time budget stopped it")
    skipped: str = fld("why it did not run (`input-independent cost`)")


class ZeroThreshold(Record):
    ABOUT = ("zero thresholds of one BatchNormalization feeding a ReLU: per channel, the BN input above which "
             "the ReLU output is non-zero")
    bn: str = fld("the BatchNormalization node")
    relu: str = fld("the Relu node it feeds")
    via: str = fld("`direct`, or `add` (BN -> Add(skip) -> Relu, as in residual blocks)")
    channels: int = fld("channels")
    mean: Num = fld("mean threshold over the finite ones")
    median: Num = fld("median threshold")
    min: Num = fld("smallest threshold")
    max: Num = fld("largest threshold")
    negative_share: Num = fld("channels with a negative threshold", "fraction")
    flipped_channels: int = fld("channels with γ < 0 (the ReLU fires below the threshold)")


class Example(Record):
    ABOUT = "a saved adversarial example (`--save-inputs`), verified by an independent forward pass"
    index: int = fld("the input's index in the audit data")
    label: int = fld("its label")
    prediction: int = fld("the prediction of the independent forward pass on the adversarial input")
    l2: Num = fld("its L2 perturbation")
    linf: Num = fld("its Linf perturbation")
    files: dict = fld("`{clean, adversarial, difference}` -> `[.npy, .png]` (raw pixels; the difference PNG is "
                      "mid-grey where nothing changed)")


class MinimalPerturbation(Record):
    ABOUT = "a minimisation attack's smallest perturbations (medians count failures as infinitely far)"
    n_attacked: int = fld("inputs attacked (clean-correct)")
    n_success: int = fld("inputs it found a perturbation for (verified)")
    n_unverified: int = fld("perturbations the check refused")
    l0: Quantiles = fld("L0 of the found perturbations")
    l2: Quantiles = fld("L2 of the found perturbations")
    linf: Quantiles = fld("Linf of the found perturbations")
    mse: Quantiles = fld("mean squared error of the found perturbations")
    psnr: Quantiles = fld("PSNR of the found perturbations", "dB")
    median_distance: Num = fld("median distance in the attack's norm, failures infinite")
    median_l2: Num = fld("median L2, failures infinite")
    examples: list[Example] = fld("with `--save-inputs`: the most convincing found examples")


class EvasionResult(Record):
    ABOUT = "one ε of an evasion attack (only adversarial examples confirmed by an independent forward pass count)"
    epsilon: Num = fld("the perturbation budget", check=_REQ)
    robust_accuracy: Num = fld("accuracy under the attack", "fraction", check=_REQ)
    attack_success_rate: Num = fld("share of the clean-correct inputs fooled", "fraction", check=_REQ)
    n_success: int = fld("inputs fooled (verified)")
    n_attacked: int = fld("inputs attacked (clean-correct)")
    n_unverified: int = fld("examples the attack claimed that the check refused")
    margin: dict = fld("quantile summary of the top-1 − runner-up logit margin")
    label_margin: dict = fld("quantile summary of the label − best other logit margin")
    queries: dict = fld("model queries: `per_input`, `to_success` summaries")
    examples: list[Example] = fld("with `--save-inputs`: the (at most three) verified examples with the smallest L2")


class EvasionAttack(Record):
    ABOUT = "one `robustness.attacks` entry"
    attack: str = fld("the attack", check=_REQ)
    norm: str = fld("`linf`, `l2`, `l1` or `l0`", check=_REQ)
    params: dict = fld("its parameters as used")
    targeted: bool = fld("targeted (a label other than the true one)")
    minimal: bool = fld("a minimisation attack (smallest perturbation, no ε)")
    query_based: bool = fld("a black-box attack that queries the model")
    seconds: Num = fld("its run time", "s", volatile=True)
    queries: dict = fld("model queries (`per_input` summary)")
    results: list[EvasionResult] = fld("per ε", check=_OPT)
    minimal_perturbation: MinimalPerturbation = fld("minimisation attacks: the smallest perturbations")
    ensemble: list[dict] = fld("ensembles: per ε the members and the inputs each broke")


class Robustness(Record):
    ABOUT = "the evasion attacks of the scenario's `robustness:`"
    n: int = fld("inputs attacked")
    count: int = fld("inputs attacked", check=_OPT)
    clean_accuracy: Num = fld("clean accuracy on them", "fraction", check=_OPT, null=True)
    clean_margin: Quantiles = fld("top-1 − runner-up logit margin, clean", "logit")
    clean_label_margin: Quantiles = fld("label − best other logit margin, clean", "logit")
    attacks: list[EvasionAttack] = fld("per attack", check=_OPT)
    seconds: Num = fld("run time", "s", volatile=True)
    examples: list[dict] = fld("saved adversarial examples (read when present; see `results[].examples`)")


class Perturbation(Record):
    ABOUT = "the perturbations of the successful examples"
    l0: Quantiles = fld("L0 (changed elements)")
    l2: Quantiles = fld("L2")
    linf: Quantiles = fld("Linf")
    mse: Quantiles = fld("mean squared error")
    psnr: Quantiles = fld("PSNR", "dB")


class ApproxClean(Record):
    ABOUT = "the exact and the approximate model on the clean inputs"
    exact_accuracy: Num = fld("exact model's accuracy", "fraction")
    approx_accuracy: Num = fld("approximate model's accuracy", "fraction")
    agreement: Num = fld("inputs both give the same top-1", "fraction")
    max_abs_logit_difference: Num = fld("largest |logit difference|", "logit")


class TransferResult(Record):
    ABOUT = ("one ε of a transfer attack; rates over the inputs both models classify correctly (`epsilon` null for "
             "a minimisation attack)")
    epsilon: Num = fld("the budget", null=True)
    n_attacked: int = fld("inputs attacked")
    source_success_rate: Num = fld("examples that fool the model they were crafted on", "fraction")
    exact_success_rate: Num = fld("examples that fool the exact model", "fraction")
    approx_success_rate: Num = fld("examples that fool the approximate model", "fraction")
    transfer_rate_exact: Num = fld("of the source's successes, share that fool the exact model", "fraction")
    transfer_rate_approx: Num = fld("of the source's successes, share that fool the approximate model", "fraction")
    perturbation: Perturbation = fld("of the successful examples")


class AttackEcho(Record):
    ABOUT = "an evasion attack as it ran"
    attack: str = fld("the attack")
    norm: str = fld("its norm")
    params: dict = fld("its parameters as used")
    targeted: bool = fld("targeted")
    minimal: bool = fld("a minimisation attack")


class TransferAttack(AttackEcho):
    ABOUT = "an attack crafted on one model (exact, or the surrogate) and run on the approximate one"
    seconds: Num = fld("run time", "s", volatile=True)
    queries_per_input: Num = fld("model queries per input")
    results: list[TransferResult] = fld("per ε")


class SideResult(Record):
    ABOUT = "one model's side of an attack run on both"
    n_attacked: int = fld("its clean-correct inputs attacked")
    success_rate: Num = fld("of them fooled (verified)", "fraction")
    perturbation: Perturbation = fld("of the successful examples")


class BothModelsResult(Record):
    ABOUT = "one ε of an attack run on each model"
    epsilon: Num = fld("the budget", null=True)
    approx: SideResult = fld("on the approximate model")
    exact: SideResult = fld("on the exact model")


class BothModelsAttack(AttackEcho):
    ABOUT = "an attack run on each model (white-box with BPDA gradients on the approximate one, or query-based)"
    query_based: bool = fld("query-based")
    seconds: dict = fld("run time per model (`approx`, `exact`)", "s", volatile=True)
    queries_per_input: dict = fld("model queries per input, per model (`approx`, `exact`)")
    results: list[BothModelsResult] = fld("per ε")


class MinimalSide(Record):
    ABOUT = "the minimal perturbations one model needs"
    n_attacked: int = fld("inputs attacked")
    n_success: int = fld("inputs a perturbation was found for")
    success_rate: Num = fld("n_success / n_attacked", "fraction")
    median_l2: Num = fld("median L2")
    mean_l2: Num = fld("mean L2")
    median_mse: Num = fld("median MSE")
    mean_mse: Num = fld("mean MSE")
    median_psnr: Num = fld("median PSNR", "dB")
    mean_psnr: Num = fld("mean PSNR", "dB")


class PairedMinimal(Record):
    ABOUT = "the inputs a perturbation was found for on both models, paired"
    n: int = fld("inputs found on both")
    mean_l2_difference: Num = fld("mean approximate − exact L2")
    l2_ratio_median: Num = fld("median approximate / exact L2", "ratio")
    mse_ratio: Num = fld("approximate / exact MSE", "ratio")
    psnr_drop_db: Num = fld("exact − approximate PSNR", "dB")


class MinimalComparison(Record):
    ABOUT = "a minimisation attack on each model: the perturbation each needs"
    attack: str = fld("the attack")
    norm: str = fld("its norm")
    params: dict = fld("its parameters as used")
    seconds: dict = fld("run time per model", "s", volatile=True)
    approx: MinimalSide = fld("on the approximate model")
    exact: MinimalSide = fld("on the exact model")
    paired: PairedMinimal = fld("paired over the inputs found on both")


class WorstCase(Record):
    ABOUT = "the union of every attack on the approximate model at one budget"
    norm: str = fld("the norm")
    epsilon: Num = fld("the budget")
    success_rate: Num = fld("inputs some attack fooled", "fraction")
    robust_accuracy: Num = fld("accuracy under the union", "fraction")


class Strongest(Record):
    ABOUT = "the strongest attack on the approximate model"
    source: str = fld("where it came from (`transfer`, `substitute`, `whitebox_bpda`, `query`)")
    attack: str = fld("the attack")
    norm: str = fld("its norm")
    epsilon: Num = fld("its budget", null=True)
    bounded: bool = fld("whether the budget bounds it (false for a minimisation attack)")
    success_rate: Num = fld("its success rate", "fraction")
    n_success: int = fld("inputs fooled")
    n_attacked: int = fld("inputs attacked")


class ModelQueries(Record):
    ABOUT = "model queries of the section"
    exact: int = fld("on the exact model")
    approx: int = fld("on the approximate model")


class Approx(Record):
    ABOUT = ("exact vs approximate multiplier (a profile `approx:` and a scenario `approx:` section): "
             "Defensive Approximation's claims measured")
    n: int = fld("inputs")
    count: int = fld("inputs")
    multiplier: str = fld("the approximate multiplier")
    approx_layers: list[str] = fld("the layers it runs")
    clean: ApproxClean = fld("the clean inputs on each model")
    margins: dict = fld("per model (`exact`, `approx`): `confidence`, `top_margin`, `label_margin` quantile "
                        "summaries, `confidence_above_0.8`; `approx_more_confident`")
    transfer: list[TransferAttack] = fld("attacks crafted on the exact model, run on the approximate one")
    substitute: list[TransferAttack] = fld("black-box substitute: attacks crafted on the surrogate")
    whitebox_bpda: list[BothModelsAttack] = fld("white-box attacks with BPDA gradients on each model")
    query: list[BothModelsAttack] = fld("query attacks on each model")
    perturbation: list[MinimalComparison] = fld("minimal perturbation each model needs")
    worst_case: dict[str, WorstCase] = fld("`norm@ε` -> the union of every attack at that budget")
    strongest: Strongest = fld("the strongest attack on the approximate model")
    candidates: list[dict] = fld("every attack candidate on the approximate model")
    queries: ModelQueries = fld("model queries")
    seconds: Num = fld("run time", "s", volatile=True)


class MaskingCheck(Record):
    ABOUT = "one check of the gradient-masking diagnosis"
    check: str = fld("its name")
    fired: bool = fld("whether it found a sign of masking")
    evidence: str = fld("the figures it read")
    stronger: JSON = fld("`naive_weaker_than_adaptive`: the adaptive attacks")
    weaker: JSON = fld("`naive_weaker_than_adaptive`: the naive attacks")


class Masking(Record):
    ABOUT = "the gradient-masking diagnosis (`robustness.masking`)"
    epsilon: Num = fld("the diagnosis ε")
    large_epsilon: Num = fld("the large ε of the unbounded-attack check")
    norm: str = fld("its norm")
    n: int = fld("inputs")
    n_attacked: int = fld("inputs attacked (clean-correct)")
    tolerance: Num = fld("the tolerance of the checks")
    steps: int = fld("PGD steps")
    n_queries: int = fld("Square's query budget")
    success: dict = fld("attack success per attack at ε (`pgd_ce`, `pgd_margin`, `square`, `transfer_from_exact`, "
                        "...)", "fraction")
    checks: list[MaskingCheck] = fld("every check and its evidence")
    fired: list[str] = fld("the checks that fired")
    minimal: dict = fld("approximate hardware: per model, DeepFool's minimal perturbation `{median_l2, l2, mse, psnr, "
                        "n_success, n_attacked}`")
    verdict: str = fld("`gradient masking` or `no sign of gradient masking`")
    count: int = fld("inputs diagnosed")


class ProfileTiming(Record):
    ABOUT = "the seconds this profile's units of work ran (volatile)"
    seconds: Num = fld("work time", "s", volatile=True)
    stages: dict = fld("per stage (`clean`, `energy_attacks`, `robustness`, `approx`, `masking`, `statistics`); "
                       "a JUnit testcase's time is its check's share of its stage", "s", check=_OPT, volatile=True)


class Profile(Record):
    ABOUT = "one `--hw` profile, in order"
    name: str = fld("from the profile file", check=_REQ)
    path: str = fld("the profile file")
    cost_model: str = fld("the cost model", check=_REQ)
    description: str = fld("from the profile file")
    profile: dict = fld("the profile as validated (params with defaults filled in, `reshape`, `approx`)", check=_OPT)
    notes: list[str] = fld("how the logits were read (a final Softmax skipped, logits flattened; `warning: ...` "
                           "for probabilities treated as logits)")
    clean: Clean = fld("the clean evaluation (absent when the budget ended before it did)", check=_REQ)
    attacks: list[EnergySearch] = fld("one per `energy_attacks` entry", check=_OPT)
    zero_thresholds: list[ZeroThreshold] = fld("per BatchNormalization feeding a ReLU (models with BN)")
    robustness: Robustness = fld("with `robustness:`", check=_OPT)
    masking: Masking = fld("with `robustness.masking`")
    approx: Approx = fld("with a profile and a scenario `approx:` section")
    summary: Summary = fld("the numbers the checks read", check=_REQ)
    cut_short: list[str] = fld("what `--max-seconds` stopped (searches, `robustness`, `approx`, `masking`; `clean`: "
                               "the profile then has no `clean` and every check is undecided)")
    checks: list[Check] = fld("this profile's checks", check=_OPT)
    timing: ProfileTiming = fld("work time per stage", check=_OPT, volatile=True)


class AuditReport(Record):
    ABOUT = "the report `auditor audit --format json` writes"
    #: checked before the other fields: a file without a verdict is refused as such first
    CHECK_FIRST = ("schema_version", "verdict")
    schema_version: int = fld(f"the schema version ({SCHEMA_VERSION}); a report of another version is refused",
                              check=_REQ)
    tool: Tool = fld("the tool that wrote it", check=_REQ)
    seed: int = fld("the seed every random choice used (the scenario's, or `--seed`)", check=_REQ)
    environment: dict = fld("what the audit ran with: `python`, `implementation`, `platform`, `packages`, `cpu`, "
                            "`cpu_count`, `cpus_usable`, `threads`, `jobs`, `numba_threads`, `numba_cache_dir`",
                            check=_OPT, volatile=True)
    model: Model = fld("the audited model", check=_REQ)
    scenario: ScenarioEcho = fld("the scenario as validated", check=_REQ)
    data: DataInfo = fld("the audit data", check=_REQ)
    profiles: list[Profile] = fld("one per `--hw`, in order", check=_REQ)
    baseline: Baseline = fld("with `--baseline`", check=_OPT)
    budget: Budget = fld("with `--max-seconds`", check=_OPT)
    warnings: list[Warning_] = fld("sanity warnings")
    checks: list[Check] = fld("every check of every profile", check=_REQ)
    verdict: Verdict = fld("`FAIL` when a decided check failed, else `INCOMPLETE` when the budget cut the audit "
                           "short, else `PASS` (exit code 1 / 4 / 0)", check=_REQ)
    timing: Timing = fld("when the audit ran", check=_OPT, volatile=True)


# ----------------------------------------------------------------------------------------------
# checks and the verdict
# ----------------------------------------------------------------------------------------------


def check_status(c) -> str:
    """PASS, FAIL or NOT DECIDED (cut short by the time budget before it could be measured);
    ``c`` a :class:`Check` or a check dict."""
    if isinstance(c, Record):
        decided, passed = (c.decided if c.has("decided") else True), c.passed
    else:
        decided, passed = c.get("decided", True), c.get("passed")
    if not decided:
        return "NOT DECIDED"
    return "PASS" if passed else "FAIL"


def verdict_of(checks: list, cut_short: bool = False) -> str:
    """FAIL when a decided check failed; INCOMPLETE when the time budget cut the audit short
    (or a check could not be decided) and nothing failed; PASS otherwise."""
    if any(check_status(c) == "FAIL" for c in checks):
        return "FAIL"
    if cut_short or any(check_status(c) == "NOT DECIDED" for c in checks):
        return "INCOMPLETE"
    return "PASS"


def sorted_checks(checks: list) -> list:
    """Failing checks first, then not decided, then passing (stable within each group); entries
    that are no check (malformed data) are left out."""
    order = {"FAIL": 0, "NOT DECIDED": 1, "PASS": 2}
    return sorted((c for c in checks if isinstance(c, (dict, Check))), key=lambda c: order[check_status(c)])


# ----------------------------------------------------------------------------------------------
# the check of a loaded report, derived from the fields marked ``check``
# ----------------------------------------------------------------------------------------------


class _Opt:
    """A report field that may be null."""

    def __init__(self, spec):
        self.spec = spec

    def __eq__(self, other):
        return isinstance(other, _Opt) and other.spec == self.spec

    def __repr__(self):
        return f"_Opt({self.spec!r})"


class _Maybe:
    """A key that may be absent (its value, when present, must match)."""

    def __init__(self, key: str):
        self.key = key

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Maybe) and other.key == self.key

    def __repr__(self):
        return f"_Maybe({self.key!r})"


_NUM = "number"


def _type_spec(tp):
    rec = _record_type(tp)
    if rec is not None:
        return spec_of(rec)
    if tp is Num:
        return _NUM
    if tp in (str, int, bool):
        return tp
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return tuple(args)
    if origin is list or tp is list:
        return [_type_spec(args[0])] if args else list
    return dict


def spec_of(cls: type[Record]):
    """The check of a section: its ``check`` fields (``dict`` when it has none)."""
    types = cls.types()
    spec = {}
    first = getattr(cls, "CHECK_FIRST", ())
    for f in sorted(cls.declared(), key=lambda f: f.name not in first):
        how = f.metadata["check"]
        if not how:
            continue
        sub = _type_spec(types[f.name])
        spec[f.name if how == "required" else _Maybe(f.name)] = _Opt(sub) if f.metadata["null"] else sub
    return spec or dict


#: the fields every renderer (text, JSON, JUnit, Markdown, HTML), ``diff`` and ``--baseline``
#: rely on; a report is checked against it when loaded
REPORT_SPEC = spec_of(AuditReport)


def _type_word(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number"}.get(type(v), "a value")


def check_report(data) -> str | None:
    """What makes ``data`` not a report this tool can render (None when it is one)."""
    if _depth_exceeds(data, MAX_REPORT_DEPTH):
        return f"nested deeper than {MAX_REPORT_DEPTH} levels"
    if not isinstance(data, dict):
        return f"the file holds {_type_word(data)}, not a mapping"
    missing = [k for k in ("schema_version", "profiles") if k not in data]
    if missing:
        return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    v = data["schema_version"]
    if v != SCHEMA_VERSION or isinstance(v, bool):
        return (f"schema_version {str(v)[:20]} is not the version this tool reads ({SCHEMA_VERSION}); "
                "render it with the auditor version that wrote it")
    return _check(data, REPORT_SPEC, "")


def _depth_exceeds(v, limit: int) -> bool:
    stack = [(v, 0)]
    while stack:
        x, d = stack.pop()
        if d > limit:
            return True
        if isinstance(x, dict):
            stack.extend((y, d + 1) for y in x.values())
        elif isinstance(x, list):
            stack.extend((y, d + 1) for y in x)
    return False


def _check(v, spec, path: str) -> str | None:
    where = path or "the top level"
    if isinstance(spec, _Opt):
        return None if v is None else _check(v, spec.spec, path)
    if spec is _NUM:
        ok = (isinstance(v, (int, float)) and not isinstance(v, bool)) or v in ("inf", "-inf")
        return None if ok else f"{where} is {_type_word(v)}, expected a number"
    if isinstance(spec, tuple):
        return None if v in spec else f"{where} is {str(v)[:20]!r}, expected {' or '.join(spec)}"
    if isinstance(spec, type):
        ok = isinstance(v, spec) and not (spec is int and isinstance(v, bool))
        return None if ok else f"{where} is {_type_word(v)}, expected {_type_word(spec())}"
    if isinstance(spec, list):
        if not isinstance(v, list):
            return f"{where} is {_type_word(v)}, expected a list"
        for i, x in enumerate(v):
            bad = _check(x, spec[0], f"{path}[{i}]")
            if bad:
                return bad
        return None
    if not isinstance(v, dict):
        return f"{where} is {_type_word(v)}, expected a mapping"
    for k, sub in spec.items():
        key = k.key if isinstance(k, _Maybe) else k
        if key not in v:
            if isinstance(k, _Maybe):
                continue
            return f"{(path + '.' if path else '') + key} is missing"
        bad = _check(v[key], sub, f"{path}.{key}" if path else key)
        if bad:
            return bad
    return None


# ----------------------------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------------------------


def jsonable(v):
    """``v`` with string keys, tuples as lists, numpy scalars as Python numbers, NaN as null and
    infinities as ``"inf"``/``"-inf"`` (JSON has no spelling for them); records as their dicts."""
    if isinstance(v, Record):
        return jsonable(v.to_dict())
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            return jsonable(v.item())
        except (ValueError, AttributeError):
            pass
    return v


def render_json(d, **_options) -> str:
    """The report (a dict or an :class:`AuditReport`) as the JSON document ``auditor audit --format json`` writes."""
    return json.dumps(jsonable(d), indent=2, sort_keys=False, allow_nan=False) + "\n"
