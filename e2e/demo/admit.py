#!/usr/bin/env python3
"""Send a Deployment's pod through the webhook over TLS, the way the API server would.

usage: admit.py URL CA_FILE DEPLOYMENT_YAML OUT_DIR [--role ARN]
Builds the pod the ReplicaSet controller would create (generateName, namespace, owner), wraps
it in an AdmissionReview v1, POSTs it, decodes the base64 JSON patch, applies it with
`kubectl patch --local`, and prints what happened in a few lines.
"""
import base64
import json
import os
import ssl
import subprocess
import sys
import urllib.request
import uuid

import yaml


def main():
    url, ca_file, deployment_file, out_dir = sys.argv[1:5]
    role = sys.argv[sys.argv.index("--role") + 1] if "--role" in sys.argv else None
    with open(deployment_file) as f:
        deployment = yaml.safe_load(f)
    template = deployment["spec"]["template"]
    meta = json.loads(json.dumps(template["metadata"]))
    if role:
        meta["annotations"]["tremolo.io/aws-role"] = role
    meta.update({
        "generateName": deployment["metadata"]["name"] + "-5d7f9c6b8-",
        "namespace": deployment["metadata"]["namespace"],
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                             "name": deployment["metadata"]["name"] + "-5d7f9c6b8",
                             "uid": str(uuid.uuid4()), "controller": True,
                             "blockOwnerDeletion": True}],
    })
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}
    uid = str(uuid.uuid4())
    review = {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": meta["namespace"], "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "dryRun": False,
        },
    }
    ctx = ssl.create_default_context(cafile=ca_file)
    req = urllib.request.Request(url, data=json.dumps(review).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        answer = json.load(resp)["response"]
    assert answer["uid"] == uid, "uid not echoed"
    os.makedirs(out_dir, exist_ok=True)
    pod_file = os.path.join(out_dir, "pod.json")
    with open(pod_file, "w") as f:
        json.dump(pod, f, indent=2)
    for w in answer.get("warnings", []):
        print(f"   Warning: {w}")
    if not answer["allowed"]:
        print(f"   denied ({answer['status']['code']}): {answer['status']['message']}")
        return
    patch = json.loads(base64.b64decode(answer["patch"]))
    patch_file = os.path.join(out_dir, "patch.json")
    with open(patch_file, "w") as f:
        json.dump(patch, f, indent=2)
    mutated = json.loads(subprocess.run(
        ["kubectl", "patch", "--local", "-f", pod_file, "--type=json", "--patch-file", patch_file,
         "-o", "json"], check=True, capture_output=True, text=True).stdout)
    with open(os.path.join(out_dir, "mutated-pod.json"), "w") as f:
        json.dump(mutated, f, indent=2)
    spec = mutated["spec"]
    print(f"   allowed with a {len(patch)}-operation JSON patch (applied by kubectl patch --local)")
    for c in spec.get("initContainers", []):
        kind = "native sidecar" if c.get("restartPolicy") == "Always" else "init container"
        print(f"   + {kind} {c['name']} ({c['image']}) args: {' '.join(c.get('args', []))}")
    for v in spec.get("volumes", []):
        src = "projected SA token" if "projected" in v else "in-memory emptyDir" if "emptyDir" in v else "?"
        print(f"   + volume {v['name']}: {src}")
    for c in spec["containers"]:
        for e in c.get("env", []):
            value = e.get("value") or f"<{e['valueFrom']['fieldRef']['fieldPath']}>"
            print(f"   + {c['name']} env {e['name']}={value}")
    print(f"   files: {out_dir}/{{pod,patch,mutated-pod}}.json")


if __name__ == "__main__":
    main()
