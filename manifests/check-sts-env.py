#!/usr/bin/env python3
"""Runs the real tokenvend-sts with the environment an overlay gives it and asks what that
overlay's sidecars ask: web-identity, a token for a role the pod names; credentials, credentials
for the vended role (moto as STS). The e2e tests configure tokenvend-sts their own way, which once
hid that the web-identity overlay refused every pod's /token.

Only what cannot run here is replaced: TLS (plain HTTP on loopback), TokenReview (JWKS validation
of a token minted with a local "cluster" key, as the e2e tests do), the mounted files (the
overlay's policy template from its ConfigMap, a fresh signing key), and AWS (moto, dummy keys).

usage: check-sts-env.py BIN_DIR RENDERED.yaml MODE   (MODE: web-identity or credentials)
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

POD_ROLE = "arn:aws:iam::123456789012:role/shop/orders-writer"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, proc, what, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            return f"{what} exited with {proc.returncode}"
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return None
        except urllib.error.HTTPError:
            return None
        except OSError:
            time.sleep(0.1)
    return f"{what} did not answer {url} within {seconds} s"


def post(url, token, body):
    req = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main():
    bin_dir, rendered, mode = sys.argv[1:]
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "tokenvend-sts")
    container = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "sts")
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    template = next(d for d in docs if d["kind"] == "ConfigMap"
                    and d["metadata"]["name"].startswith("tokenvend-policy-template"))["data"]["policy.json"]

    work = tempfile.mkdtemp(prefix="check-sts-env-")
    procs = []
    try:
        with open(os.path.join(work, "policy.json"), "w") as f:
            f.write(template)
        token = subprocess.run(
            [f"{bin_dir}/examples/mint-sa-token", "--key", f"{work}/cluster.pem", "--create-key",
             "--jwks-out", f"{work}/jwks.json", "--namespace", "shop", "--service-account", "orders",
             "--pod", "orders-1", "--audience", env.get("TOKENVEND_EXPECTED_AUDIENCE", "tokenvend")],
            check=True, capture_output=True, text=True).stdout.strip()
        moto_port, sts_port = free_port(), free_port()
        moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(moto_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
        procs.append(moto)
        problem = wait_http(f"http://127.0.0.1:{moto_port}/moto-api/", moto, "moto")
        if problem:
            return problem

        for name in ("PORT", "TOKENVEND_TLS_CERT", "TOKENVEND_TLS_KEY",
                     "TOKENVEND_CA_BUNDLE_FILE"):
            env.pop(name, None)
        env.update({
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TOKENVEND_LISTEN": f"127.0.0.1:{sts_port}",
            "TOKENVEND_VALIDATION": "jwks",
            "TOKENVEND_OIDC_ISSUER": "https://kubernetes.default.svc.cluster.local",
            "TOKENVEND_JWKS_FILE": f"{work}/jwks.json",
            "POLICY_TEMPLATE_PATH": f"{work}/policy.json",
            "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "AWS_ENDPOINT_URL_STS": f"http://127.0.0.1:{moto_port}",
        })
        if "TOKENVEND_SIGNING_KEY_DIR" in env:
            env["TOKENVEND_SIGNING_KEY_DIR"] = f"{work}/keys"
            os.makedirs(f"{work}/keys")
            subprocess.run([f"{bin_dir}/tokenvend-sts", "keygen", "--out", f"{work}/keys/k1.pem"],
                           check=True, capture_output=True)
        log = open(os.path.join(work, "sts.log"), "w+")
        sts = subprocess.Popen([f"{bin_dir}/tokenvend-sts"], env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(sts)
        problem = wait_http(f"http://127.0.0.1:{sts_port}/healthz", sts, "tokenvend-sts")
        if problem:
            log.seek(0)
            return f"{problem}: {log.read()[-600:]}"

        base = f"http://127.0.0.1:{sts_port}"
        if mode == "web-identity":
            # The sidecar names its pod's role; no setting of the overlay lists it.
            status, body = post(f"{base}/token", token, {"role_arn": POD_ROLE})
            if status != 200 or "token" not in json.loads(body):
                return f"POST /token for a pod of role {POD_ROLE}: {status} {body}"
            return None
        role = env.get("TOKENVEND_ROLE_ARN")
        if not role:
            return "no TOKENVEND_ROLE_ARN: the overlay vends no role"
        status, body = post(f"{base}/credentials", token, {"role_arn": role})
        if status != 200 or "AWS_SESSION_TOKEN" not in json.loads(body):
            return f"POST /credentials for the vended role {role}: {status} {body}"
        return None
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    problem = main()
    if problem:
        print(problem)
        sys.exit(1)
