#!/usr/bin/env python3
"""Check every golden case with real Kubernetes tooling (run by the test command).

For each case in tests/golden/<case>/:
  (a) `kubectl patch --local --type=json` applies result.json's patch to pod.yaml and gives
      exactly mutated.json (which the Rust golden test produced with the json-patch crate);
  (b) the mutated pod passes `kubernetes-validate --strict` for each Kubernetes version given
      (from the one in the case's `min-kubernetes` file, if any: a pod using a newer field);
  (c') a mutated pod that budgets resources at the pod level (`spec.resources`) passes the API
      server's check that schema validation leaves out: its containers together request no
      more than the pod does, and none has a limit above the pod's.
(c) idempotency and (d) "nothing changed except by appending" are checked by tests/golden.rs.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
VERSIONS = ["1.30.0", "1.34.0", "1.37.0"]


def tool(name):
    venv = os.environ.get("VIRTUAL_ENV")
    if venv and os.path.exists(os.path.join(venv, "bin", name)):
        return os.path.join(venv, "bin", name)
    return name


def version(text):
    return tuple(int(p) for p in text.strip().split("."))


# Quantity suffixes the API server accepts, as multipliers.
SUFFIXES = {"m": 0.001, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(text):
    text = str(text)
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[:-len(suffix)]) * SUFFIXES[suffix]
    return float(text)


def pod_level_problems(pod):
    """The API server's pod-level resource rules: the aggregate of container requests (regular
    containers and native sidecars together, or an init container with the sidecars started
    before it, whichever is more) within each pod-level request (defaulted from the limit), and
    each container's limit within the pod-level limit."""
    spec = pod["spec"]
    pod_res = spec.get("resources") or {}
    limits = pod_res.get("limits") or {}
    requests = {**limits, **(pod_res.get("requests") or {})}
    problems = []
    for name, budget in requests.items():
        def req(c):
            # A container's request defaults to its limit, as the API server defaults it.
            res = c.get("resources") or {}
            own = {**(res.get("limits") or {}), **(res.get("requests") or {})}
            return quantity(own.get(name, 0))

        sidecars, init_peak = 0.0, 0.0
        for c in spec.get("initContainers") or []:
            if c.get("restartPolicy") == "Always":
                sidecars += req(c)
            else:
                init_peak = max(init_peak, req(c) + sidecars)
        total = max(sum(req(c) for c in spec["containers"]) + sidecars, init_peak)
        if total > quantity(budget):
            problems.append(f"containers request {total:g} {name}, over the pod-level {budget}")
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        for name, limit in ((c.get("resources") or {}).get("limits") or {}).items():
            if name in limits and quantity(limit) > quantity(limits[name]):
                problems.append(f"container {c['name']} limit {limit} {name} over the pod-level "
                                f"{limits[name]}")
    return problems


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
            for problem in pod_level_problems(pod):
                failures.append(f"{case}: the API server would refuse it: {problem}")
            since_file = os.path.join(d, "min-kubernetes")
            since = version(open(since_file).read()) if os.path.exists(since_file) else (0,)
            for v in VERSIONS:
                if version(v) < since:
                    continue
                proc = subprocess.run(
                    [tool("kubernetes-validate"), "--strict", "--quiet", "-k", v, pod_file],
                    capture_output=True, text=True)
                if proc.returncode != 0:
                    failures.append(f"{case}: invalid for Kubernetes {v}: "
                                    f"{(proc.stdout + proc.stderr).strip()}")
        checked += 1
    for f in failures:
        print("FAIL", f)
    print(f"golden kubectl/kubernetes-validate: {checked - len({f.split(':')[0] for f in failures})} passed, "
          f"{len({f.split(':')[0] for f in failures})} failed")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
