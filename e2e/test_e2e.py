"""End to end on one machine: every tokenvend binary for real, moto as AWS STS, real AWS SDKs;
stand-ins only for the API server's admission call and the kubelet (see stack.py).

- {web-identity, credentials, projected} x {boto3, AWS CLI v1, AWS JS SDK v3, AWS Rust SDK}: each
  gets the expected assumed-role identity.
- Refresh across expiry with short lifetimes: a long-running client keeps working across at
  least three refreshes, and a reader loop never sees a partial file.
- tokenvend-sts down during a refresh and back: the app never sees an error.
- An invalid role annotation: the denial message the user would see.
- A Deployment's pod with warnings: they are in its tremolo.io/aws-warnings annotation.
- boto3 from before AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE in credentials mode: its error says why.
- An arm64 node: the aarch64 static sidecar (what an arm64 image ships) run under qemu-aarch64,
  sidecar and startupProbe alike, serving an unmodified boto3 in both sidecar modes.
- Classic style (clusters before 1.29) in credentials mode: boto3 told to ask the endpoint once
  succeeds at its first call, the sidecar first and its postStart hook holding the app back.
- A CA rotation by the real tokenvend-certs (new CA beside the old, serving certificate moved,
  old CA dropped) under a running pod: its sidecar follows tokenvend-sts's bundle and the app
  never sees an error.
"""
import json
import os
import shutil
import ssl
import subprocess
import threading
import time

import pytest

from stack import HOST_IP, ROOT, SIDECAR_IMAGE, Image, PodRunner, Stack, images

BIN = os.path.join(ROOT, "target", "debug")
WORK = os.path.join(ROOT, "e2e", ".work", "pytest")
VENV = os.environ.get("VIRTUAL_ENV", os.path.join(ROOT, ".venv"))
NODE = os.path.join(ROOT, "e2e", ".work", "node", "node_modules")
MOTO = "http://moto.aws-standin.svc:5000"
BOTO3_2023 = os.path.join(ROOT, "e2e", ".work", "boto3-2023")
CLIENTS = {"boto3": "e2e/boto3", "aws-cli-v1": "e2e/aws-cli", "js-sdk-v3": "e2e/js-sdk-v3", "rust-sdk": "e2e/rust-sdk"}


# Short-lived values in the refresh tests: the startupProbe asks for 5 s of validity, not 300.
WEBHOOK_CONFIG = {"sidecarProbeMinValidSeconds": 5}


@pytest.fixture(scope="module")
def stack():
    s = Stack(WORK, BIN, log=lambda m: None, webhook_config=WEBHOOK_CONFIG)
    yield s
    s.close()


def deployment(name, mode, role, image, args=None, sa="app"):
    c = {"name": "app", "image": image, "env": [{"name": "AWS_ENDPOINT_URL_STS", "value": MOTO}]}
    if args:
        c["args"] = args
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "e2e"},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name, "tremolo.io/aws-role": "true"},
                         "annotations": {"tremolo.io/aws-role": role, "tremolo.io/aws-mode": mode}},
            "spec": {"serviceAccountName": sa, "containers": [c]}}},
    }


def run_pod(stack, dep, rotate_after=None, during=None, registry=None):
    answer, pod = stack.admit(stack.pod_from_deployment(dep))
    assert answer["allowed"], answer
    registry = registry or images(BIN, NODE, VENV)
    runner = PodRunner(stack, pod, registry, rotate_after=rotate_after, log=lambda m: None)
    try:
        if during:
            threading.Thread(target=during, args=(runner,), daemon=True).start()
        results = runner.run(timeout=240)
        return runner, results["app"]
    finally:
        runner.stop()


def arns(output):
    try:
        return [json.loads(output)["Arn"]]  # the AWS CLI prints one pretty-printed object
    except ValueError:
        pass
    return [json.loads(line)["Arn"] for line in output.splitlines() if line.startswith("{") and '"Arn"' in line]


@pytest.mark.parametrize("client", list(CLIENTS))
@pytest.mark.parametrize("mode", ["web-identity", "credentials", "projected"])
def test_every_mode_with_every_sdk(stack, mode, client):
    role = f"arn:aws:iam::123456789012:role/e2e-{client}"
    runner, (rc, out) = run_pod(stack, deployment(f"{client}-{mode[:4]}", mode, role, CLIENTS[client]))
    assert rc == 0, f"{out}\n--- sidecar ---\n{runner.logs('tokenvend-sidecar') if mode != 'projected' else ''}"
    session = "e2e.app" if mode == "credentials" else runner.name
    assert arns(out) == [f"arn:aws:sts::123456789012:assumed-role/e2e-{client}/{session}"], out
    if mode == "projected":
        assert "tokenvend-sidecar" not in runner.procs


def test_a_classic_pod_in_credentials_mode_finds_the_endpoint_serving_at_its_first_call(stack):
    # boto3 asks the container-credentials endpoint once (by default three times a second apart,
    # which would hide an app started before the endpoint serves).
    role = "arn:aws:iam::123456789012:role/e2e-classic"
    dep = deployment("classic-cred", "credentials", role, CLIENTS["boto3"])
    dep["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "AWS_METADATA_SERVICE_NUM_ATTEMPTS", "value": "1"})
    stack.restart_webhook({**WEBHOOK_CONFIG, "sidecarStyle": "classic"})
    try:
        answer, pod = stack.admit(stack.pod_from_deployment(dep))
        assert answer["allowed"] and not answer.get("warnings"), answer
        assert [c["name"] for c in pod["spec"]["initContainers"]] == ["tokenvend-sidecar-init"]
        assert [c["name"] for c in pod["spec"]["containers"]] == ["tokenvend-sidecar", "app"]
        assert pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "app"
        runner = PodRunner(stack, pod, images(BIN, NODE, VENV), log=lambda m: None)
        try:
            rc, out = runner.run(timeout=240)["app"]
        finally:
            runner.stop()
    finally:
        stack.restart_webhook(WEBHOOK_CONFIG)
    assert rc == 0, f"{out}\n--- sidecar ---\n{runner.logs('tokenvend-sidecar')}"
    assert arns(out) == ["arn:aws:sts::123456789012:assumed-role/e2e-classic/e2e.app"], out
    assert [name for name, _ in runner.hooks] == ["tokenvend-sidecar"], runner.hooks


def answered_throughout(out, seconds):
    """A looping client's answers: every call of its `seconds` answered, none kept waiting. The loop
    ends without error only once `seconds` have passed, so rc 0 says every call succeeded; the gaps
    between answers say none waited for credentials (a call and its 1-s pause take well under 5 s
    even on a loaded machine, where a count of calls per second would measure the machine)."""
    times = [json.loads(line)["At"] for line in out.splitlines() if line.startswith("{") and '"At"' in line]
    assert len(times) >= 2 and times[-1] - times[0] >= seconds - 2, out
    gap = max(b - a for a, b in zip(times, times[1:]))
    assert gap < 5, f"an answer took {gap:.1f} s:\n{out}"


def reader_loop(path, valid, stop, counts):
    while not stop.is_set():
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        counts["reads"] += 1
        if not valid(data):
            counts["bad"] += 1


def jwt_ok(b):
    s = b.decode(errors="replace")
    return not s.endswith("\n") and s.count(".") == 2


def creds_ok(b):
    try:
        return json.loads(b)["Version"] == 1
    except ValueError:
        return False


@pytest.mark.parametrize("mode", ["web-identity", "credentials"])
def test_long_running_client_across_three_refreshes(stack, mode):
    stack.restart_sts(session_seconds=16, token_ttl=16)
    try:
        stop, counts = threading.Event(), {"reads": 0, "bad": 0}
        name = "token" if mode == "web-identity" else "credentials.json"

        def watch(runner):
            path = os.path.join(runner.volumes["tokenvend-aws"], name)
            reader_loop(path, jwt_ok if mode == "web-identity" else creds_ok, stop, counts)

        dep = deployment(f"long-{mode[:4]}", mode, "arn:aws:iam::123456789012:role/e2e-long", "e2e/boto3", ["--loop", "40"])
        runner, (rc, out) = run_pod(stack, dep, rotate_after=10, during=watch)
        stop.set()
        sidecar = runner.logs("tokenvend-sidecar")
        assert rc == 0, f"{out}\n{sidecar}"
        answered_throughout(out, 40)
        refreshes = sidecar.count('"message":"refreshed"')
        assert refreshes >= 4, sidecar  # the first value plus at least three refreshes
        assert runner.rotations >= 3, "the kubelet stand-in rotated the SA token"
        assert counts["bad"] == 0 and counts["reads"] > 100, counts
    finally:
        stack.restart_sts(session_seconds=3600, token_ttl=3600)


def test_sts_down_during_a_refresh_is_invisible_to_the_app(stack):
    stack.restart_sts(session_seconds=30)
    try:
        def outage(runner):
            time.sleep(4)
            stack.stop_sts()
            time.sleep(14)  # the refresh due after ~15 s fails; the 30-s credentials stay valid
            stack.start_sts()

        dep = deployment("outage", "credentials", "arn:aws:iam::123456789012:role/e2e-outage", "e2e/boto3", ["--loop", "35"])
        runner, (rc, out) = run_pod(stack, dep, during=outage)
        sidecar = runner.logs("tokenvend-sidecar")
        assert rc == 0, f"{out}\n{sidecar}"
        answered_throughout(out, 35)
        assert "refresh failed" in sidecar, sidecar
        assert '"after_failures":' in sidecar and sidecar.rfind('"message":"refreshed"') > sidecar.find("refresh failed"), sidecar
    finally:
        if "sts" not in stack.procs:
            stack.start_sts()
        stack.restart_sts(session_seconds=3600)


def test_invalid_role_annotation_is_denied_with_what_to_fix(stack):
    dep = deployment("typo", "web-identity", "orders-writer", "e2e/aws-cli")
    answer, pod = stack.admit(stack.pod_from_deployment(dep))
    assert pod is None and not answer["allowed"]
    assert answer["status"]["code"] == 403
    assert answer["status"]["message"] == (
        'tokenvend: annotation tremolo.io/aws-role: "orders-writer" is not an IAM role ARN: '
        "expected arn:<partition>:iam::<12-digit account>:role/<name>")


def test_a_controllers_pod_keeps_its_warnings_for_its_owner(stack):
    # The ReplicaSet controller creates a Deployment's pods and shows their admission warnings to
    # no one: the pod itself must carry them.
    dep = deployment("warned", "web-identity", "arn:aws:iam::123456789012:role/e2e-warned", "e2e/boto3")
    template = dep["spec"]["template"]
    del template["metadata"]["annotations"]["tremolo.io/aws-mode"]
    template["spec"]["containers"][0]["env"].append({"name": "AWS_REGION", "value": "eu-west-1"})
    answer, pod = stack.admit(stack.pod_from_deployment(dep))
    assert answer["allowed"] and "patch" in answer, answer
    assert answer["warnings"] == [
        "no tremolo.io/aws-mode annotation: using the default mode web-identity",
        'container "app" sets AWS_REGION itself: kept its value',
    ]
    assert pod["metadata"]["annotations"]["tremolo.io/aws-warnings"] == "\n".join(answer["warnings"])
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in pod["spec"]["containers"][0]["env"]


def test_an_sdk_too_old_for_the_token_file_is_told_why_it_is_refused(stack):
    # botocore 1.31.85 (November 2023) reads AWS_CONTAINER_AUTHORIZATION_TOKEN, not yet its _FILE
    # variant, the only one the webhook injects: it asks the sidecar without the header.
    python = os.path.join(BOTO3_2023, "bin", "python")
    assert os.access(python, os.X_OK), f"{python}: the test command installs it (ensure_boto3_2023)"
    registry = images(BIN, NODE, VENV)
    registry["e2e/boto3-2023"] = Image(entrypoint=[python, f"{ROOT}/e2e/clients/boto3_caller.py"],
                                       env={"PATH": f"{BOTO3_2023}/bin:/usr/bin:/bin", "HOME": "/tmp"})
    dep = deployment("boto3-2023", "credentials", "arn:aws:iam::123456789012:role/e2e-old", "e2e/boto3-2023")
    runner, (rc, out) = run_pod(stack, dep, registry=registry)
    assert rc != 0, out
    refused = ('Received non 200 response (401) from ECS metadata: {"error":"no Authorization header: '
               "this AWS SDK or client does not read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    assert refused in out, out
    assert "botocore 1.32.0" in out, out
    assert "credentials request refused" in runner.logs("tokenvend-sidecar")


@pytest.fixture(scope="module")
def arm64_sidecar():
    """The aarch64 sidecar: built by the test command (TOKENVEND_ARM64_SIDECAR), else here."""
    path = os.environ.get("TOKENVEND_ARM64_SIDECAR")
    if not path:
        path = subprocess.run(["bash", "-c", f"source {ROOT}/e2e/lib.sh && build_arm64_sidecar"],
                              check=True, capture_output=True, text=True).stdout.strip()
    with open(path, "rb") as f:
        header = f.read(20)
    # ELF, 64-bit, little-endian, e_machine 183 (EM_AARCH64).
    assert header[:5] == b"\x7fELF\x02" and int.from_bytes(header[18:20], "little") == 183, path
    return path


@pytest.mark.parametrize("mode", ["web-identity", "credentials"])
def test_an_arm64_sidecar_serves_an_unmodified_sdk(stack, arm64_sidecar, mode):
    # The stand-in image runs qemu-aarch64 on the aarch64 binary at the image's path, so the
    # sidecar and every startupProbe exec run the arm64 build; each exec is recorded. Both files
    # are for the sidecar's own non-root user.
    image = os.path.join(stack.work, f"arm64-image-{mode}")
    os.makedirs(image, mode=0o755)
    os.chmod(image, 0o755)
    execs, wrapper = os.path.join(image, "execs"), os.path.join(image, "tokenvend-sidecar")
    with open(execs, "w"):
        pass
    os.chmod(execs, 0o666)
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\necho "$1" >> {execs}\nexec {shutil.which("qemu-aarch64")} {arm64_sidecar} "$@"\n')
    os.chmod(wrapper, 0o755)
    registry = images(BIN, NODE, VENV)
    registry[SIDECAR_IMAGE].binaries = {"/usr/local/bin/tokenvend-sidecar": wrapper}
    role = "arn:aws:iam::123456789012:role/e2e-arm64"
    runner, (rc, out) = run_pod(stack, deployment(f"arm64-{mode[:4]}", mode, role, "e2e/boto3"), registry=registry)
    assert rc == 0, f"{out}\n--- sidecar ---\n{runner.logs('tokenvend-sidecar')}"
    session = "e2e.app" if mode == "credentials" else runner.name
    assert arns(out) == [f"arn:aws:sts::123456789012:assumed-role/e2e-arm64/{session}"], out
    with open(execs) as f:
        ran = f.read().split()
    assert "--mode" in ran and "probe" in ran, ran  # the sidecar itself and its startupProbe


def pem_blocks(text):
    return text.count("-----BEGIN CERTIFICATE-----")


def test_a_running_pod_follows_a_ca_rotation_by_the_certs_job(stack):
    # Last in this file: it leaves the stack on a new CA. The real tokenvend-certs rotates the CA
    # in three runs, as the install Job and its CronJob would over the overlap (the day-based
    # settings stand in for the calendar): the new CA beside the old while the old CA's serving
    # certificate goes on serving; a serving certificate from the new CA; the old CA dropped.
    # The pod's env keeps the bundle of its admission (the old CA) throughout.
    stack.restart_sts(session_seconds=16, token_ttl=16)
    bundle, served = os.path.join(stack.certs, "ca.crt"), os.path.join(stack.certs, "tls.crt")
    steps, seen = [], {}

    def read(path):
        try:
            with open(path) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def certs(*flags):
        r = subprocess.run([f"{BIN}/tokenvend-certs", "--service", "tokenvend-webhook,tokenvend-sts",
                            "--namespace", "tokenvend", "--out-dir", stack.certs, *flags],
                           capture_output=True, text=True)
        steps.append((flags, r.returncode, r.stdout + r.stderr))

    def until(predicate, seconds=40):
        deadline = time.time() + seconds
        while not predicate():
            if time.time() > deadline:
                return False
            time.sleep(0.2)
        return True

    def rotation(runner):
        kept = os.path.join(runner.volumes["tokenvend-aws"], "exchange-ca.pem")
        time.sleep(3)
        certs("--ca-validity-days", "4015", "--ca-renew-before-days", "3650")
        seen["beside"] = (pem_blocks(read(bundle)), until(lambda: read(kept) == read(bundle)))
        certs("--ca-validity-days", "4016", "--ca-renew-before-days", "3650",
              "--serving-validity-days", "366", "--renew-before-days", "365")
        # tokenvend-sts reloads its certificate within its 5-s check.
        seen["moved"] = until(lambda: ssl.get_server_certificate((HOST_IP, 443)).strip() == read(served).strip())
        certs("--ca-validity-days", "4016", "--ca-renew-before-days", "3650",
              "--serving-validity-days", "366", "--ca-overlap-days", "0")
        seen["alone"] = (pem_blocks(read(bundle)), until(lambda: read(kept) == read(bundle)))

    try:
        dep = deployment("ca-rotation", "web-identity", "arn:aws:iam::123456789012:role/e2e-rotation",
                         "e2e/boto3", ["--loop", "60"])
        runner, (rc, out) = run_pod(stack, dep, during=rotation)
    finally:
        stack.restart_sts(session_seconds=3600, token_ttl=3600)
    sidecar = runner.logs("tokenvend-sidecar")
    assert [rc for _, rc, _ in steps] == [0, 0, 0], steps
    assert "RotateCa" in steps[0][2] and "IssueServing" in steps[1][2], steps
    assert seen == {"beside": (2, True), "moved": True, "alone": (1, True)}, f"{seen}\n{sidecar}"
    assert rc == 0, f"{out}\n{sidecar}"
    answered_throughout(out, 60)
    assert sidecar.count("now trusting the exchange CA bundle") == 2, sidecar
    assert "refresh failed" not in sidecar and "keeping the exchange CA bundle" not in sidecar, sidecar
    assert sidecar.rfind('"message":"refreshed"') > sidecar.rfind("now trusting"), sidecar
    # Pods admitted from now on are given the new CA alone.
    _, pod = stack.admit(stack.pod_from_deployment(deployment("after", "web-identity", dep["spec"]["template"]
                                                             ["metadata"]["annotations"]["tremolo.io/aws-role"],
                                                             "e2e/boto3")))
    env = {e["name"]: e.get("value") for c in pod["spec"]["initContainers"] for e in c.get("env", [])}
    assert env["TOKENVEND_CA_PEM"] == read(bundle), env
