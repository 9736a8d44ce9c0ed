"""Writes the committed seed inputs of the fuzz targets (fuzz/seeds/<target>/).

Each input starts with the byte that picks the config or parser; the AdmissionReview seeds wrap
the webhook's golden pods and its benchmark pod, as the API server sends them.
Run from the repository root: .venv/bin/python fuzz/make_seeds.py
"""

import base64
import json
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))
from stack import admission_review  # noqa: E402  (the one AdmissionReview the e2e harness sends)
SEEDS = ROOT / "fuzz" / "seeds"


def write(target, name, pick, payload):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    data = payload if isinstance(payload, bytes) else payload.encode()
    (d / name).write_bytes(bytes([pick]) + data)


def review(pod, operation="CREATE"):
    return json.dumps(admission_review(pod, "0f1d2c3b-4a59-6877-8695-a4b3c2d1e0f9", operation))


def jwt(claims):
    def enc(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{enc({'alg': 'RS256', 'kid': 'k1'})}.{enc(claims)}.c2lnbmF0dXJl"


def main():
    pods = sorted((ROOT / "crates/webhook/tests/golden").glob("*/pod.yaml"))
    pods.append(ROOT / "crates/webhook/benches/pod-3-containers.yaml")
    for i, path in enumerate(pods):
        pod = yaml.safe_load(path.read_text())
        name = path.parent.name if path.name == "pod.yaml" else path.stem
        write("admission_review", name, i, review(pod))
    write("admission_review", "update", 1, review(yaml.safe_load(pods[0].read_text()), "UPDATE"))

    claims = {
        "iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:shop:orders",
        "aud": ["tokenvend"], "exp": 1893456000, "iat": 1893452400,
        "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "orders", "uid": "u1"},
                          "pod": {"name": "orders-0", "uid": "u2"}},
    }
    write("core_parsers", "arn", 0, "arn:aws:iam::123456789012:role/team/orders-reader")
    write("core_parsers", "arn-gov", 0, "arn:aws-us-gov:iam::123456789012:role/a")
    write("core_parsers", "username", 1, "system:serviceaccount:shop:orders")
    write("core_parsers", "jwt", 2, jwt(claims))
    write("core_parsers", "claims", 3, json.dumps(claims))
    write("core_parsers", "session", 4, "orders-7d9f8c6b5-x2x7q.shop")
    write("core_parsers", "image", 5,
          "registry.example.com:5000/team/tokenvend-sidecar:0.1.0@sha256:" + "0123456789abcdef" * 4)

    token = jwt({"iss": "https://tokenvend", "sub": "system:serviceaccount:shop:orders",
                 "aud": "sts.amazonaws.com", "exp": 1893456000})
    creds = {"AWS_ACCESS_KEY_ID": "ASIAEXAMPLEEXAMPLE01", "AWS_SECRET_ACCESS_KEY": "c2VjcmV0",
             "AWS_SESSION_TOKEN": "dG9rZW4=", "Expiration": "2030-01-01T00:00:00Z"}
    write("sidecar_answers", "token-answer", 0,
          json.dumps({"token": token, "expiration": "2030-01-01T00:00:00Z"}))
    write("sidecar_answers", "credentials-answer", 1, json.dumps(creds))
    write("sidecar_answers", "time", 2, "2030-01-01T00:00:00.123456789Z")
    write("sidecar_answers", "token-file", 3, token)
    write("sidecar_answers", "credential-process-file", 4, json.dumps({
        "Version": 1, "AccessKeyId": creds["AWS_ACCESS_KEY_ID"],
        "SecretAccessKey": creds["AWS_SECRET_ACCESS_KEY"],
        "SessionToken": creds["AWS_SESSION_TOKEN"], "Expiration": creds["Expiration"]}))


if __name__ == "__main__":
    main()
