"""Scenario YAML: what data to audit, how to preprocess it, which searches to run, which checks gate.

Every field is declared here once (with its documentation and default); ``auditor validate``,
``auditor schema scenario`` and the audit itself all read these dataclasses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from . import schema
from .data import DataSpec
from .model.rewrite.preprocess import Preprocessing

#: the most inputs a search, an attack or the approximate audit may be asked to use
MAX_COUNT = 100_000


@dataclass
class EnergyAttack:
    """One energy-latency search (see `auditor/sponge`)."""

    search: str = schema.field(doc="search name: whitebox, blackbox, sponge_ga, sponge_lbfgs, uniform, top_natural")
    params: dict[str, Any] = schema.field(default_factory=dict, doc="hyper-parameters of the search (its defaults come from the paper it implements)")
    count: int = schema.field(16, doc="how many clean inputs to attack (or inputs to generate)", minimum=1, maximum=MAX_COUNT)
    cost: Literal["latency", "energy"] = schema.field("latency", doc="what the search maximises on each hardware profile")
    surrogate: Optional[str] = schema.field(None, doc="black-box search: surrogate ONNX model (relative to the scenario file)")
    defences: list[dict[str, Any]] = schema.field(
        default_factory=list, doc="input defences evaluated as what-ifs on the verified inputs: "
        "{name: quantize, bits: k} (x_q = round(2^k x)/2^k), {name: jpeg, quality: q}, or {name: threshold, budget: b} "
        "(per-layer ReLU thresholds tuned to a clean-accuracy loss budget b)",
        source="Krithivasan et al., Section IV")


@dataclass
class EvasionAttack:
    """One evasion attack (see `auditor/attacks/evasion`), the same entry under `robustness.attacks`
    and `approx.transfer/whitebox/query/minimal`; `name:` is another spelling of `attack:`."""

    attack: str = schema.field(doc="attack name: fgsm, pgd, cw, deepfool, jsma, zoo, square, hsj, apgd, apgd_t, fab, autoattack, boundary, lsa",
                               aliases=("name",))
    params: dict[str, Any] = schema.field(default_factory=dict, doc="hyper-parameters of the attack")
    norm: Optional[Literal["linf", "l2", "l0"]] = schema.field(None, doc="perturbation norm the epsilons are measured in (absent = the attack's own)")
    epsilons: Optional[list[float]] = schema.field(None, doc="budgets; absent = RobustBench convention for the norm (MNIST: Linf 0.3, L2 2.0)",
                                                    minimum=0)
    targeted: Union[bool, Literal["random", "least_likely", "next"]] = schema.field(
        False, doc="untargeted (false) or targeted: random (true), least_likely or next class")


@dataclass
class MaskingDiagnosis:
    """The gradient-masking diagnosis (Athalye et al. 2018; Carlini et al. 2019; see `auditor/pipeline/masking.py`)."""

    run: Literal["auto", "always", "never"] = schema.field(
        "auto", doc="auto: on every profile that is not the plain exact model (reshape: or approx:); always: on every profile too")
    count: Optional[int] = schema.field(None, doc="how many clean inputs (absent = robustness.count)", minimum=1,
                                        maximum=MAX_COUNT)
    norm: Literal["linf", "l2"] = schema.field("linf", doc="norm of the comparisons")
    epsilon: Optional[float] = schema.field(None, doc="budget of the comparisons (absent = a third of the RobustBench budget, MNIST Linf 0.1)")
    steps: int = schema.field(20, doc="PGD iterations of the white-box and transfer attacks", minimum=1, maximum=100_000)
    n_queries: int = schema.field(500, doc="Square attack query budget", minimum=1, maximum=10_000_000)
    tolerance: float = schema.field(0.05, doc="how much (fraction of the attacked inputs, at least 2 inputs) an attack must beat another for a check to fire")

    def validate(self) -> None:
        if self.count is not None and self.count <= 0:
            raise ValueError("count must be positive")
        if self.epsilon is not None and not self.epsilon > 0:
            raise ValueError("epsilon must be positive")
        if self.steps < 1 or self.n_queries < 1:
            raise ValueError("steps and n_queries must be at least 1")
        if not 0 <= self.tolerance < 1:
            raise ValueError("tolerance must lie in [0, 1)")


@dataclass
class Robustness:
    count: int = schema.field(32, doc="how many clean inputs the evasion attacks use", minimum=1, maximum=MAX_COUNT)
    attacks: list[EvasionAttack] = schema.field(default_factory=list, doc="attacks to run")
    masking: MaskingDiagnosis = schema.field(default_factory=MaskingDiagnosis, doc="gradient-masking diagnosis of the deployed models")


@dataclass
class ApproxAudit:
    """Exact vs approximate-multiplier comparison, run on every profile with an `approx:` section."""

    count: int = schema.field(16, doc="how many labelled inputs", minimum=1, maximum=MAX_COUNT)
    surrogate: Optional[str] = schema.field(None, doc="black-box substitute ONNX model (relative to the scenario file)")
    transfer: Optional[list[EvasionAttack]] = schema.field(
        None, doc="attacks crafted on the exact model and replayed on the approximate one, entries as under robustness.attacks "
        "(default: FGSM, PGD, C&W, DeepFool, JSMA)",
        source="Guesmi et al., Table 2")
    whitebox: Optional[list[EvasionAttack]] = schema.field(None, doc="white-box attacks with BPDA gradients on the approximate model (default: PGD)")
    query: Optional[list[EvasionAttack]] = schema.field(None, doc="query attacks on the approximate model (default: Square, HopSkipJump)")
    minimal: Optional[list[EvasionAttack]] = schema.field(
        None, doc="minimal-norm attacks (BPDA vs exact): the perturbation each model needs (default: DeepFool, C&W)",
        source="Guesmi et al. (PSNR/MSE comparison)")

    def sections(self) -> list[tuple[str, list[EvasionAttack] | None]]:
        """(key, entries or None for the default) of every attack list."""
        return [(k, getattr(self, k)) for k in ("transfer", "whitebox", "query", "minimal")]


@dataclass
class RobustAccuracyCheck:
    attack: str = schema.field(doc="attack name as listed under robustness.attacks")
    epsilon: float = schema.field(doc="budget", minimum=0)
    threshold: float = schema.field(doc="minimum robust accuracy (0..1)", minimum=0, maximum=1)
    norm: Optional[str] = schema.field(None, doc="norm (defaults to the attack's)")


@dataclass
class Regression:
    """How much worse than the baseline report a new report may be (checked with --baseline)."""

    max_latency_growth: Optional[float] = schema.field(None, doc="worst-case latency may grow at most this fraction (0.1 = 10%)",
                                                       minimum=0)
    max_energy_growth: Optional[float] = schema.field(None, doc="worst-case energy may grow at most this fraction", minimum=0)
    max_density_growth: Optional[float] = schema.field(None, doc="worst-case density may grow at most this much (absolute)",
                                                       minimum=0, maximum=1)
    max_accuracy_drop: Optional[float] = schema.field(None, doc="clean accuracy may drop at most this much (0.01 = 1 point)",
                                                      minimum=0, maximum=1)
    max_robust_accuracy_drop: Optional[float] = schema.field(None, doc="robust accuracy (any attack and epsilon) may drop at most this much",
                                                             minimum=0, maximum=1)


@dataclass
class Checks:
    """Thresholds that gate the verdict; every check present is evaluated on every profile."""

    worst_case_latency_ms: Optional[float] = schema.field(None, doc="maximum latency of any audited input (clean and attacked)", unit="ms", minimum=0, exclusive_minimum=True)
    mean_latency_ms: Optional[float] = schema.field(None, doc="maximum mean latency over clean inputs", unit="ms", minimum=0, exclusive_minimum=True)
    worst_case_energy_uj: Optional[float] = schema.field(None, doc="maximum energy of any audited input", unit="uJ", minimum=0, exclusive_minimum=True)
    mean_energy_uj: Optional[float] = schema.field(None, doc="maximum mean energy over clean inputs", unit="uJ", minimum=0, exclusive_minimum=True)
    worst_case_edp: Optional[float] = schema.field(None, doc="maximum energy-delay product of any audited input", unit="J*s", minimum=0, exclusive_minimum=True)
    max_density: Optional[float] = schema.field(None, doc="maximum model-wide activation density of any audited input (0..1)",
                                                 minimum=0, maximum=1)
    min_clean_accuracy: Optional[float] = schema.field(None, doc="minimum clean accuracy (needs labels)",
                                                         minimum=0, maximum=1)
    max_latency_increase: Optional[float] = schema.field(None, doc="maximum ratio worst attacked / mean clean latency",
                                                           minimum=0, exclusive_minimum=True)
    max_energy_increase: Optional[float] = schema.field(None, doc="maximum ratio worst attacked / mean clean energy",
                                                          minimum=0, exclusive_minimum=True)
    min_robust_accuracy: list[RobustAccuracyCheck] = schema.field(default_factory=list, doc="minimum robust accuracy per attack and epsilon")
    max_attack_success_rate: Optional[float] = schema.field(None, doc="maximum success rate of any evasion attack at any epsilon (0..1)",
                                                              minimum=0, maximum=1)
    min_median_l2: Optional[float] = schema.field(None, doc="minimum median L2 perturbation of the minimal-norm attacks",
                                                    minimum=0)
    no_gradient_masking: bool = schema.field(False, doc="fail a profile whose gradient-masking diagnosis fired (needs a robustness section)")


@dataclass
class Scenario:
    """An audit scenario."""

    name: str = schema.field(doc="short name shown in reports")
    description: str = schema.field("", doc="free text")
    seed: int = schema.field(0, doc="seed of every random choice (overridden by --seed)", minimum=0, maximum=2**63 - 1)
    data: DataSpec = schema.field(default_factory=DataSpec, doc="where the inputs come from")
    preprocessing: Preprocessing = schema.field(default_factory=Preprocessing, doc="raw pixels -> model input")
    batch_size: int = schema.field(64, doc="inputs per onnxruntime run", minimum=1, maximum=4096)
    chunk_size: int = schema.field(
        32, doc="inputs per unit of work: the clean evaluation, the per-input energy searches and the evasion attacks "
        "run in chunks of this size, one unit each (on --jobs processes or a --ray cluster); fixed, so the report "
        "does not depend on the number of workers", minimum=1, maximum=MAX_COUNT)
    density_tensors: Literal["activations", "layer_inputs"] = schema.field(
        "activations", doc="tensors counted in the model-wide density: outputs of activation ops (as the seed papers) or compute-layer inputs")
    energy_attacks: list[EnergyAttack] = schema.field(default_factory=list, doc="energy-latency searches to run")
    robustness: Optional[Robustness] = schema.field(None, doc="evasion attacks to run")
    approx: Optional[ApproxAudit] = schema.field(None, doc="exact vs approximate hardware audit (profiles with `approx:`)")
    checks: Checks = schema.field(default_factory=Checks, doc="thresholds of the verdict")
    regression: Regression = schema.field(default_factory=Regression, doc="limits against a baseline report (--baseline)")

    #: folder of the scenario file; relative paths are resolved against it
    base_dir: Path = dataclasses.field(default=Path("."), init=False, repr=False)

    def validate(self) -> None:
        if self.batch_size <= 0:
            raise ValueError("batch_size must be positive")
        if self.chunk_size <= 0:
            raise ValueError("chunk_size must be positive")


def attack_entry(a: EvasionAttack) -> dict:
    """An evasion entry as the attack runners read it (:func:`auditor.validate.parse_attack`)."""
    return {"name": a.attack, "params": a.params, "norm": a.norm, "epsilons": a.epsilons, "targeted": a.targeted}


def attack_entries(attacks: list[EvasionAttack] | None) -> list[dict] | None:
    return None if attacks is None else [attack_entry(a) for a in attacks]


def load_scenario(path: str | Path) -> Scenario:
    sc = schema.load(Scenario, path)
    sc.base_dir = Path(path).resolve().parent
    return sc
