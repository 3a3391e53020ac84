"""The energy reference table: every named per-event energy (and static power) the cost models use,
with its value, unit and source, in one place.

Like an Accelergy energy reference table (ERT), each entry names a component and an action
(``<machine>.<component>_<action>``) and gives the energy of one such event.  A cost model's
``Params`` take their default energies from here through :func:`energy_field`, so a profile
that leaves a parameter out costs exactly the table's figure, and ``docs/reference.md`` shows
the table's source next to the parameter.

Two technology points are used:

* ``dadn65``: the 65 nm DaDianNao / Cnvlutin chip of the sparsity-attack paper (Krithivasan et al.,
  Sec. V, Fig. 10a).  Horowitz's 45 nm figures are scaled x1.8 to 65 nm (C x V^2:
  65/45 x (1.0/0.9)^2), an assumption stated in each entry's source.
* ``core45``: in-order cores (SparCE, the Ax-FPM FPU core) at Horowitz's 45 nm figures, the
  node of the Defensive Approximation multiplier results; for SparCE the node is an assumption
  (Sen et al. give no energy table).

The multipliers' energy relative to the exact float32 one (Defensive Approximation, Table 7) are
properties of the multiplier variants and live with them in :mod:`auditor.axfpm.variants`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..schema import field

_HOROWITZ = "Horowitz, Computing's energy problem, ISSCC 2014"
_HOROWITZ_65 = (_HOROWITZ + " (45 nm energy table), scaled x1.8 to 65 nm (C*V^2: 65/45 x (1.0/0.9)^2; "
                "assumption)")
_HOROWITZ_45 = _HOROWITZ + " (45 nm energy table)"


@dataclass(frozen=True)
class Event:
    """One entry of the table: the energy of one event of a component (or a static power)."""

    name: str
    value: float
    unit: str
    doc: str
    source: str


EVENTS: dict[str, Event] = {e.name: e for e in (
    # -- DaDianNao / Cnvlutin chip, 65 nm, 16-bit fixed point --------------------------------------
    Event("dadn65.mac16", 1.6, "pJ", "energy of one 16-bit fixed-point multiply-accumulate",
          _HOROWITZ_65 + "; 16b mult ~0.8 pJ (between 8b 0.2 and 32b 3.1) + 32b add 0.1"),
    Event("dadn65.synapse_read", 2.25, "pJ/byte", "synapse buffer (weight eDRAM bank) read energy per byte",
          _HOROWITZ_65 + "; 8KB-bank 64-bit read 10 pJ"),
    Event("dadn65.neuron_read", 2.25, "pJ/byte", "neuron memory / input buffer read energy per byte",
          _HOROWITZ_65 + "; 8KB-bank 64-bit read 10 pJ"),
    Event("dadn65.neuron_write", 2.25, "pJ/byte", "neuron memory write energy per byte (layer outputs)",
          "assumption (= read energy)"),
    Event("dram.access", 244.0, "pJ/byte", "off-chip DRAM access energy per byte",
          "Horowitz ISSCC 2014: DRAM 1.3-2.6 nJ per 64-bit access (midpoint)"),
    Event("dadn65.static", 2.5, "W", "static (leakage) power of the chip",
          "assumption (~10% of the peak dynamic power of this model at 1 GHz)"),
    # -- in-order cores, 45 nm, float32 --------------------------------------------------------------
    Event("core45.instruction", 70.0, "pJ", "per executed instruction: fetch, decode, register file, control",
          _HOROWITZ_45 + ": ~70 pJ instruction overhead of a RISC core"),
    Event("core45.l1_access", 20.0, "pJ", "L1 data-cache access of a load or store",
          _HOROWITZ_45 + ": 32KB cache 64-bit access 20 pJ"),
    Event("core45.fp32_mul", 3.7, "pJ", "energy of one exact float32 multiply",
          _HOROWITZ_45 + ": 32-bit FP mult 3.7 pJ"),
    Event("core45.fp32_add", 0.9, "pJ", "energy of one float32 add",
          _HOROWITZ_45 + ": 32-bit FP add 0.9 pJ"),
    Event("core45.fp32_mac", 4.6, "pJ", "floating-point multiply-accumulate operation (all SIMD lanes)",
          _HOROWITZ_45 + ": fp32 mult 3.7 pJ + add 0.9 pJ"),
    Event("core45.int_alu", 0.1, "pJ", "integer ALU / branch operation",
          _HOROWITZ_45 + ": 32-bit int add 0.1 pJ"),
    Event("core45.static", 0.1, "W", "static (leakage) power of core and caches", "assumption"),
)}


def event(name: str) -> Event:
    """The table entry ``name`` (KeyError names the known entries)."""
    try:
        return EVENTS[name]
    except KeyError:
        raise KeyError(f"no energy event {name!r} (known: {', '.join(EVENTS)})") from None


def energy_field(name: str, doc: str | None = None, note: str = ""):
    """A ``Params`` field whose default, unit and source are those of the table entry ``name``
    (``doc`` replaces the entry's description; ``note`` is appended to its source)."""
    e = event(name)
    return field(e.value, doc=doc or e.doc, unit=e.unit, source=e.source + note)


__all__ = ["Event", "EVENTS", "event", "energy_field"]
