"""The local end-to-end harness: every tokenvend binary for real on loopback, moto as AWS STS,
and two STAND-INS for roles that cannot run here, following their documented contracts:

- the API server's admission call (`Stack.admit`): builds the pod a controller would create from a
  Deployment's template and POSTs an AdmissionReview v1 to the webhook over TLS, then applies the
  returned JSON patch with `kubectl patch --local`;
- the kubelet (`PodRunner`): mints the projected service-account token (Kubernetes' claims, the
  volume's audience and expiry, signed by a "cluster" key whose JWKS tokenvend-sts trusts) and
  re-mints it as the kubelet rotates tokens (after 80% of its lifetime); gives the pod its own
  network namespace (127.0.0.1 is pod-local) attached to a bridge where the "cluster services"
  listen, with an /etc/hosts resolving their Service names; runs each container in its own mount
  namespace with every volume bind-mounted at its mountPath (read-only where the spec says so);
  starts init containers in order, native sidecars first and gated on their startupProbe, then
  the app containers with exactly the env of their spec (fieldRefs resolved as the kubelet does),
  in order, each after the previous one's postStart exec hook has returned (a failed hook: the
  kubelet's FailedPostStartHook, here an error with the hook's output).

Needs root (network and mount namespaces), iproute2 and util-linux.
"""
import base64
import http.client
import json
import os
import random
import shlex
import shutil
import signal
import socket
import ssl
import string
import subprocess
import threading
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BRIDGE = "tvbr0"
HOST_IP = "10.203.0.1"
SUBNET = 24
STS_HOST = "tokenvend-sts.tokenvend.svc"
MOTO_HOST = "moto.aws-standin.svc"
MOTO_URL = f"http://{MOTO_HOST}:5000"
SIDECAR_IMAGE = "ghcr.io/tokenvend/tokenvend-sidecar:0.1.0"
CLUSTER_ISSUER = "https://kubernetes.default.svc.cluster.local"
WEBHOOK_PORT = 18443
WEBHOOK_PROBE_PORT = 18080


def admission_review(pod, uid, operation="CREATE"):
    """The AdmissionReview v1 the API server sends for a Pod a ReplicaSet controller creates."""
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": pod["metadata"].get("namespace", "default"), "operation": operation,
                        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                        "object": pod, "dryRun": False}}


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kw)


def port_open(host, port):
    import socket
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Stack:
    """moto, tokenvend-sts and tokenvend-webhook, with certificates from tokenvend-certs."""

    def __init__(self, work, bin_dir, session_seconds=3600, token_ttl=3600, webhook_config=None, log=print):
        self.work = work
        self.bin = bin_dir
        self.log = log
        self.procs = {}
        self.session_seconds = session_seconds
        self.token_ttl = token_ttl
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        self._bridge()
        self.certs = os.path.join(work, "certs")
        out = sh(f"{bin_dir}/tokenvend-certs", "--service", "tokenvend-webhook,tokenvend-sts",
                 "--namespace", "tokenvend", "--out-dir", self.certs)
        self.log(f"tokenvend-certs: CA + serving cert for tokenvend-webhook and tokenvend-sts in {self.certs}")
        del out
        self.cluster_key = os.path.join(work, "cluster.pem")
        self.jwks = os.path.join(work, "cluster-jwks.json")
        self.mint("default", "default", None, "tokenvend", 600, create=True)
        os.makedirs(os.path.join(work, "signing-keys"))
        sh(f"{bin_dir}/tokenvend-sts", "keygen", "--out", os.path.join(work, "signing-keys", "2026-01.pem"))
        with open(os.path.join(work, "policy.json"), "w") as f:
            f.write('{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject",'
                    '"Resource":"arn:aws:s3:::data/{{ namespace }}/{{ serviceaccount }}/*"}]}')
        try:
            self.start_moto()
            self.start_sts()
            self.start_webhook(webhook_config or {})
        except BaseException:
            self.close()  # whatever did start must not outlive the failure
            raise

    # --- the "cluster network" -------------------------------------------------------------
    def _bridge(self):
        sh("ip", "link", "del", BRIDGE, check=False)
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{HOST_IP}/{SUBNET}", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")

    # --- the "kube-apiserver's" service-account token issuer ---------------------------------
    def mint(self, namespace, sa, pod, audience, ttl, create=False):
        args = [f"{self.bin}/examples/mint-sa-token", "--key", self.cluster_key, "--jwks-out", self.jwks,
                "--issuer", CLUSTER_ISSUER, "--namespace", namespace, "--service-account", sa,
                "--audience", audience, "--ttl", str(ttl)]
        if pod:
            args += ["--pod", pod]
        if create:
            args.append("--create-key")
        return sh(*args).stdout

    # --- services ---------------------------------------------------------------------------
    def _spawn(self, name, args, env=None, cwd=None):
        logf = open(os.path.join(self.work, f"{name}.log"), "a")
        p = subprocess.Popen(args, env=env, cwd=cwd or self.work, stdout=logf, stderr=subprocess.STDOUT)
        self.procs[name] = p
        return p

    def _wait_started(self, name, predicate, what):
        """Wait up to 30 s for predicate(); a process that exits first fails at once, with its log."""
        p = self.procs[name]
        deadline = time.time() + 30
        while not predicate():
            if p.poll() is not None or time.time() >= deadline:
                why = f"exited with code {p.returncode}" if p.poll() is not None else "timed out after 30 s"
                with open(os.path.join(self.work, f"{name}.log"), errors="replace") as f:
                    tail = "".join(f.readlines()[-20:])
                raise RuntimeError(f"{what}: {name} {why}; last lines of its log:\n{tail}")
            time.sleep(0.1)

    def start_moto(self):
        moto = os.path.join(os.environ.get("VIRTUAL_ENV", os.path.join(ROOT, ".venv")), "bin", "moto_server")
        self._spawn("moto", [moto, "-H", HOST_IP, "-p", "5000"])
        self._wait_started("moto", lambda: port_open(HOST_IP, 5000), "moto did not listen")
        self.log(f"moto (AWS STS) on {HOST_IP}:5000 as {MOTO_URL}")

    def sts_env(self):
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TOKENVEND_LISTEN": f"{HOST_IP}:443",
            "TOKENVEND_TLS_CERT": os.path.join(self.certs, "tls.crt"),
            "TOKENVEND_TLS_KEY": os.path.join(self.certs, "tls.key"),
            "TOKENVEND_CA_BUNDLE_FILE": os.path.join(self.certs, "ca.crt"),
            "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/tokenvend-default",
            "TOKENVEND_ALLOWED_ROLES": "arn:aws:iam::123456789012:role/*",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "AWS_ENDPOINT_URL_STS": f"http://{HOST_IP}:5000",
            "POLICY_TEMPLATE_PATH": os.path.join(self.work, "policy.json"),
            "SESSION_DURATION_SECONDS": str(self.session_seconds),
            "TOKENVEND_TOKEN_TTL_SECONDS": str(self.token_ttl),
            "TOKENVEND_ALLOW_SHORT_SESSIONS": "true",
            "TOKENVEND_VALIDATION": "jwks",
            "TOKENVEND_OIDC_ISSUER": CLUSTER_ISSUER,
            "TOKENVEND_JWKS_FILE": self.jwks,
            "TOKENVEND_VALIDATION_CACHE_SECONDS": "0",
            "TOKENVEND_ISSUER_URL": f"https://{STS_HOST}",
            "TOKENVEND_SIGNING_KEY_DIR": os.path.join(self.work, "signing-keys"),
            "LOG_LEVEL": "INFO",
            # No Service or kube-proxy in front of it here, so nothing to wait for at a stop: a
            # stop is an outage at once (the outage test relies on it).
            "TOKENVEND_SHUTDOWN_DELAY_SECONDS": "0",
        }

    def start_sts(self):
        self._spawn("sts", [f"{self.bin}/tokenvend-sts"], env=self.sts_env())
        self._wait_started("sts", lambda: port_open(HOST_IP, 443), "tokenvend-sts did not listen")
        self.log(f"tokenvend-sts on https://{HOST_IP}:443 as https://{STS_HOST} (JWKS validation, moto behind it)")

    def stop_sts(self):
        p = self.procs.pop("sts")
        p.terminate()
        p.wait(10)

    def restart_sts(self, session_seconds=None, token_ttl=None):
        self.stop_sts()
        if session_seconds:
            self.session_seconds = session_seconds
        if token_ttl:
            self.token_ttl = token_ttl
        self.start_sts()

    def start_webhook(self, extra):
        cfg = {"region": "us-east-1", "exchangeUrl": f"https://{STS_HOST}",
               "exchangeCaFile": os.path.join(self.certs, "ca.crt")}
        cfg.update(extra)
        path = os.path.join(self.work, "webhook-config.yaml")
        with open(path, "w") as f:
            for k, v in cfg.items():
                f.write(f"{k}: {json.dumps(v)}\n")
        self._spawn("webhook", [f"{self.bin}/tokenvend-webhook", "--listen", f"127.0.0.1:{WEBHOOK_PORT}",
                                "--probe-listen", f"127.0.0.1:{WEBHOOK_PROBE_PORT}",
                                "--tls-cert", os.path.join(self.certs, "tls.crt"),
                                "--tls-key", os.path.join(self.certs, "tls.key"), "--config", path],
                    env={"PATH": os.environ.get("PATH", ""), "TOKENVEND_SHUTDOWN_DELAY_SECONDS": "0"})
        self._wait_started("webhook", self._ready, "tokenvend-webhook did not become ready")
        self.log(f"tokenvend-webhook on https://127.0.0.1:{WEBHOOK_PORT} (serving cert from tokenvend-certs)")

    def restart_webhook(self, extra):
        """Stop tokenvend-webhook and start it again with another configuration."""
        p = self.procs.pop("webhook")
        p.terminate()
        p.wait(10)
        self.start_webhook(extra)

    def _ready(self):
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{WEBHOOK_PROBE_PORT}/readyz", timeout=1).status == 200
        except OSError:
            return False

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        sh("ip", "link", "del", BRIDGE, check=False)

    # --- the API server's side of admission ---------------------------------------------------
    def pod_from_deployment(self, deployment, annotations=None):
        """The pod a ReplicaSet controller creates: generateName, namespace, owner, template."""
        t = json.loads(json.dumps(deployment["spec"]["template"]))
        meta = t.get("metadata", {})
        meta["annotations"] = {**meta.get("annotations", {}), **(annotations or {})}
        name = deployment["metadata"]["name"]
        meta.update({"generateName": f"{name}-5d7f9c6b8-", "namespace": deployment["metadata"].get("namespace", "default"),
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{name}-5d7f9c6b8",
                                          "uid": str(uuid.uuid4()), "controller": True, "blockOwnerDeletion": True}]})
        spec = t["spec"]
        spec.setdefault("serviceAccountName", "default")
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}

    def admit(self, pod):
        """AdmissionReview v1 over TLS → (response, mutated pod or None)."""
        uid = str(uuid.uuid4())
        review = admission_review(pod, uid)
        # As the API server does: connect to the Service and verify the certificate for its DNS
        # name (here the Service's address is the webhook's loopback port).
        ctx = ssl.create_default_context(cafile=os.path.join(self.certs, "ca.crt"))
        raw = socket.create_connection(("127.0.0.1", WEBHOOK_PORT), timeout=10)
        conn = http.client.HTTPSConnection("tokenvend-webhook.tokenvend.svc", 443, timeout=10, context=ctx)
        conn.sock = ctx.wrap_socket(raw, server_hostname="tokenvend-webhook.tokenvend.svc")
        conn.request("POST", "/mutate", body=json.dumps(review), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"webhook answered {resp.status}: {resp.read()[:300]!r}")
        answer = json.load(resp)["response"]
        conn.close()
        assert answer["uid"] == uid
        if not answer["allowed"]:
            return answer, None
        if "patch" not in answer:
            return answer, pod
        patch = json.loads(base64.b64decode(answer["patch"]))
        d = os.path.join(self.work, "admission", uid)
        os.makedirs(d)
        with open(os.path.join(d, "pod.json"), "w") as f:
            json.dump(pod, f)
        with open(os.path.join(d, "patch.json"), "w") as f:
            json.dump(patch, f)
        kubectl = shutil.which("kubectl") or "kubectl"
        out = sh(kubectl, "patch", "--local", "-f", os.path.join(d, "pod.json"), "--type=json",
                 "--patch-file", os.path.join(d, "patch.json"), "-o", "json")
        return answer, json.loads(out.stdout)


class Image:
    """What a container image would provide: entrypoint/cmd, env (PATH, HOME...), and for our
    own images, which built binary stands at which path inside the image."""

    def __init__(self, entrypoint=None, cmd=None, env=None, binaries=None):
        self.entrypoint = entrypoint or []
        self.cmd = cmd or []
        self.env = env or {}
        self.binaries = binaries or {}


class PodRunner:
    """Plays the kubelet for one mutated pod (see the module docstring)."""
    _next = [10]

    def __init__(self, stack, pod, images, rotate_after=None, log=print):
        self.stack = stack
        self.pod = pod
        self.images = images
        self.log = log
        meta = pod["metadata"]
        self.name = meta.get("name") or meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        self.namespace = meta["namespace"]
        self.sa = pod["spec"].get("serviceAccountName", "default")
        PodRunner._next[0] += 1
        self.n = PodRunner._next[0]
        self.ip = f"10.203.0.{self.n}"
        self.netns = f"tvpod{self.n}"
        self.dir = os.path.join(stack.work, "pods", self.name)
        os.makedirs(self.dir)
        self.rotate_after = rotate_after
        self.procs = {}
        self.stopping = threading.Event()
        self.rotations = 0
        self.hooks = []  # (container, seconds its postStart hook took)
        self._net()
        self.volumes = {}
        self._volumes()

    # --- network namespace ---------------------------------------------------------------------
    def _net(self):
        host_if, pod_if = f"tvh{self.n}", f"tvp{self.n}"
        sh("ip", "netns", "del", self.netns, check=False)
        sh("ip", "netns", "add", self.netns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", pod_if)
        sh("ip", "link", "set", host_if, "master", BRIDGE)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "link", "set", pod_if, "netns", self.netns)
        ns = ["ip", "netns", "exec", self.netns]
        sh(*ns, "ip", "link", "set", "lo", "up")
        sh(*ns, "ip", "link", "set", pod_if, "name", "eth0")
        sh(*ns, "ip", "addr", "add", f"{self.ip}/{SUBNET}", "dev", "eth0")
        sh(*ns, "ip", "link", "set", "eth0", "up")
        sh(*ns, "ip", "route", "add", "default", "via", HOST_IP)
        self.hosts = os.path.join(self.dir, "hosts")
        with open(self.hosts, "w") as f:
            f.write(f"127.0.0.1 localhost\n{self.ip} {self.name}\n{HOST_IP} {STS_HOST} {MOTO_HOST}\n")

    # --- volumes ---------------------------------------------------------------------------------
    def _volumes(self):
        for v in self.pod["spec"].get("volumes", []):
            d = os.path.join(self.dir, "volumes", v["name"])
            os.makedirs(d)
            os.chmod(d, 0o777)  # emptyDir: world-writable, as the kubelet creates it
            self.volumes[v["name"]] = d
            for src in v.get("projected", {}).get("sources", []):
                t = src.get("serviceAccountToken")
                if t:
                    os.chmod(d, 0o755)
                    self._projected_token(d, t)

    def _projected_token(self, d, t):
        ttl = t.get("expirationSeconds", 3600)
        path = t["path"]
        self._write_token(d, path, t.get("audience", "kubernetes"), ttl)
        os.symlink(os.path.join("..data", path), os.path.join(d, path))
        every = self.rotate_after or ttl * 0.8

        def rotate():
            while not self.stopping.wait(every):
                self._write_token(d, path, t.get("audience", "kubernetes"), ttl)
                self.rotations += 1
        threading.Thread(target=rotate, daemon=True).start()

    def _write_token(self, d, path, audience, ttl):
        # The kubelet's atomic writer: a new timestamped dir, then an atomic swap of ..data.
        token = self.stack.mint(self.namespace, self.sa, self.name, audience, ttl)
        gen = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{random.randint(0, 1 << 30)}"
        os.makedirs(os.path.join(d, gen))
        with open(os.path.join(d, gen, path), "w") as f:
            f.write(token)
        os.chmod(os.path.join(d, gen, path), 0o644)
        tmp = os.path.join(d, "..data_tmp")
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(gen, tmp)
        os.rename(tmp, os.path.join(d, "..data"))
        self.projected_token = token

    # --- containers -----------------------------------------------------------------------------
    def _env(self, c, image):
        env = dict(image.env)
        field = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                 "spec.serviceAccountName": self.sa, "status.podIP": self.ip}
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            elif "valueFrom" in e and "fieldRef" in e["valueFrom"]:
                env[e["name"]] = field[e["valueFrom"]["fieldRef"]["fieldPath"]]
        return env

    def _argv(self, c, image):
        cmd = c.get("command") or image.entrypoint
        args = c.get("args") if "args" in c else ([] if c.get("command") else image.cmd)
        argv = list(cmd) + list(args or [])
        if argv and argv[0] in image.binaries:
            argv[0] = image.binaries[argv[0]]
        return argv

    def _mount_script(self, c):
        lines = ["set -e", f"mount --bind {self.hosts} /etc/hosts"]
        for m in c.get("volumeMounts", []):
            src, dst = self.volumes[m["name"]], m["mountPath"]
            lines.append(f"mkdir -p {shlex.quote(dst)} && mount --bind {shlex.quote(src)} {shlex.quote(dst)}")
            if m.get("readOnly"):
                lines.append(f"mount -o remount,bind,ro {shlex.quote(dst)}")
        return "\n".join(lines)

    def _image(self, c):
        if c["image"] not in self.images:
            raise KeyError(f"no stand-in for image {c['image']}")
        return self.images[c["image"]]

    def start(self, c):
        image = self._image(c)
        env = self._env(c, image)
        argv = self._argv(c, image)
        sec = c.get("securityContext", {})
        uid = sec.get("runAsUser")
        run_as = ["setpriv", f"--reuid={uid}", f"--regid={sec.get('runAsGroup', uid)}", "--clear-groups"] if uid else []
        if env.get("HOME", "/tmp") == "/tmp":
            # A private HOME per container (the AWS CLI caches credentials under it).
            env["HOME"] = os.path.join(self.dir, f"home-{c['name']}")
            os.makedirs(env["HOME"], exist_ok=True)
            os.chmod(env["HOME"], 0o777)
        # The marker says the mounts are in place: a container the kubelet has started has its
        # volumes, and an exec into it (a hook, a probe) sees them.
        started = os.path.join(self.dir, f"{c['name']}.started")
        script = self._mount_script(c) + f"\n: > {shlex.quote(started)}" + "\nexec env -i " + " ".join(
            shlex.quote(f"{k}={v}") for k, v in env.items()) + " " + " ".join(shlex.quote(a) for a in run_as + argv)
        log = open(os.path.join(self.dir, f"{c['name']}.log"), "w")
        p = subprocess.Popen(["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private",
                              "sh", "-c", script], stdout=log, stderr=subprocess.STDOUT)
        self.procs[c["name"]] = p
        deadline = time.monotonic() + 30
        while not os.path.exists(started):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{c['name']} did not start ({p.poll()}): {self.logs(c['name'])}")
            time.sleep(0.01)
        return p

    def _exec(self, c, command):
        """Run an exec handler's command inside the container's namespaces."""
        argv = list(command)
        image = self._image(c)
        if argv[0] in image.binaries:
            argv[0] = image.binaries[argv[0]]
        return sh("nsenter", "-t", str(self.procs[c["name"]].pid), "-m", "-n", "--", *argv, check=False)

    def post_start(self, c):
        """Run the container's postStart exec hook to its end, as the kubelet does before it starts
        the next container."""
        hook = c.get("lifecycle", {}).get("postStart")
        if not hook:
            return
        t0 = time.monotonic()
        r = self._exec(c, hook["exec"]["command"])
        if r.returncode != 0:
            raise RuntimeError(f"FailedPostStartHook on {c['name']} ({r.returncode}): {r.stdout}{r.stderr}")
        self.hooks.append((c["name"], time.monotonic() - t0))
        self.log(f"   kubelet: {c['name']} postStart hook returned")

    def probe(self, c):
        """Run the container's startupProbe exec command inside its namespaces until it passes."""
        probe = c.get("startupProbe")
        if not probe:
            return
        period = probe.get("periodSeconds", 10)
        for _ in range(probe.get("failureThreshold", 3)):
            p = self.procs[c["name"]]
            if p.poll() is not None:
                raise RuntimeError(f"{c['name']} exited with {p.returncode} before its startupProbe passed: {self.logs(c['name'])}")
            if self._exec(c, probe["exec"]["command"]).returncode == 0:
                return
            time.sleep(period)
        raise RuntimeError(f"{c['name']} startupProbe never passed: {self.logs(c['name'])}")

    def logs(self, name):
        with open(os.path.join(self.dir, f"{name}.log")) as f:
            return f.read()

    def run(self, timeout=120):
        """Init containers in order (native sidecars gated on startupProbe), then the app
        containers; returns {container: (exit code, output)} of the app containers."""
        spec = self.pod["spec"]
        sidecars = []
        for c in spec.get("initContainers", []):
            self.start(c)
            if c.get("restartPolicy") == "Always":
                sidecars.append(c["name"])
                self.probe(c)
                self.log(f"   kubelet: {c['name']} started; startupProbe passed")
            else:
                rc = self.procs[c["name"]].wait(timeout)
                if rc != 0:
                    raise RuntimeError(f"init container {c['name']} failed ({rc}): {self.logs(c['name'])}")
                self.log(f"   kubelet: init container {c['name']} completed")
        apps = []
        for c in spec["containers"]:
            self.start(c)
            self.post_start(c)
            if c["name"] == "tokenvend-sidecar":
                sidecars.append(c["name"])
            else:
                apps.append(c["name"])
        results = {}
        for name in apps:
            rc = self.procs[name].wait(timeout)
            results[name] = (rc, self.logs(name))
        return results

    def stop(self):
        self.stopping.set()
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        sh("ip", "netns", "del", self.netns, check=False)
        sh("ip", "link", "del", f"tvh{self.n}", check=False)


def images(bin_dir, node_modules, venv):
    """The stand-in registry: image name → what runs."""
    base = {"PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"}
    sidecar = Image(env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
                    binaries={"/usr/local/bin/tokenvend-sidecar": f"{bin_dir}/tokenvend-sidecar"})
    return {
        SIDECAR_IMAGE: sidecar,
        "e2e/aws-cli": Image(entrypoint=[f"{venv}/bin/aws"], cmd=["sts", "get-caller-identity", "--output", "json"], env=base),
        "e2e/boto3": Image(entrypoint=[f"{venv}/bin/python", f"{ROOT}/e2e/clients/boto3_caller.py"], env=base),
        "e2e/js-sdk-v3": Image(entrypoint=[shutil.which("node") or "node", f"{ROOT}/e2e/clients/js_caller.cjs"],
                               env={**base, "NODE_PATH": node_modules}),
        "e2e/rust-sdk": Image(entrypoint=[f"{bin_dir}/examples/caller-identity"], env=base),
    }
