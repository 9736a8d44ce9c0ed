#!/usr/bin/env python3
"""Check every golden case with real Kubernetes tooling (run by the test command).

For each case in tests/golden/<case>/:
  (a) `kubectl patch --local --type=json` applies result.json's patch to pod.yaml and gives
      exactly mutated.json (which the Rust golden test produced with the json-patch crate);
  (b) the mutated pod passes `kubernetes-validate --strict` for each Kubernetes version given.
(c) idempotency and (d) "nothing changed except by appending" are checked by tests/golden.rs.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
VERSIONS = ["1.30.0", "1.34.0"]


def tool(name):
    venv = os.environ.get("VIRTUAL_ENV")
    if venv and os.path.exists(os.path.join(venv, "bin", name)):
        return os.path.join(venv, "bin", name)
    return name


def main():
    failures = []
    checked = 0
    for case in sorted(os.listdir(GOLDEN)):
        d = os.path.join(GOLDEN, case)
        if not os.path.exists(os.path.join(d, "pod.yaml")):
            continue
        with open(os.path.join(d, "result.json")) as f:
            result = json.load(f)
        with open(os.path.join(d, "mutated.json")) as f:
            expected = json.load(f)
        with tempfile.TemporaryDirectory() as tmp:
            patch_file = os.path.join(tmp, "patch.json")
            with open(patch_file, "w") as f:
                json.dump(result.get("patch", []), f)
            if result.get("patch"):
                proc = subprocess.run(
                    [tool("kubectl"), "patch", "--local", "-f", os.path.join(d, "pod.yaml"),
                     "--type=json", "--patch-file", patch_file, "-o", "json"],
                    capture_output=True, text=True)
                if proc.returncode != 0:
                    failures.append(f"{case}: kubectl patch failed: {proc.stderr.strip()}")
                    continue
                if json.loads(proc.stdout) != expected:
                    failures.append(f"{case}: kubectl's result differs from the json-patch crate's")
                    continue
            # The API server names generateName pods after admission; validation needs a name.
            pod = json.loads(json.dumps(expected))
            meta = pod.setdefault("metadata", {})
            if not meta.get("name"):
                meta["name"] = meta.get("generateName", "pod-") + "x7k2p"
            pod_file = os.path.join(tmp, "pod.json")
            with open(pod_file, "w") as f:
                json.dump(pod, f)
            for version in VERSIONS:
                proc = subprocess.run(
                    [tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, pod_file],
                    capture_output=True, text=True)
                if proc.returncode != 0:
                    failures.append(f"{case}: invalid for Kubernetes {version}: "
                                    f"{(proc.stdout + proc.stderr).strip()}")
        checked += 1
    for f in failures:
        print("FAIL", f)
    print(f"golden kubectl/kubernetes-validate: {checked - len({f.split(':')[0] for f in failures})} passed, "
          f"{len({f.split(':')[0] for f in failures})} failed")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
