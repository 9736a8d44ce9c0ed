#!/usr/bin/env python3
"""Checks one rendered install (`kubectl kustomize` output) beyond its schemas, as
manifests/check.sh calls it:

    check-render.py WEBHOOK_BIN CA_FILE RENDERED.yaml [EXPECTED_NAMESPACE]

- Every field that names tokenvend's namespace names the Namespace it installs (object
  namespaces, RoleBinding subjects, the webhook's Service reference and namespaceSelector, the
  exchange URL, the certs job's namespace), and the names those fields pair with exist: a
  kustomize `namespace:` moves only metadata.namespace by itself.
- Every port a tokenvend Deployment serves is open to every source in its NetworkPolicies: the
  API server, kubelets and host-network pods (a sidecar in a `hostNetwork` pod dials from its
  node's address) are not pods a namespaceSelector or podSelector can name.
- No listener is bound to IPv4 alone (`0.0.0.0`, an IPv4 address): pods of an IPv6-only cluster
  have no IPv4 address, so such a server would never be reached there. `[::]` serves both.
- Each certs run (the Job, and the CronJob's Job) has an activeDeadlineSeconds under a day: with
  concurrencyPolicy Forbid, a run whose pod never starts (an image that cannot be pulled, a pod
  that cannot be scheduled) would otherwise skip every later daily run, renewals included, until
  someone deletes it. The deadline leaves room for the Job's own retries (backoffLimit 6: 10 s
  doubling to 320 s, 630 s of waits).
- tokenvend-webhook accepts its configuration as its pod would see it: the ConfigMap's file plus
  the Deployment's TOKENVEND_* env (`--check-config`) without a warning, and the sidecar image it
  injects has the tag of its own image.
- The webhook entries' objectSelectors, evaluated as the API server does, send a pod labelled
  `tremolo.io/aws-role: "true"` to the failurePolicy Fail entry alone; an unlabelled pod or one
  labelled "false" to none; and one labelled anything else ("True", "yes", "") to one Ignore
  entry, which refuses it with what to write instead of letting it start without credentials.

Prints one line per problem and exits 1 if there is any.
"""
import os
import subprocess
import sys
import tempfile

import yaml

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}


def pod_spec(doc):
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if doc["kind"] in ("Deployment", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def check(webhook_bin, ca_file, path, expected_ns):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    ours = [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "tokenvend"]
    errors = []
    namespaces = [d["metadata"]["name"] for d in ours if d["kind"] == "Namespace"]
    if len(namespaces) != 1:
        return [f"want one Namespace, found {namespaces}"]
    ns = namespaces[0]
    if expected_ns and ns != expected_ns:
        errors.append(f"installs into namespace {ns!r}, want {expected_ns!r}")
    named = lambda kind: {d["metadata"]["name"] for d in ours if d["kind"] == kind}  # noqa: E731
    services, accounts = named("Service"), named("ServiceAccount")

    for d in ours:
        what = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] not in CLUSTER_SCOPED and d["metadata"].get("namespace") != ns:
            errors.append(f"{what} is in namespace {d['metadata'].get('namespace')!r}, not {ns!r}")
        for s in d.get("subjects", []) if d["kind"] in ("RoleBinding", "ClusterRoleBinding") else []:
            if s["kind"] == "ServiceAccount" and (s.get("namespace") != ns or s["name"] not in accounts):
                errors.append(f"{what} binds ServiceAccount {s.get('namespace')}/{s['name']}, not one in {ns!r}")
        if d["kind"] == "MutatingWebhookConfiguration":
            for w in d["webhooks"]:
                svc = w["clientConfig"].get("service", {})
                if svc.get("namespace") != ns or svc.get("name") not in services:
                    errors.append(f"{what} webhook {w['name']} calls Service {svc.get('namespace')}/{svc.get('name')}, not one in {ns!r}")
                excluded = [v for e in w.get("namespaceSelector", {}).get("matchExpressions", [])
                            if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"
                            for v in e["values"]]
                if ns not in excluded or "kube-system" not in excluded:
                    errors.append(f"{what} webhook {w['name']} excludes namespaces {excluded}, want kube-system and {ns!r}")
        spec = pod_spec(d)
        for c in spec["containers"] if spec else []:
            env = {e["name"]: e for e in c.get("env", [])}
            if d["metadata"]["name"] == "tokenvend-certs":
                if any(a.startswith("--namespace") for a in c.get("args", [])):
                    errors.append(f"{what} gives --namespace literally; it comes from the pod's own namespace")
                source = env.get("TOKENVEND_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                if source != "metadata.namespace":
                    errors.append(f"{what}: TOKENVEND_NAMESPACE must come from metadata.namespace, got {env.get('TOKENVEND_NAMESPACE')}")
                served = next((a.split("=", 1)[1].split(",") for a in c.get("args", []) if a.startswith("--service=")), [])
                missing = sorted(services - set(served))
                if missing:
                    errors.append(f"{what}: the certificate would not name the Services {missing}")
            if d["metadata"]["name"] == "tokenvend-webhook" and c["name"] == "webhook":
                url = env.get("TOKENVEND_EXCHANGE_URL", {}).get("value", "")
                host = url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
                svc, _, rest = host.partition(".")
                if rest != f"{ns}.svc" or svc not in services:
                    errors.append(f"{what}: TOKENVEND_EXCHANGE_URL {url!r} is not a Service in {ns!r}")
                errors += check_webhook_config(webhook_bin, ca_file, ours, c)
    errors += opt_in_routes(ours)
    errors += closed_ports(ours)
    errors += ipv4_only_listeners(ours)
    errors += unbounded_certs_runs(ours)
    return errors


def unbounded_certs_runs(ours):
    errors = []
    for d in ours:
        if d["metadata"]["name"] != "tokenvend-certs" or d["kind"] not in ("Job", "CronJob"):
            continue
        job = d["spec"]["jobTemplate"]["spec"] if d["kind"] == "CronJob" else d["spec"]
        deadline = job.get("activeDeadlineSeconds")
        if not isinstance(deadline, int) or not 630 < deadline < 86400:
            errors.append(f"{d['kind']}/tokenvend-certs: activeDeadlineSeconds {deadline!r}: want more than the "
                          "630 s of its retries and less than a day, so a stuck run cannot block the next ones")
    return errors


def selects(selector, labels):
    """A metav1.LabelSelector against a pod's labels, as the API server evaluates it."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels,
              "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def opt_in_routes(ours):
    """Which webhook entries a pod goes to, for each kind of opt-in label."""
    entries = [w for d in ours if d["kind"] == "MutatingWebhookConfiguration" for w in d["webhooks"]]
    key = "tremolo.io/aws-role"
    want = {"true": ["Fail"], None: [], "false": [], "True": ["Ignore"], "yes": ["Ignore"], "": ["Ignore"]}
    problems = []
    for value, policies in want.items():
        labels = {"app": "x"} if value is None else {"app": "x", key: value}
        got = [w.get("failurePolicy", "Fail") for w in entries if selects(w.get("objectSelector", {}), labels)]
        if got != policies:
            shown = "no label" if value is None else f"{key}={value!r}"
            problems.append(f"a pod with {shown} goes to webhook entries with failurePolicy {got}, want {policies}")
    return problems


def ipv4_only_listeners(ours):
    """Listen addresses in our pods' args and env that take IPv4 connections only."""
    problems = []
    for d in ours:
        spec = pod_spec(d)
        for c in spec["containers"] if spec else []:
            given = [a.split("=", 1) for a in c.get("args", []) if a.startswith("--") and "listen" in a and "=" in a]
            given += [(e["name"], e.get("value", "")) for e in c.get("env", []) if e["name"].endswith("_LISTEN")]
            for name, value in given:
                host = value.rsplit(":", 1)[0]
                if host.count(".") == 3 and all(p.isdigit() for p in host.split(".")):
                    problems.append(f"{d['kind']}/{d['metadata']['name']} container {c['name']}: {name}={value} "
                                    "takes IPv4 only; an IPv6-only cluster's pods would never reach it (use [::])")
    return problems


def closed_ports(ours):
    """Ports of our Deployments that no ingress rule of a NetworkPolicy selecting their pods opens
    to every source (a rule without `from`)."""
    policies = [d for d in ours if d["kind"] == "NetworkPolicy" and "Ingress" in d["spec"].get("policyTypes", ["Ingress"])]
    problems = []
    for d in ours:
        if d["kind"] != "Deployment":
            continue
        labels = d["spec"]["template"]["metadata"].get("labels", {})
        rules = [r for p in policies
                 if all(labels.get(k) == v for k, v in p["spec"]["podSelector"].get("matchLabels", {}).items())
                 for r in p["spec"].get("ingress", [])]
        for c in d["spec"]["template"]["spec"]["containers"]:
            for port in c.get("ports", []):
                names = {port["containerPort"], port.get("name")}
                if not any("from" not in r and ("ports" not in r or any(p.get("port") in names for p in r["ports"]))
                           for r in rules):
                    problems.append(f"Deployment/{d['metadata']['name']}: port {port['containerPort']} is not open "
                                    "to every source in its NetworkPolicies (the API server, kubelets and "
                                    "host-network pods match no namespaceSelector)")
    return problems


def check_webhook_config(webhook_bin, ca_file, ours, container):
    cms = [d for d in ours if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("tokenvend-webhook-config")]
    if len(cms) != 1:
        return [f"want one tokenvend-webhook-config ConfigMap, found {len(cms)}"]
    cfg = yaml.safe_load(cms[0]["data"]["config.yaml"])
    problems = []
    # Released together: an upgrade that bumps one tag and not the other would give pods the old
    # sidecar.
    env_values = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    sidecar = env_values.get("TOKENVEND_SIDECAR_IMAGE", cfg.get("sidecarImage", ""))
    if tag(sidecar) != tag(container["image"]):
        problems.append(f"sidecar image {sidecar!r} is not the tag of the webhook's image {container['image']!r}")
    cfg["exchangeCaFile"] = ca_file  # the Secret-mounted path does not exist here
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENVEND_")}
    env["RUST_BACKTRACE"] = "0"
    env.update(env_values)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(cfg, f)
        f.flush()
        run = subprocess.run([webhook_bin, "--check-config", "--config", f.name],
                             env=env, capture_output=True, text=True)
    if run.returncode != 0:
        problems.append(f"tokenvend-webhook rejects its configuration: {run.stderr.strip().splitlines()[0]}")
    problems += [line for line in run.stdout.splitlines() if line.startswith("warning: ")]
    return problems


def tag(image):
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


if __name__ == "__main__":
    webhook_bin, ca_file, path = sys.argv[1:4]
    expected = sys.argv[4] if len(sys.argv) > 4 else None
    problems = check(webhook_bin, ca_file, path, expected)
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)
