"""The passthru fuzzer of `make fuzz` (tests/fuzz/mailbox.py), run small so it cannot rot:
1500 requests per policy through real mounts, a fixed seed (FUZZ_SEED overrides it),
and the deterministic probes; a few seconds."""

import json
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
COUNT = 1500
SEED = "20261204"

def test_fuzz_smoke(tmp_path):
    report = tmp_path / "report.json"
    env = {**os.environ, "FUZZ_COUNT": str(COUNT), "FUZZ_SEED": os.environ.get("FUZZ_SEED", SEED),
           "FUZZ_DIR": str(tmp_path / "work"), "FUZZ_REPORT": str(report),
           "FUZZ_POLICIES": "readonly,all,off", "FUZZ_HANG": "60"}
    proc = subprocess.run([sys.executable, "-m", "tests.fuzz.mailbox"], cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)
    out = (proc.stdout + proc.stderr)[-12000:]
    assert report.exists(), f"the fuzzer wrote no report (exit {proc.returncode}):\n{out}"
    data = json.loads(report.read_text())

    # the fuzzer did its work: every policy got its requests, and they went through
    policies = data["policies"]
    assert set(policies) == {"readonly", "all", "off"}, out
    for name, p in policies.items():
        assert p["sent"] >= COUNT, (name, p)
        assert p["peak_rss_mib"] > 0, (name, p)
    for name in ("readonly", "all"):
        p = policies[name]
        assert p["accepted"] > COUNT // 4 and p["answers"] > COUNT // 4, (name, p)
        assert sum(p["refused"].values()) > COUNT // 10, (name, p)
        assert {"valid", "invalid", "mutant"} <= set(p["by_category"]), (name, p)
    assert policies["readonly"]["verified"] > 0, policies["readonly"]
    assert policies["off"]["accepted"] == 0 and set(policies["off"]["refused"]) == {"EACCES"}
    assert len(data["probes"]) == 4, data["probes"]

    kinds = sorted({v["kind"] for v in data["violations"]})
    assert not kinds, f"fuzzer violations {kinds}:\n{out}"
    assert proc.returncode == 0, out
