"""``auditor init --from-model MODEL --hw PROFILE``: a starter scenario whose thresholds come from a
real clean run of the model on the profiles (latency and energy limits at a margin over the
measured worst case, the accuracy floor just under the measured accuracy)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from .run import run_audit
from .sanity import near_chance


def _up(v: float, digits: int = 3) -> float:
    """Round up to ``digits`` significant digits (a threshold never below the value it covers)."""
    if v <= 0:
        return 0.0
    e = math.floor(math.log10(v)) - digits + 1
    return round(math.ceil(v / 10 ** e) * 10 ** e, max(0, -e))


def measured_scenario(model: str, profiles: list[str], *, count: int = 64, margin: float = 1.2,
                      path: str = "scenario.yaml") -> str:

    with tempfile.TemporaryDirectory() as tmp:
        sc = Path(tmp) / "measure.yaml"
        sc.write_text(f"name: measure\nseed: 0\ndata: {{source: digits, count: {int(count)}}}\n")
        rep = run_audit(model, profiles, str(sc), seed=0)
    profs = rep.data["profiles"]
    lat_ms = max(p["summary"]["worst_latency_s"] for p in profs) * 1e3
    en_uj = max(p["summary"]["worst_energy_j"] for p in profs) * 1e6
    accs = [p["clean"]["accuracy"] for p in profs if p["clean"]["accuracy"] is not None]
    acc = min(accs) if accs else None
    classes = profs[0]["clean"].get("classes")
    name = Path(path).stem.replace(" ", "-") or "my-audit"
    L = [f"# auditor scenario for {model}, thresholds measured by `auditor init --from-model` on "
         f"{', '.join(p['name'] for p in profs)}",
         f"# with a clean run of {rep.data['data']['count']} bundled digits inputs (seed 0): worst-case latency "
         f"{lat_ms:.4g} ms, energy {en_uj:.4g} uJ, clean accuracy "
         + ("n/a" if acc is None else f"{100 * acc:.1f}%") + ".",
         f"# Latency and energy limits are {margin:g}x the measured worst case. Reference: docs/reference.md",
         f"# Check it: auditor validate {path}"]
    if near_chance(acc, classes):
        L += ["# WARNING: the clean accuracy is near chance: the preprocessing below probably does not match the",
              "# model (set range/scale/mean/std as the model was trained) before trusting any threshold."]
    L += [f"name: {name}", "seed: 0", "",
          "data:", "  source: digits           # digits (bundled) | npy | npz | images | idx",
          f"  count: {int(count)}", "",
          "preprocessing:             # raw pixels (NCHW, in range) -> model input, prepended to the graph",
          "  range: [0.0, 1.0]", "  # mean: [0.0]", "  # std: [1.0]", "",
          "energy_attacks:            # energy-latency searches, maximising cost on each profile",
          "  - {search: uniform, count: 8}          # Mueller & Quiring uniform sampling",
          "  # - {search: whitebox, count: 8}       # Krithivasan et al. Algorithm 1", "",
          "checks:",
          f"  worst_case_latency_ms: {_up(lat_ms * margin):g}   # {margin:g} x measured {lat_ms:.4g}",
          f"  worst_case_energy_uj: {_up(en_uj * margin):g}   # {margin:g} x measured {en_uj:.4g}",
          "  max_latency_increase: 1.5"]
    if acc is not None:
        floor = max(0.0, math.floor((acc - 0.02) * 100) / 100)
        L.append(f"  min_clean_accuracy: {floor:.2f}   # measured {acc:.4f}, minus 2 points")
    L += ["", "regression:                # limits against --baseline OLD.json",
          "  max_latency_growth: 0.10", "  max_accuracy_drop: 0.01"]
    return "\n".join(L) + "\n"
