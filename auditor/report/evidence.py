"""Evidence an auditor can look at: adversarial examples of the evasion attacks saved next to the
energy searches' worst inputs (``--save-inputs DIR``).

For every attack and ε, the few verified adversarial examples with the smallest L2 perturbation
(the most convincing ones) are written as ``.npy`` (raw pixels, the model's input domain before
preprocessing) and ``.png``: the clean input, the adversarial one, and their difference (signed,
mid-grey = no change, scaled to the largest change).  The report records for each the input's
index, its label, the prediction of the independent forward pass and the perturbation norms.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

#: adversarial examples kept per attack and epsilon
PER_RESULT = 3


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    a = np.clip(img, 0, 1)
    a = (a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)) * 255
    buf = io.BytesIO()
    Image.fromarray(np.round(a).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def example_saver(save_dir, profile: str, bounds: tuple[float, float], per_result: int = PER_RESULT,
                  force: bool = False):
    """save(k, name, norm, eps, x, x_adv, labels, predictions, fooled) -> the records of the saved examples."""
    root = Path(save_dir)
    lo, hi = float(bounds[0]), float(bounds[1])
    span = hi - lo if hi > lo else 1.0

    def save(k, name, norm, eps, x, x_adv, labels, preds, fooled) -> list[dict]:
        idx = np.flatnonzero(fooled)
        if len(idx) == 0:
            return []
        d = (x_adv[idx] - x[idx]).reshape(len(idx), -1).astype(np.float64)
        l2 = np.linalg.norm(d, axis=1)
        order = idx[np.argsort(l2, kind="stable")][:per_result]
        from ..files import output_folder, safe_name, write_bytes

        output_folder(root, "saved inputs")
        tag = "minimal" if eps is None else f"eps{eps:g}"
        out = []
        for i in order:
            delta = (x_adv[i] - x[i]).astype(np.float32)
            stem = root / safe_name(f"{profile}-robust-{k}-{name}-{tag}-input{int(i)}", 120)
            files = {}
            for kind, arr, img in (("clean", x[i], (x[i] - lo) / span), ("adversarial", x_adv[i], (x_adv[i] - lo) / span),
                                   ("difference", delta, 0.5 + 0.5 * delta / max(float(np.abs(delta).max()), 1e-12))):
                write_bytes(f"{stem}-{kind}.npy", _npy(np.asarray(arr)), force, "saved input")
                write_bytes(f"{stem}-{kind}.png", _png(img), force, "saved input")
                files[kind] = [f"{stem}-{kind}.npy", f"{stem}-{kind}.png"]
            out.append({"index": int(i), "label": int(labels[i]), "prediction": int(preds[i]),
                        "l2": float(np.linalg.norm(delta.ravel())), "linf": float(np.abs(delta).max()),
                        "files": files})
        return out

    return save


def attach_examples(rep: dict, parts: list, x: np.ndarray, y: np.ndarray, save_dir, profile: str,
                    bounds: tuple[float, float], per_result: int = PER_RESULT, force: bool = False) -> None:
    """Save the most convincing verified adversarial examples of every attack and ε of a
    robustness report (``parts``: the merged per-input results of each attack, as
    :func:`auditor.pipeline.robustness.attack_part` returns them) and record them as ``examples``."""
    save = example_saver(save_dir, profile, bounds, per_result, force)
    for k, (entry, part) in enumerate(zip(rep.get("attacks", []), parts)):
        if part is None:
            continue
        n = len(part["clean_logits"])
        xs, ys = x[:n], np.asarray(y[:n]).astype(np.int64)
        correct = part["clean_logits"].argmax(axis=1) == ys
        for r, rp in zip(entry.get("results", []), part["results"]):
            if rp.get("x_adv") is None:
                continue
            r["examples"] = save(k, entry["attack"], entry["norm"], r["epsilon"], xs, rp["x_adv"], ys,
                                 rp["adv_logits"].argmax(axis=1), rp["counted"] & correct)
        m = part.get("minimal")
        if m is not None and "minimal_perturbation" in entry and m.get("x_min") is not None:
            good = m["ok"] & correct & m["finite"]
            entry["minimal_perturbation"]["examples"] = save(k, entry["attack"], entry["norm"], None, xs, m["x_min"], ys,
                                                             m["logits"].argmax(axis=1), good)
