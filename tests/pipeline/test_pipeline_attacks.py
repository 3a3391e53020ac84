"""The audit with searches: energy-latency attacks and evasion attacks end to end (small budgets)."""

import numpy as np
import pytest

import auditor
from auditor.errors import AuditorError
from auditor.validate import validate_file


def test_energy_attack_in_audit_is_verified_and_gates(tmp_path):
    sc = tmp_path / "sc.yaml"
    sc.write_text("name: e\ndata:\n  count: 16\nenergy_attacks:\n"
                  "  - {search: whitebox, count: 4, params: {iterations: 10, eps: 0.9}}\n"
                  "  - {search: uniform, count: 4}\n"
                  "checks:\n  max_latency_increase: 1.0\n")
    rep = auditor.audit("models/plain_cnn.onnx", "hwprofiles/cnvlutin.yaml", str(sc), save_dir=str(tmp_path / "worst"))
    p = rep.data["profiles"][0]
    wb, uni = p["attacks"]
    assert wb["search"] == "whitebox" and wb["verified"] + wb["rejected"] == 4
    assert wb["perturbation"]["l2"]["worst"] <= 0.9 * (1 + 1e-4) + 1e-6
    assert uni["label_kept_rate"] if "label_kept_rate" in uni else True
    # the uniform inputs are denser than clean digits on this model
    assert uni["density_attacked"] > uni["density_clean"]
    inc = max(wb["latency_increase"] or 0, uni["latency_increase"] or 0)
    check = [c for c in rep.checks if c["name"] == "max_latency_increase"][0]
    assert check["measured"] == pytest.approx(inc) and check["passed"] == (inc <= 1.0)
    assert not check["passed"]  # attacked inputs are slower than the mean clean input
    files = uni["worst_input"]["files"]
    x = np.load(files[0])
    assert x.shape == (1, 28, 28) and (tmp_path / "worst").exists()


def test_robustness_in_audit_with_reshaped_profile(tmp_path):
    sc = tmp_path / "r.yaml"
    sc.write_text("name: r\ndata:\n  count: 16\nrobustness:\n  count: 8\n  attacks:\n"
                  "    - {attack: fgsm, norm: linf, epsilons: [0.05, 0.3]}\n"
                  "checks:\n  min_robust_accuracy:\n    - {attack: fgsm, epsilon: 0.3, threshold: 0.9}\n")
    prof = tmp_path / "gi.yaml"
    prof.write_text("name: gi\ncost_model: dense\nreshape:\n  gradient_inhibition_tau: 0.1\n")
    rep = auditor.audit("models/plain_cnn.onnx", ["hwprofiles/dense.yaml", str(prof)], str(sc))
    for p in rep.data["profiles"]:
        res = p["robustness"]["attacks"][0]["results"]
        assert [r["epsilon"] for r in res] == [0.05, 0.3]
        assert res[0]["robust_accuracy"] >= res[1]["robust_accuracy"]
    chk = [c for c in rep.checks if c["name"].startswith("min_robust_accuracy")]
    assert len(chk) == 2 and not chk[0]["passed"]  # FGSM at 0.3 breaks the plain CNN


def test_validate_reports_bad_references_with_location(tmp_path):
    p = tmp_path / "v.yaml"
    p.write_text("name: x\nrobustness:\n  attacks:\n    - {attack: pgd, norm: l2}\n    - {attack: nosuch}\n")
    with pytest.raises(AuditorError, match=r"v\.yaml:5:7: robustness\.attacks\[1\]: .*unknown attack 'nosuch'"):
        validate_file(p)
    p.write_text("name: x\nenergy_attacks:\n  - {search: blackbox, surrogate: missing.onnx}\n")
    with pytest.raises(AuditorError, match=r"v\.yaml:3:35: energy_attacks\[0\]\.surrogate: .*model file not found"):
        validate_file(p)


def test_energy_attack_explanations_and_defences(tmp_path):
    sc = tmp_path / "d.yaml"
    sc.write_text("name: d\ndata: {count: 12}\npreprocessing: {mean: [0.1], std: [0.25]}\nenergy_attacks:\n"
                  "  - search: whitebox\n    count: 4\n    params: {iterations: 5}\n"
                  "    defences: [{name: quantize, bits: 2}, {name: jpeg, quality: 50}, {name: threshold, budget: 0.1}]\n")
    rep = auditor.audit("models/bn_resnet.onnx", "hwprofiles/cnvlutin.yaml", str(sc))
    p = rep.data["profiles"][0]
    zt = p["zero_thresholds"]
    assert len(zt) == 6 and all(0 <= z["negative_share"] <= 1 for z in zt)  # six BN->ReLU blocks
    a = p["attacks"][0]
    assert set(a["uniformity"]) == {"clean", "attacked"}
    names = [d["defence"] for d in a["defences"]]
    assert names == ["quantize", "jpeg", "threshold"]
    for d in a["defences"]:
        assert 0 <= d["clean_label_agreement"] <= 1 and d["clean_latency_change"] > 0
        assert "recovery" in d and d["clean_accuracy"] - d["defended_clean_accuracy"] <= 0.1 + 1e-9
    # thresholding removes activations: the defended clean inputs are cheaper
    assert a["defences"][2]["clean_latency_change"] < 1.0
    assert a["preactivation_shift"] and all("std_ratio" in v for v in a["preactivation_shift"].values())
