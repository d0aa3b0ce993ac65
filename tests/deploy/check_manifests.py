#!/usr/bin/python3
"""Structural checks of rendered deploy/k8s manifests: what a schema cannot see.

    check_manifests.py RENDERED.yaml [--secrets SECRETS.yaml]

RENDERED.yaml is `kubectl kustomize deploy/k8s/overlays/X`; SECRETS.yaml what
deploy/k8s/make-secrets.sh wrote (then every secret a pod mounts, and every key a flag names,
must be in it, and the coordinator's certificate must name the address the workers dial).
Prints one line per problem and exits 1 when there is any, 0 otherwise. `check(docs, secrets)`
returns the problems as a list, for tests (tests/deploy/k8s_manifests_test.py).

What is checked, by the daemons' own flags (docs/service.md, docs/security.md):
  probes       both daemons listen on a fixed port (the coordinator not on loopback); every
               probe's port is a port the container declares; exec probes running
               dstrain-health-probe dial the daemon's --listen port, verify the coordinator by
               its Service's name, and ask the worker's "liveness"/"readiness" for the probe of
               that name; both daemons have readiness and liveness probes
  coordinator  every worker's --coordinator (and the CLI pod's DSTRAIN_COORDINATOR) is
               SERVICE[.NS[.svc[.cluster.local]]]:PORT of a Service that selects the coordinator
               and maps PORT to its --listen port; one replica; --data-dir on a claim template
  slots        --slots/--gpus, through the env vars they name, equal the container's resources:
               with an nvidia.com/gpu limit, --gpus is that limit and --slots 0; without one,
               --gpus none and 1 <= --slots <= the CPU limit
  advertise    a worker's --advertise-address, when given, is its pod IP (downward API)
  drain        the worker's terminationGracePeriodSeconds >= --drain-seconds + DRAIN_MARGIN_S,
               --drain-seconds >= MIN_DRAIN_S, and SIGTERM reaches the agent (no shell between)
  shared       the ReadWriteMany claim holding checkpoints is mounted read-write at the worker's
               --data-root in every worker, at the same path in the CLI pod, and (read-only
               allowed) at the coordinator's --data-root
  network      every NetworkPolicy selects pods; the coordinator's gRPC port admits worker pods
               and pods labelled dstrain.io/client=true and nothing else; every metrics port
               admits Prometheus (app.kubernetes.io/name=prometheus); every serving pod is
               covered by a policy; named ports exist
  metrics      prometheus.io/scrape annotations name the port the daemon's --metrics-listen
               binds, a declared container port (or a Service port mapping to it), at /metrics;
               ServiceMonitor/PodMonitor endpoints name real ports of what they select
  services     every selector selects pods; every targetPort exists on them
  labels       app.kubernetes.io/name=dstrain and app.kubernetes.io/component on every object
               and pod template; images are dstrain:TAG; cpu and memory requests and limits
"""
import math
import re
import subprocess
import sys

import yaml

# The worker's drain (docs/service.md, "Drain on SIGTERM"): the agent waits --drain-seconds for
# the trainers to checkpoint and leave, then stops what is left (SIGTERM, SIGKILL 5 s later) and
# shuts down. The grace period must cover the drain plus this margin (deploy/k8s/README.md).
DRAIN_MARGIN_S = 30
# The agent's default drain, and the least deploy/k8s documents for a step plus a checkpoint.
DEFAULT_DRAIN_S = 60
MIN_DRAIN_S = 60
PROBE_BINARY = "dstrain-health-probe"
CLIENT_LABEL = ("dstrain.io/client", "true")
PROMETHEUS_LABEL = ("app.kubernetes.io/name", "prometheus")
WORKLOAD_KINDS = ("StatefulSet", "Deployment", "DaemonSet", "Job")
# What resolve() makes of an env var set from the downward API's status.podIP.
POD_IP = "<the pod's IP>"


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name_of(obj):
    return "%s/%s" % (obj.get("kind"), obj.get("metadata", {}).get("name"))


def flag_values(argv):
    """--name=value and --name value pairs of an argument list, the last one winning."""
    out = {}
    i = 0
    while i < len(argv):
        a = str(argv[i])
        if a.startswith("--"):
            if "=" in a:
                k, v = a[2:].split("=", 1)
                out[k] = v
            elif i + 1 < len(argv) and not str(argv[i + 1]).startswith("--"):
                out[a[2:]] = str(argv[i + 1])
                i += 1
            else:
                out[a[2:]] = ""
        i += 1
    return out


def port_of(hostport):
    m = re.fullmatch(r"(.*):(\d+)", hostport or "")
    return (m.group(1), int(m.group(2))) if m else (None, None)


def selects(selector, labels):
    """A label selector (matchLabels form, or a Service's plain map) against labels."""
    if selector is None:
        return False
    match = selector.get("matchLabels", selector) if isinstance(selector, dict) else {}
    if "matchExpressions" in selector:
        return False  # not used by deploy/k8s; refuse rather than guess
    match = {k: v for k, v in match.items() if k != "matchExpressions"}
    return all(labels.get(k) == str(v) for k, v in match.items())


def cpu_count(quantity):
    q = str(quantity)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


class Pod:
    """A workload's pod template, with what the checks need."""

    def __init__(self, obj):
        self.obj = obj
        self.name = name_of(obj)
        self.kind = obj["kind"]
        spec = obj.get("spec", {})
        self.replicas = spec.get("replicas", 1)
        self.template = spec.get("template", {})
        self.labels = self.template.get("metadata", {}).get("labels", {}) or {}
        self.annotations = self.template.get("metadata", {}).get("annotations", {}) or {}
        self.spec = self.template.get("spec", {}) or {}
        self.containers = self.spec.get("containers", []) or []
        self.volumes = {v["name"]: v for v in self.spec.get("volumes", []) or []}
        self.claim_templates = {
            t["metadata"]["name"]: t for t in spec.get("volumeClaimTemplates", []) or []
        }

    def ports(self):
        """(container, port dict) for every declared container port."""
        for c in self.containers:
            for p in c.get("ports", []) or []:
                yield c, p

    def port_named(self, name_or_number):
        for _, p in self.ports():
            if p.get("name") == name_or_number or p.get("containerPort") == name_or_number:
                return p
        return None


def program(container):
    """The daemon a container runs (its first command/args word that is not tini or --)."""
    words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
    for w in words:
        base = w.rsplit("/", 1)[-1]
        if base in ("tini", "--", "-s") or base.startswith("-"):
            continue
        return base
    return None


def argv(container):
    return [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]


def env_map(container):
    return {e["name"]: e for e in container.get("env", []) or []}


def resolve(value, container):
    """$(VAR) references in a flag's value, expanded as the kubelet does, from the container's
    env: a literal value, or a resourceFieldRef on its own limits. None when it cannot be."""
    env = env_map(container)

    def one(m):
        e = env.get(m.group(1))
        if e is None:
            raise KeyError(m.group(1))
        if "value" in e and "valueFrom" not in e:
            return str(e["value"])
        field = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field == "status.podIP":
            return POD_IP
        ref = (e.get("valueFrom") or {}).get("resourceFieldRef")
        if ref and ref.get("resource", "").startswith("limits."):
            limit = ((container.get("resources") or {}).get("limits") or {}).get(
                ref["resource"][len("limits."):])
            if limit is None:
                raise KeyError(m.group(1))
            divisor = cpu_count(ref.get("divisor", "1"))
            return str(int(math.ceil(cpu_count(limit) / divisor)))
        raise KeyError(m.group(1))

    try:
        return re.sub(r"\$\((\w+)\)", one, value)
    except KeyError:
        return None


def mount_for(pod, container, path):
    """The (volumeMount, volume) a file path lies in, the deepest mount first."""
    best = None
    for m in container.get("volumeMounts", []) or []:
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best[0]["mountPath"].rstrip("/")):
                best = (m, pod.volumes.get(m["name"]) or pod.claim_templates.get(m["name"]))
    return best


class Checker:
    def __init__(self, docs, secrets=None):
        self.docs = docs
        self.secrets = None
        if secrets is not None:
            self.secrets = {d["metadata"]["name"]: d for d in secrets if d.get("kind") == "Secret"}
        self.problems = []
        self.coordinator_hosts = set()  # the names clients dial (its certificate must match)
        self.pods = [Pod(d) for d in docs if d.get("kind") in WORKLOAD_KINDS]
        self.services = [d for d in docs if d.get("kind") == "Service"]
        self.pvcs = {d["metadata"]["name"]: d for d in docs
                     if d.get("kind") == "PersistentVolumeClaim"}
        self.policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]

    def fail(self, where, message):
        self.problems.append("%s: %s" % (where, message))

    def daemons(self, name):
        out = []
        for pod in self.pods:
            for c in pod.containers:
                if program(c) == name:
                    out.append((pod, c))
        return out

    # ------------------------------------------------------------------------------------------
    def run(self):
        coordinators = self.daemons("dstrain-coordinator")
        workers = self.daemons("dstrain-worker")
        if len(coordinators) != 1:
            self.fail("render", "expected one dstrain-coordinator container, found %d"
                      % len(coordinators))
        if not workers:
            self.fail("render", "no dstrain-worker container")
        self.check_labels_and_images()
        self.check_services()
        for pod, c in coordinators:
            self.check_coordinator(pod, c)
        for pod, c in coordinators + workers:
            self.check_probes(pod, c)
            self.check_metrics(pod, c)
        if len(coordinators) == 1:
            for pod, c in workers:
                self.check_coordinator_address(pod, c, "--coordinator",
                                               flag_values(argv(c)).get("coordinator"),
                                               coordinators[0])
            for pod in self.pods:
                for c in pod.containers:
                    e = env_map(c).get("DSTRAIN_COORDINATOR")
                    if e is not None:
                        self.check_coordinator_address(pod, c, "DSTRAIN_COORDINATOR",
                                                       e.get("value"), coordinators[0])
        for pod, c in workers:
            self.check_slots(pod, c)
            self.check_drain(pod, c)
            self.check_advertise_address(pod, c)
        self.check_shared_volume(coordinators, workers)
        self.check_network_policies(coordinators, workers)
        self.check_monitors()
        self.check_secrets()
        return self.problems

    # ------------------------------------------------------------------------------------------
    def check_labels_and_images(self):
        namespaces = set()
        for d in self.docs:
            meta = d.get("metadata", {})
            labels = meta.get("labels") or {}
            if d.get("kind") not in ("Namespace",):
                namespaces.add(meta.get("namespace"))
            if labels.get("app.kubernetes.io/name") != "dstrain":
                self.fail(name_of(d), "label app.kubernetes.io/name is not dstrain")
            if not labels.get("app.kubernetes.io/component"):
                self.fail(name_of(d), "no app.kubernetes.io/component label")
        if len(namespaces) != 1 or None in namespaces:
            self.fail("render", "objects are not all in one namespace: %s"
                      % sorted(str(n) for n in namespaces))
        for pod in self.pods:
            if pod.labels.get("app.kubernetes.io/name") != "dstrain" or \
                    not pod.labels.get("app.kubernetes.io/component"):
                self.fail(pod.name, "pod template lacks app.kubernetes.io/name=dstrain or "
                          "app.kubernetes.io/component")
            if not selects(pod.obj["spec"].get("selector"), pod.labels):
                self.fail(pod.name, "its selector does not select its own pod template")
            for c in pod.containers:
                where = "%s container %s" % (pod.name, c["name"])
                if not str(c.get("image", "")).startswith("dstrain:"):
                    self.fail(where, "image %r is not dstrain:TAG (kustomize images:)"
                              % c.get("image"))
                res = c.get("resources") or {}
                for kind in ("requests", "limits"):
                    for r in ("cpu", "memory"):
                        if r not in (res.get(kind) or {}):
                            self.fail(where, "no %s %s" % (r, kind))

    def pods_selected(self, selector):
        return [p for p in self.pods if selects(selector, p.labels)]

    def check_services(self):
        for s in self.services:
            selected = self.pods_selected(s["spec"].get("selector"))
            if not selected:
                self.fail(name_of(s), "its selector %s selects no pod" % s["spec"].get("selector"))
                continue
            for p in s["spec"].get("ports", []):
                target = p.get("targetPort", p.get("port"))
                for pod in selected:
                    if pod.port_named(target) is None:
                        self.fail(name_of(s), "port %s: targetPort %r is not a port of %s"
                                  % (p.get("name"), target, pod.name))

    # ------------------------------------------------------------------------------------------
    def check_coordinator(self, pod, c):
        where = "%s container %s" % (pod.name, c["name"])
        if pod.kind != "StatefulSet":
            self.fail(where, "the coordinator should be a StatefulSet (one writer of its volume)")
        if pod.replicas != 1:
            self.fail(where, "the coordinator must have exactly 1 replica, has %s" % pod.replicas)
        data_dir = flag_values(argv(c)).get("data-dir")
        if not data_dir:
            self.fail(where, "no --data-dir")
            return
        m = mount_for(pod, c, data_dir)
        if m is None or m[0]["name"] not in pod.claim_templates:
            self.fail(where, "--data-dir %s is not on a volumeClaimTemplate" % data_dir)

    def check_probes(self, pod, c):
        where = "%s container %s" % (pod.name, c["name"])
        daemon = program(c)
        listen = flag_values(argv(c)).get("listen")
        listen_host, listen_port = port_of(resolve(listen, c) if listen else None)
        if not listen_port:
            # The default is 127.0.0.1:0: a port no probe or Service can name.
            self.fail(where, "no fixed --listen port (the default picks a free loopback port)")
        elif daemon == "dstrain-coordinator" and listen_host in ("127.0.0.1", "localhost"):
            self.fail(where, "--listen %s is loopback: no worker could reach it" % listen)
        for kind in ("readinessProbe", "livenessProbe"):
            if kind not in c:
                self.fail(where, "no %s" % kind)
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(kind)
            if probe is None:
                continue
            pw = "%s %s" % (where, kind)
            if "grpc" in probe:
                port = probe["grpc"].get("port")
                if not any(p.get("containerPort") == port for _, p in pod.ports()):
                    self.fail(pw, "grpc port %r is not a declared container port" % port)
                if port == listen_port:
                    self.fail(pw, "a grpc: probe is plaintext; %s serves health over TLS on "
                              "--listen unless --insecure" % daemon)
            for action in ("httpGet", "tcpSocket"):
                if action in probe:
                    port = probe[action].get("port")
                    if pod.port_named(port) is None:
                        self.fail(pw, "%s port %r is not a declared container port"
                                  % (action, port))
            if "exec" in probe:
                cmd = [str(w) for w in probe["exec"].get("command", [])]
                if not cmd or cmd[0].rsplit("/", 1)[-1] != PROBE_BINARY:
                    continue
                f = flag_values(cmd[1:])
                host, port = port_of(f.get("addr"))
                if port is None:
                    self.fail(pw, "%s has no --addr HOST:PORT" % PROBE_BINARY)
                    continue
                if not any(p.get("containerPort") == port for _, p in pod.ports()):
                    self.fail(pw, "probe port %d is not a declared container port" % port)
                if listen_port is not None and port != listen_port:
                    self.fail(pw, "probe port %d is not the daemon's --listen port %d"
                              % (port, listen_port))
                if "insecure" not in f and "tls-ca" not in f:
                    self.fail(pw, "neither --tls-ca nor --insecure")
                if "tls-ca" in f and mount_for(pod, c, f["tls-ca"]) is None:
                    self.fail(pw, "--tls-ca %s is on no mounted volume" % f["tls-ca"])
                service = f.get("service", "")
                if daemon == "dstrain-worker":
                    want = {"livenessProbe": "liveness", "startupProbe": "liveness",
                            "readinessProbe": "readiness"}[kind]
                    if service != want:
                        self.fail(pw, "asks service %r; the worker's %s is %r (liveness must not "
                                  "follow the coordinator, or its outage restarts workers)"
                                  % (service, kind, want))
                if daemon == "dstrain-coordinator" and "server-name" in f:
                    names = self.coordinator_service_names(pod)
                    if f["server-name"] not in names:
                        self.fail(pw, "--server-name %s is none of the coordinator Service's "
                                  "names %s" % (f["server-name"], sorted(names)))

    def coordinator_service_names(self, pod):
        names = set()
        for s in self.services:
            if selects(s["spec"].get("selector"), pod.labels):
                n, ns = s["metadata"]["name"], s["metadata"].get("namespace")
                names |= {n, "%s.%s" % (n, ns), "%s.%s.svc" % (n, ns),
                          "%s.%s.svc.cluster.local" % (n, ns)}
        return names

    def check_coordinator_address(self, pod, c, what, value, coordinator):
        where = "%s container %s %s" % (pod.name, c["name"], what)
        if not value:
            self.fail(where, "no coordinator address")
            return
        host, port = port_of(resolve(value, c))
        if host is None:
            self.fail(where, "%r is not HOST:PORT" % value)
            return
        cpod, cc = coordinator
        _, listen_port = port_of(flag_values(argv(cc)).get("listen"))
        for s in self.services:
            if not selects(s["spec"].get("selector"), cpod.labels):
                continue
            n, ns = s["metadata"]["name"], s["metadata"].get("namespace")
            if host not in (n, "%s.%s" % (n, ns), "%s.%s.svc" % (n, ns),
                            "%s.%s.svc.cluster.local" % (n, ns)):
                continue
            if s["spec"].get("clusterIP") == "None":
                self.fail(where, "%s is headless" % name_of(s))
            for p in s["spec"].get("ports", []):
                if p.get("port") != port:
                    continue
                target = cpod.port_named(p.get("targetPort", p.get("port")))
                if target is not None and target.get("containerPort") == listen_port:
                    self.coordinator_hosts.add(host)
                    return
            self.fail(where, "%s: %s has no port %d leading to the coordinator's --listen port "
                      "%s" % (value, name_of(s), port, listen_port))
            return
        self.fail(where, "%s: %s is not the DNS name of a Service selecting the coordinator"
                  % (value, host))

    # ------------------------------------------------------------------------------------------
    def check_slots(self, pod, c):
        where = "%s container %s" % (pod.name, c["name"])
        f = flag_values(argv(c))
        if "slots" not in f:
            self.fail(where, "no --slots")
            return
        slots = resolve(f["slots"], c)
        gpus = resolve(f.get("gpus", "auto"), c)
        if slots is None or gpus is None:
            self.fail(where, "--slots %s / --gpus %s name env vars that are not set from a value "
                      "or the container's limits" % (f["slots"], f.get("gpus")))
            return
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        gpu_limit = limits.get("nvidia.com/gpu")
        if "nvidia.com/gpu" in requests and str(requests["nvidia.com/gpu"]) != str(gpu_limit):
            self.fail(where, "nvidia.com/gpu request %s differs from its limit %s"
                      % (requests["nvidia.com/gpu"], gpu_limit))
        if gpu_limit is not None:
            if gpus != str(gpu_limit):
                self.fail(where, "--gpus is %s but the nvidia.com/gpu limit is %s"
                          % (gpus, gpu_limit))
            if slots != "0":
                self.fail(where, "--slots is %s on a GPU worker (nvidia.com/gpu %s): GPU workers "
                          "offer GPU slots only (--slots 0)" % (slots, gpu_limit))
        else:
            if gpus not in ("none", "0"):
                self.fail(where, "--gpus is %s without an nvidia.com/gpu limit (must be none)"
                          % gpus)
            if not slots.isdigit() or int(slots) < 1:
                self.fail(where, "--slots is %s: a CPU worker needs at least one slot" % slots)
            elif "cpu" in limits and int(slots) > math.ceil(cpu_count(limits["cpu"])):
                self.fail(where, "--slots %s exceeds the CPU limit %s" % (slots, limits["cpu"]))

    def check_drain(self, pod, c):
        where = "%s container %s" % (pod.name, c["name"])
        f = flag_values(argv(c))
        drain = float(f.get("drain-seconds", DEFAULT_DRAIN_S))
        grace = pod.spec.get("terminationGracePeriodSeconds", 30)
        if drain < MIN_DRAIN_S:
            self.fail(where, "--drain-seconds %g is under %d s, too short for a step and a "
                      "checkpoint" % (drain, MIN_DRAIN_S))
        if grace < drain + DRAIN_MARGIN_S:
            self.fail(where, "terminationGracePeriodSeconds %s < --drain-seconds %g + %d s: the "
                      "kubelet would SIGKILL the worker mid-drain" % (grace, drain,
                                                                       DRAIN_MARGIN_S))
        words = argv(c)
        if words and words[0].rsplit("/", 1)[-1] in ("sh", "bash"):
            self.fail(where, "runs through a shell: SIGTERM goes to the shell, not the agent")

    def check_advertise_address(self, pod, c):
        where = "%s container %s" % (pod.name, c["name"])
        f = flag_values(argv(c))
        if "advertise-address" not in f:
            return  # the agent finds the route's source address toward the coordinator
        value = resolve(f["advertise-address"], c)
        if value != POD_IP:
            self.fail(where, "--advertise-address %s is not the pod's IP (status.podIP): the "
                      "other workers' trainers could not reach this pod's ranks"
                      % f["advertise-address"])

    # ------------------------------------------------------------------------------------------
    def claim_of(self, pod, volume_name):
        v = pod.volumes.get(volume_name)
        if v is None or "persistentVolumeClaim" not in v:
            return None
        return v["persistentVolumeClaim"]["claimName"]

    def check_shared_volume(self, coordinators, workers):
        rwx = {n for n, p in self.pvcs.items()
               if "ReadWriteMany" in (p["spec"].get("accessModes") or [])}
        paths = {}
        for pod, c in workers:
            where = "%s container %s" % (pod.name, c["name"])
            root = flag_values(argv(c)).get("data-root")
            if not root:
                self.fail(where, "no --data-root")
                continue
            m = mount_for(pod, c, root)
            claim = self.claim_of(pod, m[0]["name"]) if m else None
            if m is None or claim is None or m[0]["mountPath"].rstrip("/") != root.rstrip("/"):
                self.fail(where, "--data-root %s is not the mount path of a shared claim" % root)
                continue
            if claim not in self.pvcs:
                self.fail(where, "claim %s is not rendered" % claim)
            elif claim not in rwx:
                self.fail(where, "claim %s holding --data-root (checkpoints) is not ReadWriteMany"
                          % claim)
            if m[0].get("readOnly") or (pod.volumes[m[0]["name"]]["persistentVolumeClaim"]
                                        .get("readOnly")):
                self.fail(where, "the shared volume is mounted read-only: trainers write "
                          "checkpoints there")
            paths.setdefault(claim, set()).add(m[0]["mountPath"].rstrip("/"))
        for claim, ps in paths.items():
            if len(ps) > 1:
                self.fail("workers", "claim %s is mounted at different paths %s" % (claim,
                                                                                  sorted(ps)))
        shared = set(paths)
        # Everyone else who mounts the claim does so at the same path.
        want = {claim: next(iter(ps)) for claim, ps in paths.items()}
        for pod in self.pods:
            for c in pod.containers:
                for m in c.get("volumeMounts", []) or []:
                    claim = self.claim_of(pod, m["name"])
                    if claim in shared and m["mountPath"].rstrip("/") != want[claim]:
                        self.fail("%s container %s" % (pod.name, c["name"]),
                                  "mounts claim %s at %s, the workers at %s"
                                  % (claim, m["mountPath"], want[claim]))
        for pod, c in coordinators:
            root = flag_values(argv(c)).get("data-root")
            if root and root != "/":
                m = mount_for(pod, c, root)
                if m is None or self.claim_of(pod, m[0]["name"]) not in shared:
                    self.fail("%s container %s" % (pod.name, c["name"]),
                              "--data-root %s is not the workers' shared claim" % root)
        clients = [p for p in self.pods if p.labels.get(CLIENT_LABEL[0]) == CLIENT_LABEL[1]]
        for pod in clients:
            if not any(self.claim_of(pod, v) in shared for v in pod.volumes):
                self.fail(pod.name, "the CLI pod does not mount the shared claim: `dstrain "
                          "submit` resolves a job's paths where it runs")

    # ------------------------------------------------------------------------------------------
    def rule_sources_are(self, rule, allowed):
        """True when every `from` entry of an ingress rule is a podSelector (same namespace)
        that selects only pods matching one of `allowed` (label dicts)."""
        froms = rule.get("from")
        if not froms:
            return False
        for f in froms:
            if "ipBlock" in f or "namespaceSelector" in f or "podSelector" not in f:
                return False
            sel = f["podSelector"].get("matchLabels", {})
            if not sel:
                return False
            if not any(all(a.get(k) == str(v) for k, v in sel.items()) for a in allowed):
                return False
        return True

    def port_matches(self, rule_port, pod, container_port):
        p = rule_port.get("port")
        if p is None:
            return True
        return p == container_port.get("name") or p == container_port.get("containerPort")

    def rules_admitting(self, pod, container_port):
        out = []
        for pol in self.policies:
            if not selects(pol["spec"].get("podSelector"), pod.labels):
                continue
            for rule in pol["spec"].get("ingress", []) or []:
                ports = rule.get("ports")
                if not ports or any(self.port_matches(rp, pod, container_port) for rp in ports):
                    out.append((pol, rule))
        return out

    def check_network_policies(self, coordinators, workers):
        for pol in self.policies:
            if not self.pods_selected(pol["spec"].get("podSelector")):
                self.fail(name_of(pol), "its podSelector %s selects no pod"
                          % pol["spec"].get("podSelector"))
            for rule in pol["spec"].get("ingress", []) or []:
                selected = self.pods_selected(pol["spec"].get("podSelector"))
                for rp in rule.get("ports", []) or []:
                    if isinstance(rp.get("port"), str) and not any(
                            p.port_named(rp["port"]) for p in selected):
                        self.fail(name_of(pol), "names port %r, which the pods it selects "
                                  "do not declare" % rp["port"])
        for pod, _ in coordinators + workers:
            if not any(selects(p["spec"].get("podSelector"), pod.labels) for p in self.policies):
                self.fail(pod.name, "no NetworkPolicy selects these pods")
        worker_labels = [p.labels for p, _ in workers]
        client_labels = dict([CLIENT_LABEL])
        for pod, c in coordinators:
            _, listen_port = port_of(flag_values(argv(c)).get("listen"))
            grpc = next((p for _, p in pod.ports() if p.get("containerPort") == listen_port),
                        None)
            if grpc is None:
                self.fail(pod.name, "the coordinator's --listen port is not declared")
                continue
            rules = self.rules_admitting(pod, grpc)
            if not rules:
                self.fail(pod.name, "no NetworkPolicy rule admits the gRPC port")
            for pol, rule in rules:
                if not self.rule_sources_are(rule, worker_labels + [client_labels]):
                    self.fail(name_of(pol), "admits the coordinator's gRPC port from more than "
                              "worker pods and pods labelled %s=%s" % CLIENT_LABEL)
            admitted = [f.get("podSelector", {}).get("matchLabels", {})
                        for _, rule in rules for f in rule.get("from", []) or []]
            for who, labels in (("worker pods", worker_labels[0] if worker_labels else {}),
                                ("CLI pods (%s=%s)" % CLIENT_LABEL, client_labels)):
                if not any(sel and all(labels.get(k) == str(v) for k, v in sel.items())
                           for sel in admitted):
                    self.fail(pod.name, "no NetworkPolicy rule admits %s to the gRPC port" % who)
        for pod, c in coordinators + workers:
            _, mport = port_of(flag_values(argv(c)).get("metrics-listen"))
            metrics = next((p for _, p in pod.ports() if p.get("containerPort") == mport), None)
            if metrics is None:
                continue  # check_metrics says so
            ok = False
            for pol, rule in self.rules_admitting(pod, metrics):
                for f in rule.get("from", []) or []:
                    sel = f.get("podSelector", {}).get("matchLabels", {})
                    if sel.get(PROMETHEUS_LABEL[0]) == PROMETHEUS_LABEL[1]:
                        ok = True
            if not ok:
                self.fail(pod.name, "no NetworkPolicy rule admits Prometheus (pods labelled "
                          "%s=%s) to the metrics port %d" % (PROMETHEUS_LABEL + (mport,)))

    # ------------------------------------------------------------------------------------------
    def check_metrics(self, pod, c):
        where = "%s container %s" % (pod.name, c["name"])
        listen = flag_values(argv(c)).get("metrics-listen")
        host, mport = port_of(listen)
        if mport is None or mport == 0:
            self.fail(where, "no fixed --metrics-listen port")
            return
        if host in ("127.0.0.1", "localhost"):
            self.fail(where, "--metrics-listen %s is not reachable from Prometheus" % listen)
        if not any(p.get("containerPort") == mport for _, p in pod.ports()):
            self.fail(where, "--metrics-listen port %d is not a declared container port" % mport)
        a = pod.annotations
        if a.get("prometheus.io/scrape") != "true":
            self.fail(pod.name, "no prometheus.io/scrape: \"true\" annotation")
        if a.get("prometheus.io/port") != str(mport):
            self.fail(pod.name, "prometheus.io/port %r is not the metrics port %d"
                      % (a.get("prometheus.io/port"), mport))
        if a.get("prometheus.io/path", "/metrics") != "/metrics":
            self.fail(pod.name, "prometheus.io/path %r is not /metrics"
                      % a.get("prometheus.io/path"))
        for s in self.services:
            sa = s["metadata"].get("annotations") or {}
            if sa.get("prometheus.io/scrape") != "true" or not selects(s["spec"].get("selector"),
                                                                        pod.labels):
                continue
            port = next((p for p in s["spec"].get("ports", [])
                         if str(p.get("port")) == sa.get("prometheus.io/port")), None)
            target = port and pod.port_named(port.get("targetPort", port.get("port")))
            if target is None or target.get("containerPort") != mport:
                self.fail(name_of(s), "prometheus.io/port %r is not a Service port leading to "
                          "the metrics port %d" % (sa.get("prometheus.io/port"), mport))

    def check_monitors(self):
        for d in self.docs:
            if d.get("kind") == "ServiceMonitor":
                services = [s for s in self.services
                            if selects(d["spec"].get("selector"), s["metadata"].get("labels", {}))]
                if not services:
                    self.fail(name_of(d), "selects no Service")
                for e in d["spec"].get("endpoints", []):
                    if not any(p.get("name") == e.get("port") for s in services
                               for p in s["spec"].get("ports", [])):
                        self.fail(name_of(d), "endpoint port %r is no port of the Services it "
                                  "selects" % e.get("port"))
            if d.get("kind") == "PodMonitor":
                pods = self.pods_selected(d["spec"].get("selector"))
                if not pods:
                    self.fail(name_of(d), "selects no pod")
                for e in d["spec"].get("podMetricsEndpoints", []):
                    if not any(p.port_named(e.get("port")) for p in pods):
                        self.fail(name_of(d), "endpoint port %r is no port of the pods it "
                                  "selects" % e.get("port"))

    # ------------------------------------------------------------------------------------------
    def check_secrets(self):
        for pod in self.pods:
            for vname, v in pod.volumes.items():
                if "secret" not in v:
                    continue
                sname = v["secret"]["secretName"]
                if self.secrets is not None and sname not in self.secrets:
                    self.fail(pod.name, "volume %s mounts Secret %s, which make-secrets.sh does "
                              "not make" % (vname, sname))
            for c in pod.containers:
                f = flag_values(argv(c))
                files = [f[k] for k in ("tls-ca", "tls-cert", "tls-key", "tokens") if k in f]
                files += [e["value"] for n, e in env_map(c).items()
                          if n in ("DSTRAIN_TLS_CA", "DSTRAIN_TOKEN_FILE") and "value" in e]
                for path in files:
                    self.check_secret_file(pod, c, path)
        if self.secrets is not None and self.coordinator_hosts:
            crt = (self.secrets.get("dstrain-coordinator-tls") or {}).get("data", {}).get(
                "tls.crt")
            if crt:
                names = certificate_names(crt)
                for host in sorted(self.coordinator_hosts):
                    if host not in names:
                        self.fail("Secret/dstrain-coordinator-tls", "the coordinator's "
                                  "certificate does not name %s, which clients dial" % host)

    def check_secret_file(self, pod, c, path):
        where = "%s container %s" % (pod.name, c["name"])
        # $(POD_NAME) differs per pod: every replica's name.
        names = [path]
        if "$(POD_NAME)" in path:
            base = pod.obj["metadata"]["name"]
            names = [path.replace("$(POD_NAME)", "%s-%d" % (base, i))
                     for i in range(pod.replicas)]
        for p in names:
            m = mount_for(pod, c, p)
            if m is None:
                self.fail(where, "%s is on no mounted volume" % p)
                continue
            vol = m[1] or {}
            if "secret" not in vol:
                continue
            key = p[len(m[0]["mountPath"].rstrip("/")) + 1:]
            if self.secrets is None:
                continue
            secret = self.secrets.get(vol["secret"]["secretName"])
            if secret is not None and key not in (secret.get("data") or {}):
                self.fail(where, "%s: Secret %s has no key %s" % (p, vol["secret"]["secretName"],
                                                                 key))


def certificate_names(pem_b64):
    import base64
    pem = base64.b64decode(pem_b64)
    out = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=pem,
                         capture_output=True, check=True).stdout.decode()
    return set(re.findall(r"DNS:([^,\s]+)", out)) | set(re.findall(r"IP Address:([^,\s]+)", out))


def check(docs, secrets=None):
    return Checker(docs, secrets).run()


def main(argv_):
    if len(argv_) not in (2, 4) or (len(argv_) == 4 and argv_[2] != "--secrets"):
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    secrets = load(argv_[3]) if len(argv_) == 4 else None
    problems = check(load(argv_[1]), secrets)
    for p in problems:
        print("check_manifests: %s: %s" % (argv_[1], p))
    if not problems:
        print("check_manifests: %s: every check passed" % argv_[1])
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
