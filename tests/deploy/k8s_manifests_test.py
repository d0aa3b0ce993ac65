#!/usr/bin/python3
"""deploy/k8s renders, validates and holds together (deploy/k8s/README.md, "What is validated").

1. `kubectl kustomize` renders base/ and every overlays/*/.
2. kubernetes-validate --strict accepts every object of every render, and make-secrets.sh's
   output, against Kubernetes VALIDATE_VERSION (only the Prometheus Operator's CRD kinds,
   monitoring.coreos.com, have no schema there, and check_manifests.py checks those); a render
   with a misspelt field is rejected, so the validator is known to be strict.
3. check_manifests.py (the structural checks a schema cannot make) accepts every render with the
   Secrets make-secrets.sh makes, and rejects each of a list of broken copies, made here by
   editing the rendered objects, with the message that names the fault.

Tools: kubectl (1.27 or newer: kustomize v5) and kubernetes-validate, found at the fixed paths
tools/install_deploy_tools.sh installs to (/opt/dstrain-tools/venv/bin), else kubectl on PATH.
A missing tool FAILS this test, naming the installer: a check that silently skips would let the
manifests rot. DSTRAIN_DEPLOY_TOOLS_OPTIONAL=1 (bazel test --test_env=...) makes it skip
instead, for a machine that cannot install them; nothing in the project sets it.
"""
import copy
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import check_manifests  # noqa: E402

VALIDATE_VERSION = "1.30.0"
MIN_KUBECTL_MINOR = 27
TOOLS = "/opt/dstrain-tools/venv/bin"
CRD_GROUPS = ("monitoring.coreos.com/",)


def runfiles_root():
    srcdir = os.environ.get("TEST_SRCDIR")
    if srcdir:
        return os.path.join(srcdir, os.environ.get("TEST_WORKSPACE", "__main__"))
    return os.path.abspath(os.path.join(HERE, "..", ".."))  # run by hand from the tree


def find_kubectl():
    candidates = [os.environ.get("DSTRAIN_KUBECTL"), os.path.join(TOOLS, "kubectl"),
                  shutil.which("kubectl", path="/usr/local/bin:/usr/bin:/bin:" +
                               os.environ.get("PATH", ""))]
    problems = []
    for k in candidates:
        if not k or not os.access(k, os.X_OK):
            continue
        try:
            out = subprocess.run([k, "version", "--client", "-o", "json"], capture_output=True,
                                 text=True, timeout=60, env=tool_env())
            info = json.loads(out.stdout)["clientVersion"]
            minor = int(re.match(r"\d+", info["minor"]).group(0))
        except (OSError, ValueError, KeyError, AttributeError, subprocess.SubprocessError) as e:
            problems.append("%s: cannot read its version (%s)" % (k, e))
            continue
        if int(info["major"]) == 1 and minor >= MIN_KUBECTL_MINOR:
            return k, None
        problems.append("%s is %s, older than 1.%d" % (k, info.get("gitVersion"),
                                                       MIN_KUBECTL_MINOR))
    return None, "; ".join(problems) or "no kubectl at %s or on PATH" % TOOLS


def tool_env():
    env = dict(os.environ)
    home = os.environ.get("TEST_TMPDIR", "/tmp")
    env.setdefault("HOME", home)
    env["KUBECONFIG"] = os.path.join(home, "no-kubeconfig")  # nothing here talks to a cluster
    return env


def pinned_validator_version():
    with open(os.path.join(HERE, "tools-requirements.txt")) as f:
        for line in f:
            m = re.match(r"kubernetes-validate==(\S+)", line.strip())
            if m:
                return m.group(1)
    raise AssertionError("tools-requirements.txt pins no kubernetes-validate")


def dump(docs):
    return yaml.safe_dump_all(docs, sort_keys=False)


class Fixture:
    """The tools, a private copy of deploy/ (kustomize refuses symlinks leaving its root, and
    the runfiles are symlinks), the renders and the Secrets; made once for all tests."""

    ready = False
    error = None
    skip_reason = None

    @classmethod
    def make(cls):
        """Every test fails with the same message when the fixture cannot be made."""
        if not cls.ready:
            cls.ready = True
            try:
                cls._make()
            except (AssertionError, OSError, subprocess.SubprocessError) as e:
                cls.error = "%s: %s" % (type(e).__name__, e)
        if cls.error:
            raise AssertionError(cls.error)

    @classmethod
    def _make(cls):
        kubectl, why = find_kubectl()
        validator = os.path.join(TOOLS, "kubernetes-validate")
        missing = []
        if kubectl is None:
            missing.append("kubectl >= 1.%d (%s)" % (MIN_KUBECTL_MINOR, why))
        if not os.access(validator, os.X_OK):
            missing.append("kubernetes-validate (no %s)" % validator)
        if missing:
            message = ("missing %s: run tools/install_deploy_tools.sh (as root) first"
                       % " and ".join(missing))
            if os.environ.get("DSTRAIN_DEPLOY_TOOLS_OPTIONAL") == "1":
                cls.skip_reason = message + " (skipped: DSTRAIN_DEPLOY_TOOLS_OPTIONAL=1)"
                return
            raise AssertionError(message)
        cls.kubectl, cls.validator = kubectl, validator
        tmp = os.environ.get("TEST_TMPDIR") or __import__("tempfile").mkdtemp()
        cls.tmp = os.path.join(tmp, "deploy-test")
        shutil.rmtree(cls.tmp, ignore_errors=True)
        root = runfiles_root()
        cls.k8s = os.path.join(cls.tmp, "deploy", "k8s")
        shutil.copytree(os.path.join(root, "deploy", "k8s"), cls.k8s, symlinks=False)
        os.makedirs(os.path.join(cls.tmp, "deploy", "local"))
        shutil.copy(os.path.join(root, "deploy", "local", "make_pki.sh"),
                    os.path.join(cls.tmp, "deploy", "local", "make_pki.sh"))
        cls.overlays = sorted(os.path.basename(os.path.dirname(p)) for p in
                              glob.glob(os.path.join(cls.k8s, "overlays", "*",
                                                     "kustomization.yaml")))
        cls.renders = {}
        for name in ["base"] + ["overlays/" + o for o in cls.overlays]:
            out = subprocess.run([kubectl, "kustomize", os.path.join(cls.k8s, name)],
                                 capture_output=True, text=True, timeout=120, env=tool_env())
            if out.returncode != 0:
                raise AssertionError("kubectl kustomize %s failed:\n%s" % (name, out.stderr))
            path = os.path.join(cls.tmp, name.replace("/", "-") + ".yaml")
            with open(path, "w") as f:
                f.write(out.stdout)
            cls.renders[name] = path
        env = tool_env()
        env["PATH"] = os.path.dirname(kubectl) + ":/usr/bin:/bin"
        cls.secrets = os.path.join(cls.tmp, "secrets.yaml")
        out = subprocess.run([os.path.join(cls.k8s, "make-secrets.sh"), "--pki",
                              os.path.join(cls.tmp, "pki"), "--out", cls.secrets],
                             capture_output=True, text=True, timeout=120, env=env)
        if out.returncode != 0:
            raise AssertionError("make-secrets.sh failed:\n%s%s" % (out.stdout, out.stderr))

    @classmethod
    def docs(cls, name):
        return check_manifests.load(cls.renders[name])


class ToolsTest(unittest.TestCase):
    def setUp(self):
        Fixture.make()
        if Fixture.skip_reason:
            self.skipTest(Fixture.skip_reason)

    def test_validator_is_the_pinned_version(self):
        out = subprocess.run([Fixture.validator, "--version"], capture_output=True, text=True,
                             timeout=60)
        self.assertIn(pinned_validator_version(), out.stdout + out.stderr)

    def test_every_overlay_renders(self):
        for must in ("cpu", "gpu"):
            self.assertIn(must, Fixture.overlays)
        for name, path in Fixture.renders.items():
            kinds = {d["kind"] for d in check_manifests.load(path)}
            self.assertTrue({"StatefulSet", "Service", "NetworkPolicy",
                             "PodDisruptionBudget", "PersistentVolumeClaim"} <= kinds,
                            "%s renders only %s" % (name, sorted(kinds)))

    def validate(self, path):
        out = subprocess.run([Fixture.validator, "-k", VALIDATE_VERSION, "--strict", path],
                             capture_output=True, text=True, timeout=300)
        text = out.stdout + out.stderr
        missing = [line for line in text.splitlines() if "Couldn't find schema" in line and
                   not any(g in line for g in CRD_GROUPS)]
        return out.returncode, text, missing

    def test_renders_and_secrets_pass_strict_schema_validation(self):
        for path in list(Fixture.renders.values()) + [Fixture.secrets]:
            rc, text, missing = self.validate(path)
            self.assertEqual(rc, 0, "kubernetes-validate %s --strict rejects %s:\n%s"
                             % (VALIDATE_VERSION, path, text))
            self.assertEqual(missing, [], "no schema for core kinds in %s" % path)
            self.assertIn("passed", text)

    def test_strict_validation_rejects_an_unknown_field(self):
        docs = Fixture.docs("overlays/cpu")
        ss = next(d for d in docs if d["kind"] == "StatefulSet")
        ss["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
        path = os.path.join(Fixture.tmp, "unknown-field.yaml")
        with open(path, "w") as f:
            f.write(dump(docs))
        rc, text, _ = self.validate(path)
        self.assertNotEqual(rc, 0, "a misspelt field passed validation:\n" + text)

    def test_check_manifests_accepts_every_render(self):
        secrets = check_manifests.load(Fixture.secrets)
        for name in Fixture.renders:
            if name == "base":
                continue  # the base alone is checked too, below, without overlay sizing
            self.assertEqual(check_manifests.check(Fixture.docs(name), secrets), [], name)
        self.assertEqual(check_manifests.check(Fixture.docs("base"), secrets), [], "base")

    def test_check_manifests_command_line(self):
        ok = subprocess.run([sys.executable, os.path.join(HERE, "check_manifests.py"),
                             Fixture.renders["overlays/gpu"], "--secrets", Fixture.secrets],
                            capture_output=True, text=True, timeout=120)
        self.assertEqual(ok.returncode, 0, ok.stdout + ok.stderr)
        docs = Fixture.docs("overlays/gpu")
        worker(docs)["resources"]["limits"]["nvidia.com/gpu"] = 4
        path = os.path.join(Fixture.tmp, "broken-gpu.yaml")
        with open(path, "w") as f:
            f.write(dump(docs))
        bad = subprocess.run([sys.executable, os.path.join(HERE, "check_manifests.py"), path],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(bad.returncode, 1, bad.stdout + bad.stderr)
        self.assertIn("--gpus is 2 but the nvidia.com/gpu limit is 4", bad.stdout)


# ----------------------------------------------------------------------------------------------
# Broken copies: each edit must be rejected with its message.

def obj(docs, kind, name):
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def pod_spec(docs, name):
    return next(d for d in docs if d["kind"] in ("StatefulSet", "Deployment") and
                d["metadata"]["name"] == name)["spec"]["template"]["spec"]


def container(docs, workload, name):
    return next(c for c in pod_spec(docs, workload)["containers"] if c["name"] == name)


def worker(docs):
    return container(docs, "dstrain-worker", "worker")


def coordinator(docs):
    return container(docs, "dstrain-coordinator", "coordinator")


def set_flag(c, flag, value):
    """Replaces --flag=... in args (removes it when value is None)."""
    args = [a for a in c["args"] if not a.startswith("--%s=" % flag)]
    if value is not None:
        args.append("--%s=%s" % (flag, value))
    c["args"] = args


def set_env(c, name, value):
    for e in c["env"]:
        if e["name"] == name:
            e.clear()
            e.update({"name": name, "value": value})


def probe_addr(c, kind, addr):
    cmd = c[kind]["exec"]["command"]
    c[kind]["exec"]["command"] = [("--addr=" + addr) if w.startswith("--addr=") else w
                                  for w in cmd]


def probe_service(c, kind, service):
    cmd = [w for w in c[kind]["exec"]["command"] if not w.startswith("--service=")]
    c[kind]["exec"]["command"] = cmd + ["--service=" + service]


def drop_port(c, name):
    c["ports"] = [p for p in c["ports"] if p["name"] != name]


def policy_rules(docs, name):
    return obj(docs, "NetworkPolicy", name)["spec"]["ingress"]


def mount(c, volume):
    return next(m for m in c["volumeMounts"] if m["name"] == volume)


BROKEN = [
    # (name, render, edit, message the checker must give)
    ("probe port not declared", "overlays/cpu",
     lambda d: probe_addr(coordinator(d), "readinessProbe", "localhost:50099"),
     "probe port 50099 is not a declared container port"),
    ("worker health port dropped", "overlays/cpu",
     lambda d: drop_port(worker(d), "health"),
     "probe port 50052 is not a declared container port"),
    ("probe dials another port than --listen", "overlays/cpu",
     lambda d: set_flag(worker(d), "listen", "0.0.0.0:50053"),
     "is not the daemon's --listen port 50053"),
    ("worker health on a random port", "overlays/cpu",
     lambda d: set_flag(worker(d), "listen", None), "no fixed --listen port"),
    ("coordinator on loopback", "overlays/cpu",
     lambda d: set_flag(coordinator(d), "listen", "127.0.0.1:50051"),
     "--listen 127.0.0.1:50051 is loopback"),
    ("kubelet grpc: probe on the TLS port", "overlays/cpu",
     lambda d: coordinator(d).update(livenessProbe={"grpc": {"port": 50051}}),
     "a grpc: probe is plaintext"),
    ("grpc: probe on an undeclared port", "overlays/cpu",
     lambda d: coordinator(d).update(livenessProbe={"grpc": {"port": 50060}}),
     "grpc port 50060 is not a declared container port"),
    ("worker liveness follows the coordinator", "overlays/cpu",
     lambda d: probe_service(worker(d), "livenessProbe", "readiness"),
     "liveness must not follow the coordinator"),
    ("no readiness probe", "overlays/gpu",
     lambda d: worker(d).pop("readinessProbe"), "no readinessProbe"),
    ("coordinator probe verifies a name the Service lacks", "overlays/cpu",
     lambda d: probe_addr(coordinator(d), "livenessProbe", "localhost:50051") or
     coordinator(d)["livenessProbe"]["exec"]["command"].append("--server-name=coordinator"),
     "--server-name coordinator is none of the coordinator Service's names"),
    ("worker without the coordinator address", "overlays/cpu",
     lambda d: set_flag(worker(d), "coordinator", None), "no coordinator address"),
    ("worker dials a name that is no Service", "overlays/gpu",
     lambda d: set_flag(worker(d), "coordinator", "coordinator:50051"),
     "coordinator is not the DNS name of a Service selecting the coordinator"),
    ("worker dials the metrics port", "overlays/cpu",
     lambda d: set_flag(worker(d), "coordinator", "dstrain-coordinator-metrics:9090"),
     "has no port 9090 leading to the coordinator's --listen port"),
    ("coordinator Service renamed (a namePrefix)", "overlays/cpu",
     lambda d: obj(d, "Service", "dstrain-coordinator")["metadata"].update(
         name="prod-dstrain-coordinator"),
     "dstrain-coordinator is not the DNS name of a Service selecting the coordinator"),
    ("CLI pod dials another namespace", "overlays/cpu",
     lambda d: set_env(container(d, "dstrain-cli", "cli"), "DSTRAIN_COORDINATOR",
                       "dstrain-coordinator.other.svc:50051"),
     "dstrain-coordinator.other.svc is not the DNS name of a Service"),
    ("GPU limit and --gpus disagree", "overlays/gpu",
     lambda d: worker(d)["resources"]["limits"].update({"nvidia.com/gpu": 4}),
     "--gpus is 2 but the nvidia.com/gpu limit is 4"),
    ("GPU worker offers CPU slots", "overlays/gpu",
     lambda d: set_env(worker(d), "DSTRAIN_SLOTS", "8"),
     "--slots is 8 on a GPU worker"),
    ("GPU request differs from its limit", "overlays/gpu",
     lambda d: worker(d)["resources"]["requests"].update({"nvidia.com/gpu": 1}),
     "nvidia.com/gpu request 1 differs from its limit 2"),
    ("GPU limit on a worker with --gpus none", "overlays/cpu",
     lambda d: worker(d)["resources"]["limits"].update({"nvidia.com/gpu": 1}),
     "--gpus is none but the nvidia.com/gpu limit is 1"),
    ("CPU worker takes every GPU it sees", "overlays/cpu",
     lambda d: set_env(worker(d), "DSTRAIN_GPUS", "auto"),
     "--gpus is auto without an nvidia.com/gpu limit"),
    ("more CPU slots than CPUs", "overlays/cpu",
     lambda d: set_env(worker(d), "DSTRAIN_SLOTS", "16"),
     "--slots 16 exceeds the CPU limit 4"),
    ("slots from an env var that is not set", "overlays/cpu",
     lambda d: set_flag(worker(d), "slots", "$(SLOTS)"),
     "name env vars that are not set"),
    ("trainers listen on loopback", "overlays/cpu",
     lambda d: set_flag(worker(d), "advertise-address", "127.0.0.1"),
     "--advertise-address 127.0.0.1 is not the pod's IP"),
    ("trainers listen on the node's address", "overlays/gpu",
     lambda d: set_env(worker(d), "POD_IP", "10.0.0.1"),
     "--advertise-address $(POD_IP) is not the pod's IP"),
    ("grace period shorter than the drain", "overlays/cpu",
     lambda d: pod_spec(d, "dstrain-worker").update(terminationGracePeriodSeconds=60),
     "terminationGracePeriodSeconds 60 < --drain-seconds 120 + 30 s"),
    ("drain too short for a checkpoint", "overlays/gpu",
     lambda d: set_flag(worker(d), "drain-seconds", "10"),
     "--drain-seconds 10 is under 60 s"),
    ("default drain, default grace", "overlays/cpu",
     lambda d: set_flag(worker(d), "drain-seconds", None) or
     pod_spec(d, "dstrain-worker").pop("terminationGracePeriodSeconds"),
     "terminationGracePeriodSeconds 30 < --drain-seconds 60 + 30 s"),
    ("checkpoint volume not ReadWriteMany", "overlays/cpu",
     lambda d: obj(d, "PersistentVolumeClaim", "dstrain-shared")["spec"].update(
         accessModes=["ReadWriteOnce"]),
     "claim dstrain-shared holding --data-root (checkpoints) is not ReadWriteMany"),
    ("worker mounts the shared volume elsewhere", "overlays/cpu",
     lambda d: mount(worker(d), "shared").update(mountPath="/mnt/shared"),
     "--data-root /data is not the mount path of a shared claim"),
    ("worker mounts the shared volume read-only", "overlays/gpu",
     lambda d: mount(worker(d), "shared").update(readOnly=True),
     "the shared volume is mounted read-only"),
    ("CLI pod mounts the shared volume at another path", "overlays/cpu",
     lambda d: mount(container(d, "dstrain-cli", "cli"), "shared").update(mountPath="/shared"),
     "mounts claim dstrain-shared at /shared, the workers at /data"),
    ("coordinator's --data-root not on the shared volume", "overlays/cpu",
     lambda d: coordinator(d).update(volumeMounts=[m for m in coordinator(d)["volumeMounts"]
                                                   if m["name"] != "shared"]),
     "--data-root /data is not the workers' shared claim"),
    ("coordinator state not on its claim", "overlays/cpu",
     lambda d: set_flag(coordinator(d), "data-dir", "/tmp/state"),
     "--data-dir /tmp/state is not on a volumeClaimTemplate"),
    ("two coordinators", "overlays/cpu",
     lambda d: obj(d, "StatefulSet", "dstrain-coordinator")["spec"].update(replicas=2),
     "exactly 1 replica"),
    ("NetworkPolicy selects no pod", "overlays/cpu",
     lambda d: obj(d, "NetworkPolicy", "dstrain-worker")["spec"]["podSelector"][
         "matchLabels"].update({"app.kubernetes.io/component": "agent"}),
     "NetworkPolicy/dstrain-worker: its podSelector"),
    ("worker pods uncovered by any policy", "overlays/cpu",
     lambda d: d.remove(obj(d, "NetworkPolicy", "dstrain-worker")),
     "no NetworkPolicy selects these pods"),
    ("Prometheus selector rewritten by a labels transformer", "overlays/cpu",
     lambda d: policy_rules(d, "dstrain-coordinator")[1]["from"][0]["podSelector"][
         "matchLabels"].update({"app.kubernetes.io/name": "dstrain"}),
     "no NetworkPolicy rule admits Prometheus"),
    ("gRPC port open to every pod", "overlays/cpu",
     lambda d: policy_rules(d, "dstrain-coordinator")[0].pop("from"),
     "admits the coordinator's gRPC port from more than worker pods"),
    ("gRPC port open to another namespace", "overlays/gpu",
     lambda d: policy_rules(d, "dstrain-coordinator")[0]["from"].append(
         {"namespaceSelector": {}}),
     "admits the coordinator's gRPC port from more than worker pods"),
    ("CLI pods not admitted", "overlays/cpu",
     lambda d: policy_rules(d, "dstrain-coordinator")[0]["from"].pop(1),
     "no NetworkPolicy rule admits CLI pods"),
    ("workers not admitted", "overlays/cpu",
     lambda d: policy_rules(d, "dstrain-coordinator")[0]["from"].pop(0),
     "no NetworkPolicy rule admits worker pods"),
    ("policy names a port the pods lack", "overlays/cpu",
     lambda d: policy_rules(d, "dstrain-coordinator")[0]["ports"][0].update(port="rpc"),
     "names port 'rpc'"),
    ("scrape annotation names another port", "overlays/cpu",
     lambda d: obj(d, "StatefulSet", "dstrain-worker")["spec"]["template"]["metadata"][
         "annotations"].update({"prometheus.io/port": "9999"}),
     "prometheus.io/port '9999' is not the metrics port 9091"),
    ("metrics Service annotation names another port", "overlays/cpu",
     lambda d: obj(d, "Service", "dstrain-coordinator-metrics")["metadata"][
         "annotations"].update({"prometheus.io/port": "50051"}),
     "prometheus.io/port '50051' is not a Service port leading to the metrics port 9090"),
    ("metrics bound to loopback", "overlays/cpu",
     lambda d: set_flag(coordinator(d), "metrics-listen", "127.0.0.1:9090"),
     "is not reachable from Prometheus"),
    ("no scrape annotation", "overlays/gpu",
     lambda d: obj(d, "StatefulSet", "dstrain-worker")["spec"]["template"]["metadata"][
         "annotations"].pop("prometheus.io/scrape"),
     "no prometheus.io/scrape"),
    ("Service targets a port the pods lack", "overlays/cpu",
     lambda d: obj(d, "Service", "dstrain-coordinator")["spec"]["ports"][0].update(
         targetPort="rpc"),
     "targetPort 'rpc' is not a port of"),
    ("PodMonitor names a port the pods lack", "overlays/cpu-prometheus-operator",
     lambda d: obj(d, "PodMonitor", "dstrain-worker")["spec"]["podMetricsEndpoints"][0].update(
         port="metric"),
     "endpoint port 'metric' is no port of the pods it selects"),
    ("ServiceMonitor selects no Service", "overlays/cpu-prometheus-operator",
     lambda d: obj(d, "ServiceMonitor", "dstrain-coordinator")["spec"]["selector"][
         "matchLabels"].update({"app.kubernetes.io/component": "coord"}),
     "ServiceMonitor/dstrain-coordinator: selects no Service"),
    ("more workers than certificates", "overlays/cpu",
     lambda d: obj(d, "StatefulSet", "dstrain-worker")["spec"].update(replicas=3),
     "Secret dstrain-worker-tls has no key worker-dstrain-worker-2.pem"),
    ("a Secret make-secrets.sh does not make", "overlays/cpu",
     lambda d: pod_spec(d, "dstrain-coordinator")["volumes"][3]["secret"].update(
         secretName="dstrain-tokenz"),
     "mounts Secret dstrain-tokenz, which make-secrets.sh does not make"),
    ("a TLS file outside every volume", "overlays/cpu",
     lambda d: set_flag(coordinator(d), "tls-ca", "/etc/ssl/ca.pem"),
     "/etc/ssl/ca.pem is on no mounted volume"),
    ("an image that is not dstrain", "overlays/cpu",
     lambda d: worker(d).update(image="busybox:latest"), "is not dstrain:TAG"),
    ("no memory limit", "overlays/cpu",
     lambda d: worker(d)["resources"]["limits"].pop("memory"), "no memory limits"),
    ("an object without its component label", "overlays/cpu",
     lambda d: obj(d, "Service", "dstrain-worker")["metadata"]["labels"].pop(
         "app.kubernetes.io/component"),
     "Service/dstrain-worker: no app.kubernetes.io/component label"),
    ("objects in two namespaces", "overlays/cpu-prometheus-operator",
     lambda d: obj(d, "PodMonitor", "dstrain-worker")["metadata"].pop("namespace"),
     "objects are not all in one namespace"),
]


class BrokenCopiesTest(unittest.TestCase):
    def setUp(self):
        Fixture.make()
        if Fixture.skip_reason:
            self.skipTest(Fixture.skip_reason)

    def test_each_broken_copy_is_rejected_with_its_message(self):
        secrets = check_manifests.load(Fixture.secrets)
        pristine = {name: Fixture.docs(name) for name in Fixture.renders}
        names = set()
        for name, render, edit, message in BROKEN:
            self.assertNotIn(name, names)
            names.add(name)
            with self.subTest(name):
                docs = copy.deepcopy(pristine[render])
                edit(docs)
                problems = check_manifests.check(docs, secrets)
                self.assertTrue(any(message in p for p in problems),
                                "%s: expected a problem containing %r, got:\n  %s"
                                % (name, message, "\n  ".join(problems) or "(none)"))
                print("rejected as expected: %s: %s" % (name, next(
                    p for p in problems if message in p)))


if __name__ == "__main__":
    unittest.main(verbosity=2)
