#!/usr/bin/env python3
"""The local demo: every component for real on loopback (see stack.py for the two stand-ins)."""
import json
import os
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stack import ROOT, PodRunner, Stack, images  # noqa: E402

BIN = os.path.join(ROOT, "target", "debug")
WORK = os.path.join(ROOT, "e2e", ".work", "demo")
VENV = os.environ.get("VIRTUAL_ENV", os.path.join(ROOT, ".venv"))
NODE = os.path.join(ROOT, "e2e", ".work", "node", "node_modules")


def main():
    with open(os.path.join(ROOT, "e2e", "demo", "deployment.yaml")) as f:
        deployment = yaml.safe_load(f)
    print("==> starting moto, tokenvend-sts and tokenvend-webhook")
    stack = Stack(WORK, BIN, log=lambda m: print(f"   {m}"))
    runner = None
    try:
        mode = deployment["spec"]["template"]["metadata"]["annotations"]["tremolo.io/aws-mode"]
        print(f"==> admitting the pod of e2e/demo/deployment.yaml ({mode}) through the webhook over TLS")
        pod = stack.pod_from_deployment(deployment)
        answer, mutated = stack.admit(pod)
        for w in answer.get("warnings", []):
            print(f"   Warning: {w}")
        patch_ops = len(json.loads(__import__("base64").b64decode(answer["patch"])))
        sidecar = mutated["spec"]["initContainers"][0]
        print(f"   allowed: {patch_ops} JSON-patch operations; native sidecar {sidecar['name']} "
              f"({sidecar['image']}) at initContainers[0]")
        env = {e["name"]: e.get("value", "<" + e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "?") + ">")
               for e in mutated["spec"]["containers"][0]["env"]}
        print(f"   app env: {', '.join(f'{k}={v}' for k, v in env.items() if k.startswith('AWS_'))}")
        print("==> running the pod (kubelet stand-in: own network namespace, volumes bind-mounted, minted SA token)")
        runner = PodRunner(stack, mutated, images(BIN, NODE, VENV), log=print)
        print(f"   pod {runner.namespace}/{runner.name} at {runner.ip}")
        results = runner.run()
        rc, out = results["app"]
        if rc != 0:
            print(out)
            print(f"   sidecar log:\n{runner.logs('tokenvend-sidecar')}")
            raise SystemExit(f"the app failed ({rc})")
        arn = json.loads(out)["Arn"]
        role = deployment["spec"]["template"]["metadata"]["annotations"]["tremolo.io/aws-role"].split("/")[-1]
        if f":assumed-role/{role}/" not in arn:
            raise SystemExit(f"the app got {arn}, not the annotated role {role}")
        print(f"   app ran an unmodified `aws sts get-caller-identity`: {arn}")
        print("==> admitting the same pod with a typo in its role annotation")
        answer, _ = stack.admit(stack.pod_from_deployment(deployment, {"tremolo.io/aws-role": "orders-writer"}))
        if answer.get("allowed") is not False or "status" not in answer:
            raise SystemExit(f"the typo was not refused: {answer}")
        print(f"   denied ({answer['status']['code']}): {answer['status']['message']}")
        print(f"==> done: assumed role {arn}")
    finally:
        if runner:
            runner.stop()
        stack.close()


if __name__ == "__main__":
    main()
