"""The Kubernetes manifests (packaging/kubernetes) and the container image
(packaging/container/Containerfile), tested like code.

Statically: every manifest validates against the Kubernetes API schemas (kubernetes-validate,
strict, offline); each kustomization lists exactly the manifests of its directory; the
listen ports of the pixelport.toml each ConfigMap holds equal the containerPorts, the probe
ports and the Services' targetPorts; the data dir is on the PersistentVolumeClaim; the memory
limit is above the memory bound documented in config/pixelport.toml; the ServiceMonitors
select the Services' metrics ports; the Containerfile runs what the Deployments run, as the
same user, with every library the binary links.

Then the daemon is run the way the Deployment runs it: the manifest's command and arguments,
its environment (Secret values resolved from secret.yaml), its UID/GID/fsGroup with no
capabilities, in a filesystem rebuilt from the pod spec in a private mount namespace: a
read-only root, the ConfigMap mounted read-only where the pod mounts it, and only the volume
and the /tmp emptyDir writable. It must become ready, serve S3 with the Secret's keys, an
image signed with the Secret's key and salt, and /metrics, and stop cleanly within the grace
period. The edge Deployment is started the same way.

Run as root (the UID switch and the mounts need it); without mount namespaces the run falls
back to the manifest's UID and environment on host paths, and the read-only check skips.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import pytest
import requests
import yaml

import harness

pytestmark = pytest.mark.pixelport_only

K8S = harness.REPO_ROOT / "packaging" / "kubernetes"
CONTAINERFILE = harness.REPO_ROOT / "packaging" / "container" / "Containerfile"
DOCUMENTED_CONFIG = harness.REPO_ROOT / "config" / "pixelport.toml"
IMAGES = harness.REPO_ROOT.parent / "shared" / "images"

# The oldest Kubernetes the manifests promise to work on, and the newest schemas bundled.
MIN_KUBERNETES = "1.30.0"

# Kinds with no schema in kubernetes-validate: a CRD, shape-checked below instead
# (SERVICEMONITOR_SCHEMA), and kustomize's own file, which is not an API object.
NOT_IN_KUBERNETES_SCHEMAS = {
    "ServiceMonitor": "a Prometheus Operator CRD; its shape is checked by "
                      "test_servicemonitor_selects_the_metrics_port",
    "Kustomization": "kustomize's build file, not an API object",
}

# Which config key each named containerPort serves, per kustomization. The port names are
# the contract between the ConfigMap, the Deployment, the Services and the probes.
LISTENERS = {
    "appliance": {
        "s3": ("s3", "listen"),
        "images": ("images", "listen"),
        "admin": ("admin", "listen"),
    },
    "edge": {
        "https": ("edge", "https_listen"),
        "http": ("edge", "http_listen"),
        "tunnel": ("edge", "tunnel_listen"),
        "tunnel-tcp": ("edge", "tunnel_listen"),
        "admin": ("edge", "admin_listen"),
    },
}
# The config key of the data dir the volume must hold.
DATA_DIR_KEY = {"appliance": ("server", "data_dir"), "edge": ("edge", "data_dir")}

# Libraries every debian:bookworm-slim image has (its required packages).
BASE_IMAGE_PACKAGES = {"libc6", "libgcc-s1"}

READY_TIMEOUT = 30.0


# -- reading the manifests -----------------------------------------------------------------

class Bundle:
    """One kustomization directory: its kustomization.yaml and the objects it lists."""

    def __init__(self, name: str, root: Path):
        self.name = name
        self.root = root
        self.kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
        self.files: dict[str, list[dict]] = {}
        for f in self.kustomization.get("resources", []):
            self.files[f] = [d for d in yaml.safe_load_all((root / f).read_text()) if d]
        self.objects = [d for docs in self.files.values() for d in docs]

    def all(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    @property
    def deployment(self) -> dict:
        return self.one("Deployment")

    @property
    def pod(self) -> dict:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict:
        containers = self.pod["containers"]
        assert len(containers) == 1, "one container per pod"
        return containers[0]

    def volume(self, name: str) -> dict:
        return next(v for v in self.pod["volumes"] if v["name"] == name)

    def mount_of(self, predicate) -> dict:
        """The container's volumeMount whose volume matches ``predicate``."""
        found = [m for m in self.container.get("volumeMounts", [])
                 if predicate(self.volume(m["name"]))]
        assert len(found) == 1, f"{self.name}: expected one such mount, found {found}"
        return found[0]

    def config_path(self) -> str:
        """The --config argument of the container."""
        args = self.container["args"]
        return args[args.index("--config") + 1]

    def config_map_for(self, path: str) -> tuple[dict, str]:
        """The ConfigMap and key a file path in the container comes from."""
        mount = next(m for m in self.container["volumeMounts"]
                     if os.path.dirname(path) == m["mountPath"].rstrip("/"))
        volume = self.volume(mount["name"])
        assert "configMap" in volume, f"{path} is not on a ConfigMap volume"
        return self.one("ConfigMap", volume["configMap"]["name"]), os.path.basename(path)

    def config(self) -> dict:
        cm, key = self.config_map_for(self.config_path())
        return tomllib.loads(cm["data"][key])

    def secret_value(self, name: str, key: str) -> str | None:
        secret = self.one("Secret", name)
        if key in secret.get("stringData", {}):
            return secret["stringData"][key]
        if key in secret.get("data", {}):
            return base64.b64decode(secret["data"][key]).decode()
        return None

    def env(self) -> dict[str, str]:
        """The container's environment as the kubelet builds it from the manifests."""
        out: dict[str, str] = {}
        for e in self.container.get("env", []):
            if "value" in e:
                out[e["name"]] = e["value"]
                continue
            ref = e["valueFrom"]
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                value = self.secret_value(r["name"], r["key"])
            else:
                r = ref["configMapKeyRef"]
                value = self.one("ConfigMap", r["name"])["data"].get(r["key"])
            if value is None:
                assert r.get("optional"), f"{e['name']}: {r['name']}/{r['key']} is missing"
                continue  # an optional key that is absent: the kubelet leaves the variable out
            out[e["name"]] = value
        return out

    def container_ports(self) -> dict[str, dict]:
        return {p["name"]: p for p in self.container["ports"]}

    def port_number(self, port) -> int:
        """A probe's or targetPort's port (a name or a number) as the container's number."""
        if isinstance(port, int):
            return port
        return self.container_ports()[port]["containerPort"]


def bundles() -> dict[str, Bundle]:
    return {"appliance": Bundle("appliance", K8S), "edge": Bundle("edge", K8S / "edge")}


BUNDLES = ["appliance", "edge"]


@pytest.fixture(scope="module")
def all_bundles() -> dict[str, Bundle]:
    return bundles()


def listen_port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def listen_host(addr: str) -> str:
    return addr.rsplit(":", 1)[0]


_SIZE_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40,
               "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def config_size(value) -> int:
    """A pixelport size (1048576, "64MiB", "5GB") in bytes."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
    assert m and m[2].upper() in _SIZE_UNITS, f"not a size: {value!r}"
    return int(float(m[1]) * _SIZE_UNITS[m[2].upper()])


_QUANTITY_UNITS = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
                   "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "m": 1e-3}


def quantity(value) -> float:
    """A Kubernetes quantity ("1536Mi", "2", "250m") as a number."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(value))
    assert m and m[2] in _QUANTITY_UNITS, f"not a quantity: {value!r}"
    return float(m[1]) * _QUANTITY_UNITS[m[2]]


def config_seconds(value) -> int:
    """A pixelport duration (30, "30s", "5m", "24h", "7d") in seconds."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"(\d+)([smhd]?)", value.strip())
    assert m, f"not a duration: {value!r}"
    return int(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]


def setting(config: dict, section: str, key: str):
    """The value a key has with this config file: the file's, else the documented default."""
    table = config
    for part in section.split("."):
        table = table.get(part, {})
    if key in table:
        return table[key]
    value = tomllib.loads(DOCUMENTED_CONFIG.read_text())
    for part in section.split("."):
        value = value[part]
    return value[key]


def matches(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        k, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(k) not in values:
            return False
        if op == "NotIn" and labels.get(k) in values:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


# -- reading the Containerfile -------------------------------------------------------------

def containerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in CONTAINERFILE.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def containerfile_one(instruction: str) -> str:
    found = [rest for word, rest in containerfile() if word == instruction]
    assert len(found) == 1, f"Containerfile: expected one {instruction}, found {found}"
    return found[0]


def containerfile_env() -> dict[str, str]:
    env = {}
    for word, rest in containerfile():
        if word == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", rest):
                env[k] = v
    return env


def containerfile_embedded_config() -> dict:
    """The pixelport.toml the image writes with printf, parsed."""
    run = next(rest for word, rest in containerfile()
               if word == "RUN" and "/etc/pixelport/pixelport.toml" in rest)
    printf = run[run.index("printf '%s\\n'"):run.index("> /etc/pixelport/pixelport.toml")]
    lines = re.findall(r"'([^']*)'", printf)[1:]
    return tomllib.loads("\n".join(lines))


# -- static checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", BUNDLES)
def test_kustomization_lists_every_manifest(all_bundles, name):
    b = all_bundles[name]
    on_disk = {p.name for p in b.root.glob("*.yaml")} | {p.name for p in b.root.glob("*.yml")}
    on_disk.discard("kustomization.yaml")
    listed = b.kustomization.get("resources", [])
    assert len(listed) == len(set(listed)), f"listed twice: {listed}"
    assert set(listed) == on_disk, (
        f"{b.root}: not in kustomization.yaml: {sorted(on_disk - set(listed))}; "
        f"listed but missing: {sorted(set(listed) - on_disk)}")
    # kubectl apply -f on the directory agrees with apply -k: every object names the
    # kustomization's namespace, which one of the manifests creates.
    ns = b.kustomization["namespace"]
    assert b.one("Namespace")["metadata"]["name"] == ns
    for o in b.objects:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == ns, f"{o['kind']}/{o['metadata']['name']}"
    # The `images` rewrite applies to the image the Deployment names.
    image_names = {i["name"] for i in b.kustomization.get("images", [])}
    assert b.container["image"].split(":")[0] in image_names


@pytest.mark.parametrize("name", BUNDLES)
def test_manifests_validate_against_kubernetes_schemas(all_bundles, name):
    import kubernetes_validate

    b = all_bundles[name]
    versions = [MIN_KUBERNETES, kubernetes_validate.utils.latest_version()]
    checked = 0
    for f, docs in b.files.items():
        for doc in docs:
            if doc["kind"] in NOT_IN_KUBERNETES_SCHEMAS:
                continue
            for v in versions:
                try:
                    kubernetes_validate.validate(doc, v, strict=True)
                except kubernetes_validate.ValidationError as e:
                    pytest.fail(f"{f}: {doc['kind']}/{doc['metadata']['name']} against "
                                f"Kubernetes {v}: {'.'.join(map(str, e.path))}: {e.message}")
            checked += 1
    assert checked >= 5
    # The validator is strict: a misspelled field is an error, not ignored.
    typo = json.loads(json.dumps(b.deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, versions[-1], strict=True)


def test_kustomize_renders_the_manifests(all_bundles):
    """`kubectl kustomize` (when kubectl is installed) renders every object, namespaced and
    with the image rewritten, and the rendered objects validate too."""
    import kubernetes_validate

    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed (the project's setup does not install it)")
    for b in all_bundles.values():
        out = subprocess.run([kubectl, "kustomize", str(b.root)], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
        assert sorted((o["kind"], o["metadata"]["name"]) for o in rendered) == \
            sorted((o["kind"], o["metadata"]["name"]) for o in b.objects)
        image = b.kustomization["images"][0]
        for o in rendered:
            if o["kind"] == "Deployment":
                assert o["spec"]["template"]["spec"]["containers"][0]["image"] == \
                    f"{image['newName']}:{image['newTag']}"
            if o["kind"] not in NOT_IN_KUBERNETES_SCHEMAS:
                kubernetes_validate.validate(o, kubernetes_validate.utils.latest_version(),
                                             strict=True)


@pytest.mark.parametrize("name", BUNDLES)
def test_listen_ports_match_container_probe_and_service_ports(all_bundles, name):
    b = all_bundles[name]
    cfg = b.config()
    ports = b.container_ports()
    listeners = LISTENERS[name]
    assert set(ports) == set(listeners), f"containerPorts {sorted(ports)}"
    for port_name, (section, key) in listeners.items():
        addr = setting(cfg, section, key)
        # In a pod, a listener on loopback is unreachable from the Service and the kubelet.
        assert listen_host(addr) in ("0.0.0.0", "[::]"), f"[{section}] {key} = {addr!r}"
        assert ports[port_name]["containerPort"] == listen_port(addr), \
            f"containerPort {port_name} vs [{section}] {key} = {addr}"
        want_proto = "UDP" if port_name == "tunnel" else "TCP"
        assert ports[port_name].get("protocol", "TCP") == want_proto, port_name

    # Probes: the admin listener, /health for liveness and startup, /ready for readiness
    # (the edge's readiness uses /health: see its deployment.yaml).
    admin = listen_port(setting(cfg, *listeners["admin"]))
    ready_path = "/ready" if name == "appliance" else "/health"
    for probe, path in (("startupProbe", "/health"), ("livenessProbe", "/health"),
                        ("readinessProbe", ready_path)):
        get = b.container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert b.port_number(get["port"]) == admin, f"{probe} port {get['port']}"

    # Services: they select this pod, and every targetPort is one of its listeners.
    labels = b.deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(b.deployment["spec"]["selector"], labels)
    served = set()
    for svc in b.all("Service"):
        assert matches({"matchLabels": svc["spec"]["selector"]}, labels), svc["metadata"]["name"]
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            number = b.port_number(target)
            named = [n for n, cp in ports.items()
                     if cp["containerPort"] == number
                     and cp.get("protocol", "TCP") == p.get("protocol", "TCP")]
            assert len(named) == 1, f"Service {svc['metadata']['name']} port {p}: no such containerPort"
            section, key = listeners[named[0]]
            assert number == listen_port(setting(cfg, section, key)), p
            served.add(named[0])
    assert served == set(listeners), f"listeners no Service reaches: {set(listeners) - served}"


@pytest.mark.parametrize("name", BUNDLES)
def test_config_and_data_are_on_the_right_volumes(all_bundles, name):
    b = all_bundles[name]
    cfg = b.config()
    # The data dir is a directory on the PersistentVolumeClaim, and that claim is shipped.
    # Not the volume's root: the daemon makes its data dir 0700, and a volume's root is
    # root's (group fsGroup), so the pod's user cannot chmod it and the daemon refuses to
    # start (the pod run below models such a volume).
    data = b.mount_of(lambda v: "persistentVolumeClaim" in v)
    assert setting(cfg, *DATA_DIR_KEY[name]).startswith(data["mountPath"].rstrip("/") + "/")
    claim = b.volume(data["name"])["persistentVolumeClaim"]["claimName"]
    pvc = b.one("PersistentVolumeClaim", claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in pvc["spec"], "the storage class is the user's choice"
    if name == "appliance":
        assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
    # The derivative (or edge) cache fits on the volume next to the free-space floor.
    volume_bytes = quantity(pvc["spec"]["resources"]["requests"]["storage"])
    if name == "appliance":
        cache = config_size(setting(cfg, "cache", "max_size"))
        floor = config_size(setting(cfg, "server", "min_free_space"))
    else:
        cache, floor = config_size(setting(cfg, "edge.cache", "disk_size")), 0
    assert cache + floor < volume_bytes
    # One pod owns the volume: no rolling update with two pods on a ReadWriteOnce claim.
    assert b.deployment["spec"]["replicas"] == 1
    assert b.deployment["spec"]["strategy"]["type"] == "Recreate"
    # The config comes from the ConfigMap, read-only, and exec'd subcommands find it too.
    config_mount = b.mount_of(lambda v: "configMap" in v)
    assert config_mount.get("readOnly") is True
    assert os.path.dirname(b.config_path()) == config_mount["mountPath"]
    assert b.env()["PIXELPORT_CONFIG"] == b.config_path()
    # /tmp is an emptyDir (the root filesystem is read-only).
    assert "emptyDir" in b.volume(b.mount_of(lambda v: "emptyDir" in v)["name"])
    assert b.mount_of(lambda v: "emptyDir" in v)["mountPath"] == "/tmp"
    # JSON logs for the cluster's log shipper.
    assert setting(cfg, "server", "log_format") == "json"
    # The certificate files the edge's config names are on one of the pod's mounts.
    if name == "edge":
        mounts = [m["mountPath"] for m in b.container["volumeMounts"]]
        for key in ("tls_cert", "tls_key"):
            path = setting(cfg, "edge", key)
            assert any(path.startswith(m + "/") for m in mounts), f"[edge] {key} = {path}"


@pytest.mark.parametrize("name", BUNDLES)
def test_pod_security_context(all_bundles, name):
    b = all_bundles[name]
    pod, ctr = b.pod["securityContext"], b.container["securityContext"]
    assert pod["runAsNonRoot"] is True and ctr["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001 and pod["runAsGroup"] == 10001
    assert pod["fsGroup"] == 10001, "the volume must be writable by the pod's group"
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert ctr["readOnlyRootFilesystem"] is True
    assert ctr["allowPrivilegeEscalation"] is False
    assert ctr["capabilities"]["drop"] == ["ALL"] and not ctr["capabilities"].get("add")
    assert b.pod["automountServiceAccountToken"] is False
    # Service links would add PIXELPORT_*-named variables, which the daemon reads as config.
    assert b.pod["enableServiceLinks"] is False
    # The image's user is the manifest's.
    assert containerfile_one("USER") == f"{pod['runAsUser']}:{pod['runAsGroup']}"


@pytest.mark.parametrize("name", BUNDLES)
def test_memory_limit_and_grace_period(all_bundles, name):
    b = all_bundles[name]
    cfg = b.config()
    res = b.container["resources"]
    limit = quantity(res["limits"]["memory"])
    assert quantity(res["requests"]["memory"]) <= limit
    assert quantity(res["requests"]["cpu"]) <= quantity(res["limits"]["cpu"])
    if name == "appliance":
        # config/pixelport.toml: "max_source_memory + max_pixel_memory + [cache] memory_size
        # + about N MiB". The figure is read from there, so the test follows the docs.
        doc = DOCUMENTED_CONFIG.read_text()
        m = re.search(r"max_source_memory \+ max_pixel_memory \+ \[cache\] memory_size \+ "
                      r"about (\d+) MiB", doc)
        assert m, "config/pixelport.toml no longer documents the memory bound"
        bound = (config_size(setting(cfg, "images", "max_source_memory"))
                 + config_size(setting(cfg, "images", "max_pixel_memory"))
                 + config_size(setting(cfg, "cache", "memory_size"))
                 + int(m[1]) * harness.MiB)
    else:
        # The edge cache's memory tier and the 256 MiB its deployment.yaml reserves beside it.
        bound = config_size(setting(cfg, "edge.cache", "memory_size")) + 256 * harness.MiB
    assert limit > bound, f"memory limit {res['limits']['memory']} <= bound {bound / harness.MiB} MiB"
    # SIGTERM, then shutdown_grace for in-flight requests: the kubelet must not SIGKILL first.
    grace = config_seconds(setting(cfg, "server", "shutdown_grace"))
    assert b.pod["terminationGracePeriodSeconds"] > grace


@pytest.mark.parametrize("name", BUNDLES)
def test_secret_supplies_the_credentials(all_bundles, name):
    b = all_bundles[name]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in b.container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    for var, ref in refs.items():
        # Each variable names a config key the daemon knows: PIXELPORT_<SECTION>__<KEY>.
        section, key = var.removeprefix("PIXELPORT_").lower().split("__")
        assert key in tomllib.loads(DOCUMENTED_CONFIG.read_text())[section], var
        assert b.one("Secret", ref["name"]), var
        if not ref.get("optional"):
            assert b.secret_value(ref["name"], ref["key"]), f"{var}: {ref['key']} is empty"
    env = b.env()
    if name == "appliance":
        assert set(refs) >= {"PIXELPORT_S3__ACCESS_KEY", "PIXELPORT_S3__SECRET_KEY",
                             "PIXELPORT_IMAGES__KEY", "PIXELPORT_IMAGES__SALT",
                             "PIXELPORT_ADMIN__TOKEN", "PIXELPORT_ADMIN__PASSWORD_HASH"}
        bytes.fromhex(env["PIXELPORT_IMAGES__KEY"])
        bytes.fromhex(env["PIXELPORT_IMAGES__SALT"])
        assert len(env["PIXELPORT_ADMIN__TOKEN"]) >= 16
        # Secrets live in the Secret, not in the ConfigMap.
        cfg = b.config()
        for section, key in (("s3", "secret_key"), ("images", "key"), ("images", "salt"),
                             ("admin", "token"), ("admin", "password_hash")):
            assert not cfg.get(section, {}).get(key), f"[{section}] {key} is in the ConfigMap"
    else:
        assert "PIXELPORT_EDGE__ADMIN_TOKEN" in refs
        assert not b.config().get("edge", {}).get("admin_token")


# The fields of a ServiceMonitor these manifests use, with monitoring.coreos.com/v1's types;
# anything else is rejected, so a misspelled field fails here as it would go unnoticed on a
# cluster (the CRD prunes unknown fields silently).
_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "required": ["key", "operator"], "additionalProperties": False,
            "properties": {"key": {"type": "string"},
                           "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                           "values": {"type": "array", "items": {"type": "string"}}}}},
    },
}
SERVICEMONITOR_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name", "namespace"], "properties": {
            "name": {"type": "string"}, "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "spec": {
            "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
            "properties": {
                "selector": _SELECTOR,
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                                      "properties": {"any": {"type": "boolean"},
                                                     "matchNames": {"type": "array",
                                                                    "items": {"type": "string"}}}},
                "jobLabel": {"type": "string"},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["port"], "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                        "scrapeTimeout": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                        "honorLabels": {"type": "boolean"},
                    }}},
            }},
    },
}


@pytest.mark.parametrize("name", BUNDLES)
def test_servicemonitor_selects_the_metrics_port(all_bundles, name):
    import jsonschema

    b = all_bundles[name]
    sm = b.one("ServiceMonitor")
    jsonschema.validate(sm, SERVICEMONITOR_SCHEMA)
    ns = sm["metadata"]["namespace"]
    allowed_ns = sm["spec"].get("namespaceSelector", {}).get("matchNames", [ns])
    selected = [s for s in b.all("Service")
                if s["metadata"]["namespace"] in allowed_ns
                and matches(sm["spec"]["selector"], s["metadata"].get("labels", {}))]
    assert selected, "the ServiceMonitor selects no Service"
    admin = listen_port(setting(b.config(), *LISTENERS[name]["admin"]))
    for ep in sm["spec"]["endpoints"]:
        assert ep.get("path") == "/metrics"
        for svc in selected:
            by_name = {p["name"]: p for p in svc["spec"]["ports"]}
            assert ep["port"] in by_name, \
                f"Service {svc['metadata']['name']} has no port named {ep['port']}"
            # ...and that port reaches the admin listener, where /metrics is served.
            assert b.port_number(by_name[ep["port"]]["targetPort"]) == admin


def test_containerfile_runs_what_the_deployments_run(all_bundles):
    app = all_bundles["appliance"]
    assert containerfile_one("FROM") == "docker.io/library/debian:bookworm-slim"
    entry = json.loads(containerfile_one("ENTRYPOINT"))
    cmd = json.loads(containerfile_one("CMD"))
    assert entry + cmd == app.container["command"] + app.container["args"]
    for b in all_bundles.values():
        assert b.container["command"] == entry
        # The prebuilt binary lands where the command runs it from.
        copy = containerfile_one("COPY").split()
        assert copy[-1] == b.container["command"][0]
        # The image's volume is the pod's data volume.
        assert json.loads(containerfile_one("VOLUME")) == \
            [b.mount_of(lambda v: "persistentVolumeClaim" in v)["mountPath"]]
    # EXPOSE names the appliance's listeners; the image's own config (for a plain
    # `podman run`) listens on them on every interface and keeps data on the volume.
    exposed = {int(p.split("/")[0]) for p in containerfile_one("EXPOSE").split()}
    assert exposed == {p["containerPort"] for p in app.container["ports"]}
    embedded = containerfile_embedded_config()
    assert {listen_port(embedded[s]["listen"]) for s in ("s3", "images", "admin")} == exposed
    assert all(listen_host(embedded[s]["listen"]) == "0.0.0.0" for s in ("s3", "images", "admin"))
    assert embedded["server"]["data_dir"].startswith(json.loads(containerfile_one("VOLUME"))[0] + "/")
    assert containerfile_env()["PIXELPORT_CONFIG"] == app.config_path()


def test_containerfile_config_is_valid(tmp_path):
    """The config the image writes for a plain `podman run` is one the daemon accepts."""
    binary = harness.pixelport_bin()
    if not binary.exists():
        pytest.skip(f"no binary at {binary}")
    run = next(rest for word, rest in containerfile()
               if word == "RUN" and "/etc/pixelport/pixelport.toml" in rest)
    printf = run[run.index("printf '%s\\n'"):run.index("> /etc/pixelport/pixelport.toml")]
    out = subprocess.run(["sh", "-c", printf], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    cfg = tmp_path / "pixelport.toml"
    cfg.write_text(out.stdout)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELPORT_")}
    check = subprocess.run([str(binary), "check-config", str(cfg)], capture_output=True,
                           text=True, timeout=20, env=env)
    assert check.returncode == 0, check.stderr
    assert tomllib.loads(out.stdout) == containerfile_embedded_config()


def test_containerfile_installs_every_library_the_binary_links():
    binary = harness.pixelport_bin()
    if not binary.exists():
        pytest.skip(f"no binary at {binary}")
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30)
    assert ldd.returncode == 0, ldd.stderr
    # The libraries the binary itself names (ELF NEEDED): their own dependencies come with
    # their packages (libheif1 brings libde265, libx265, libaom...).
    dynamic = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True,
                             timeout=30)
    assert dynamic.returncode == 0, dynamic.stderr
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic.stdout))
    assert "libc.so.6" in needed, dynamic.stdout
    libs = [path for name, path in re.findall(r"^\s*(\S+)\s+=>\s+(\S+)\s+\(", ldd.stdout, re.M)
            if name in needed]
    assert libs, ldd.stdout
    packages = set()
    for lib in libs:
        real = os.path.realpath(lib)
        candidates = {lib, real} | {p.replace("/usr/lib/", "/lib/", 1) for p in (lib, real)} \
            | {p.replace("/lib/", "/usr/lib/", 1) for p in (lib, real) if p.startswith("/lib/")}
        for c in candidates:
            out = subprocess.run(["dpkg", "-S", c], capture_output=True, text=True)
            if out.returncode == 0:
                packages.add(out.stdout.split(":")[0])
                break
        else:
            pytest.fail(f"{lib}: no Debian package owns it")
    run = " ".join(rest for word, rest in containerfile() if word == "RUN")
    installed = set(re.findall(r"apt-get install [^&]*", run)[0].split()[2:])
    missing = packages - BASE_IMAGE_PACKAGES - installed
    assert not missing, f"the binary links libraries from {missing}; apt-get install them"


# -- the pod, run as the Deployment runs it -------------------------------------------------

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
ST_RELATIME = 4096


def _mount(src, dst, fstype=None, flags=0, data=None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    enc = (lambda s: None if s is None else os.fsencode(s))
    if libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} on {dst}: {os.strerror(err)}")


def _make_read_only(path: str) -> None:
    """Remount one mount point read-only (this mount only: a bind's source stays as it was)."""
    st = os.statvfs(path).f_flag
    keep = st & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    if st & ST_RELATIME:
        keep |= MS_RELATIME
    _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)


def sandbox_main(spec_path: str) -> int:
    """Runs as root in a fresh mount namespace (`unshare --mount`): build the pod's
    filesystem on a tmpfs, make all of it read-only except the volumes the pod mounts
    writable, check that, chroot into it, and exec the container's command as its user."""
    spec = json.loads(Path(spec_path).read_text())
    root = spec["root"]

    def at(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    read_only = []
    # The OS: /usr, with the merged-/usr links (or the directories of an unmerged system).
    for name in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = "/" + name
        if os.path.islink(host):
            os.symlink(os.readlink(host), at(host))
        elif os.path.isdir(host):
            os.mkdir(at(host))
            _mount(host, at(host), None, MS_BIND)
            read_only.append(at(host))
    # /etc: each entry of the host's, on a tmpfs, so the pod's mounts can add directories.
    os.mkdir(at("/etc"))
    _mount("tmpfs", at("/etc"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    for name in sorted(os.listdir("/etc")):
        host, dst = "/etc/" + name, at("/etc/" + name)
        if os.path.islink(host):
            os.symlink(os.readlink(host), dst)
            continue
        if os.path.isdir(host):
            os.mkdir(dst)
        elif os.path.isfile(host):
            open(dst, "w").close()
        else:
            continue
        _mount(host, dst, None, MS_BIND)
        read_only.append(dst)
    read_only.append(at("/etc"))
    # What the image has besides: /var/tmp (world-writable there, read-only with the root).
    os.makedirs(at("/var/tmp"))
    os.chmod(at("/var/tmp"), 0o1777)
    # /proc, /sys and a minimal /dev, as a container runtime provides them.
    os.mkdir(at("/proc"))
    try:
        _mount("proc", at("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        _mount("/proc", at("/proc"), None, MS_BIND | MS_REC)
    os.mkdir(at("/sys"))
    _mount("/sys", at("/sys"), None, MS_BIND)
    read_only.append(at("/sys"))
    os.mkdir(at("/dev"))
    _mount("tmpfs", at("/dev"), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755")
    for dev in ("null", "zero", "full", "random", "urandom"):
        open(at("/dev/" + dev), "w").close()
        _mount("/dev/" + dev, at("/dev/" + dev), None, MS_BIND)
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", at("/dev/" + name))
    os.symlink("/proc/self/fd", at("/dev/fd"))
    read_only.append(at("/dev"))
    # Files of the image that the host lacks (the binary): on a tmpfs over their directory.
    for f in spec["image_files"]:
        parent = os.path.dirname(f["target"])
        assert os.path.isdir(at(parent)), parent
        _mount("tmpfs", at(parent), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        open(at(f["target"]), "w").close()
        _mount(f["source"], at(f["target"]), None, MS_BIND)
        read_only += [at(f["target"]), at(parent)]
    # The pod's volumes, where the container mounts them.
    for m in spec["mounts"]:
        assert not any(m["target"] == p or m["target"].startswith(p + "/")
                       for p in ("/usr", "/bin", "/sbin", "/lib", "/lib64")), m["target"]
        os.makedirs(at(m["target"]), exist_ok=True)
        _mount(m["source"], at(m["target"]), None, MS_BIND)
        if m["read_only"]:
            read_only.append(at(m["target"]))
    for path in read_only:
        _make_read_only(path)
    _make_read_only(root)

    # What the pod's filesystem is now: every mount with its options, and whether root
    # (which permissions do not stop) can create a file in a few places.
    mounts = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = fields[4].replace("\\040", " ")
        if point == root or point.startswith(root + "/"):
            fstype = fields[fields.index("-") + 1]
            mounts["/" + os.path.relpath(point, root).removeprefix(".")] = {
                "options": fields[5].split(","), "fstype": fstype}
    writes = {}
    for path in sorted({"/", "/etc", "/usr", "/usr/local/bin", "/var", "/var/tmp", "/dev"}
                       | {m["target"] for m in spec["mounts"]}):
        probe = os.path.join(at(path), ".pixelport-write-probe")
        try:
            os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            os.unlink(probe)
            writes[path] = "ok"
        except OSError as e:
            writes[path] = errno.errorcode.get(e.errno, str(e.errno))
    Path(spec["report"]).write_text(json.dumps({"mounts": mounts, "writes": writes}))

    os.chroot(root)
    os.chdir(spec["cwd"])
    setpriv = ["/usr/bin/setpriv", f"--reuid={spec['uid']}", f"--regid={spec['gid']}",
               "--groups=" + ",".join(map(str, spec["groups"])),
               "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]
    os.execve(setpriv[0], setpriv + spec["argv"], spec["env"])
    return 127


def _can_unshare_mounts() -> str | None:
    """None when a private mount namespace with a tmpfs works here, else why not."""
    probe = tempfile.mkdtemp(prefix="pixelport-k8s-probe-")
    try:
        out = subprocess.run(["unshare", "--mount", "--propagation", "private",
                              "mount", "-t", "tmpfs", "tmpfs", probe],
                             capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return f"`unshare --mount` + tmpfs failed: {out.stderr.strip()}"
        return None
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`unshare --mount` unavailable: {e}"
    finally:
        os.rmdir(probe)


class Pod:
    """The Deployment's container, run on this machine as the kubelet would run it."""

    def __init__(self, bundle: Bundle, base: Path, extra_secret_files: dict | None = None):
        self.b = bundle
        self.base = base
        self.sandboxed = _can_unshare_mounts() is None
        self.extra_secret_files = extra_secret_files or {}
        self.proc: subprocess.Popen | None = None
        self.stderr = base / "stderr.log"
        self.stdout = base / "stdout.log"
        self.report = base / "report.json"
        self.volumes: dict[str, Path] = {}   # volume name -> host directory
        # Free loopback ports in place of the manifest's fixed ones (every test process
        # needs its own); each listener's address is overridden by its PIXELPORT_ variable.
        # Everything else comes from the manifests.
        self.ports = {}
        self.listen_env = {}
        for port_name, (section, key) in LISTENERS[bundle.name].items():
            var = f"PIXELPORT_{section.upper()}__{key.upper()}"
            if var not in self.listen_env:
                self.ports[(section, key)] = harness.free_port()
                self.listen_env[var] = f"127.0.0.1:{self.ports[(section, key)]}"

    def port(self, port_name: str) -> int:
        return self.ports[LISTENERS[self.b.name][port_name]]

    def url(self, port_name: str) -> str:
        return f"http://127.0.0.1:{self.port(port_name)}"

    def _volume_dir(self, volume: dict) -> Path:
        """A host directory holding what the kubelet would put in this volume."""
        d = self.volume_root / volume["name"]
        d.mkdir(parents=True)
        fs_group = self.b.pod["securityContext"].get("fsGroup")
        if "persistentVolumeClaim" in volume:
            # A fresh claim, group-owned by fsGroup, group-writable, setgid (the kubelet's
            # fsGroup handling): writable by the pod's group only.
            os.chown(d, 0, fs_group)
            os.chmod(d, 0o2770)
        elif "emptyDir" in volume:
            os.chmod(d, 0o777)
        elif "configMap" in volume or "secret" in volume:
            if "configMap" in volume:
                data = self.b.one("ConfigMap", volume["configMap"]["name"])["data"]
            else:
                name = volume["secret"]["secretName"]
                try:
                    s = self.b.one("Secret", name)
                    data = {**s.get("stringData", {}),
                            **{k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}}
                except AssertionError:
                    data = self.extra_secret_files[name]
            for key, text in data.items():
                (d / key).write_text(text)
                os.chmod(d / key, 0o644)
            os.chmod(d, 0o755)
        else:
            raise AssertionError(f"volume type not modelled: {volume}")
        return d

    def start(self) -> "Pod":
        ctr, pod = self.b.container, self.b.pod
        sc = {**pod.get("securityContext", {}), **ctr.get("securityContext", {})}
        assert sc["runAsNonRoot"] and sc["runAsUser"] != 0
        if self.sandboxed:
            self.volume_root = self.base / "volumes"
        else:
            # Host paths the pod's user can reach (pytest's base directory is root's, 0700).
            self.volume_root = Path(tempfile.mkdtemp(prefix="pixelport-k8s-volumes-"))
            os.chmod(self.volume_root, 0o711)
        for v in pod["volumes"]:
            self.volumes[v["name"]] = self._volume_dir(v)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOSTNAME": self.b.deployment["metadata"]["name"], "HOME": "/"}
        env.update(containerfile_env())           # the image's ENV
        env.update(self.b.env())                  # the container's env, Secrets resolved
        env.update(self.listen_env)
        argv = list(ctr["command"]) + list(ctr.get("args", []))
        mounts = [{"target": m["mountPath"], "source": str(self.volumes[m["name"]]),
                   "read_only": bool(m.get("readOnly"))
                   or any(k in self.b.volume(m["name"]) for k in ("configMap", "secret"))}
                  for m in ctr["volumeMounts"]]
        cwd = ctr.get("workingDir") or containerfile_one("WORKDIR")
        groups = [sc["runAsGroup"]] + ([sc["fsGroup"]] if sc.get("fsGroup") not in
                                       (None, sc["runAsGroup"]) else [])
        if self.sandboxed:
            root = self.base / "root"
            root.mkdir()
            spec = {"root": str(root), "report": str(self.report), "mounts": mounts,
                    "image_files": [{"target": argv[0], "source": str(harness.pixelport_bin())}],
                    "cwd": cwd, "uid": sc["runAsUser"], "gid": sc["runAsGroup"],
                    "groups": groups, "argv": argv, "env": env}
            spec_path = self.base / "sandbox.json"
            spec_path.write_text(json.dumps(spec))
            cmd = ["unshare", "--mount", "--propagation", "private", "--",
                   sys.executable, __file__, "--sandbox", str(spec_path)]
        else:
            # No mount namespace: the pod's paths cannot be recreated, so the host
            # directories stand in for them (in the arguments, the environment and the
            # config file) and the root stays writable. UID, groups, capabilities and the
            # environment are still the manifest's.
            by_target = {m["target"]: m["source"] for m in mounts}
            pod_paths = re.compile(
                r"(?<![\w./-])("
                + "|".join(map(re.escape, sorted(by_target, key=len, reverse=True)))
                + r")(?![\w.-])")

            def host_path(text: str) -> str:
                return pod_paths.sub(lambda m: by_target[m[1]], text)
            for d in self.volumes.values():
                for f in d.iterdir():
                    f.write_text(host_path(f.read_text()))
            argv = [str(harness.pixelport_bin())] + [host_path(a) for a in argv[1:]]
            env = {k: host_path(v) for k, v in env.items()}
            cwd = host_path(cwd)
            cmd = ["setpriv", f"--reuid={sc['runAsUser']}", f"--regid={sc['runAsGroup']}",
                   "--groups=" + ",".join(map(str, groups)), "--no-new-privs",
                   "--inh-caps=-all", "--bounding-set=-all", "--", *argv]
        with open(self.stderr, "ab") as err, open(self.stdout, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=env if not self.sandboxed else None,
                                         cwd=cwd if not self.sandboxed else None,
                                         start_new_session=True)
        return self

    def wait_for(self, port_name: str, path: str) -> requests.Response:
        """Poll GET path on a listener, as a probe does, until 200."""
        deadline = time.monotonic() + READY_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the pod's process exited with {self.proc.returncode}:\n{self.logs()}",
                            pytrace=False)
            try:
                r = requests.get(self.url(port_name) + path, timeout=2)
                if r.status_code == 200:
                    return r
                last = f"HTTP {r.status_code}: {r.text[:300]}"
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.1)
        pytest.fail(f"{path} on {port_name} not 200 within {READY_TIMEOUT}s (last: {last}):\n"
                    f"{self.logs()}", pytrace=False)

    def stop(self) -> tuple[int | None, float]:
        """SIGTERM, as the kubelet sends it; SIGKILL after the pod's grace period."""
        if self.proc is None:
            return None, 0.0
        grace = self.b.pod.get("terminationGracePeriodSeconds", 30)
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        took = time.monotonic() - t0
        if not self.sandboxed:
            shutil.rmtree(self.volume_root, ignore_errors=True)
        return self.proc.returncode, took

    def logs(self) -> str:
        text = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        return "\n".join(text.splitlines()[-60:])

    def read_report(self) -> dict:
        return json.loads(self.report.read_text())


def _need_root():
    if os.geteuid() != 0:
        pytest.skip("switching to the manifest's UID (setpriv) needs root")
    if not shutil.which("setpriv") or not shutil.which("unshare"):
        pytest.skip("setpriv/unshare (util-linux) not installed")
    if not harness.pixelport_bin().exists():
        pytest.skip(f"no binary at {harness.pixelport_bin()}")


@pytest.fixture(scope="module")
def appliance(all_bundles, tmp_path_factory):
    _need_root()
    pod = Pod(all_bundles["appliance"], tmp_path_factory.mktemp("k8s-appliance")).start()
    try:
        readiness = pod.b.container["readinessProbe"]["httpGet"]
        pod.wait_for(readiness["port"], readiness["path"])
    except BaseException:
        pod.stop()
        raise
    yield pod
    rc, took = pod.stop()
    if rc != 0:
        pytest.fail(f"the daemon exited with {rc} after SIGTERM ({took:.1f}s), expected 0 "
                    f"within terminationGracePeriodSeconds:\n{pod.logs()}", pytrace=False)


def test_pod_is_ready_and_healthy_on_its_probes(appliance):
    c = appliance.b.container
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        r = requests.get(appliance.url(get["port"]) + get["path"], timeout=5)
        assert r.status_code == 200, f"{probe}: {r.status_code} {r.text}"
    # The effective configuration is the ConfigMap's, read from where the pod mounts it.
    token = appliance.b.env()["PIXELPORT_ADMIN__TOKEN"]
    settings = requests.get(appliance.url("admin") + "/api/settings", timeout=5,
                            headers={"Authorization": f"Bearer {token}"})
    assert settings.status_code == 200, settings.text
    cfg = settings.json()["config"]
    if appliance.sandboxed:
        assert cfg["server"]["data_dir"] == appliance.b.config()["server"]["data_dir"]
    assert cfg["images"]["max_pixel_memory"] == appliance.b.config()["images"]["max_pixel_memory"]
    assert requests.get(appliance.url("admin") + "/api/settings", timeout=5).status_code == 401
    # Logs are one JSON object per line (log_format = "json").
    lines = [l for l in appliance.stderr.read_text().splitlines() if l.strip()]
    assert lines
    for line in lines:
        assert isinstance(json.loads(line), dict), line


def test_s3_and_signed_images_with_the_secrets_keys(appliance):
    env = appliance.b.env()
    s3 = harness.make_client(appliance.url("s3"), env["PIXELPORT_S3__ACCESS_KEY"],
                             env["PIXELPORT_S3__SECRET_KEY"])
    photo = (IMAGES / "rocket-640x427.jpg").read_bytes()
    bucket = harness.unique_name("k8s")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="rocket.jpg", Body=photo, ContentType="image/jpeg")
    assert s3.get_object(Bucket=bucket, Key="rocket.jpg")["Body"].read() == photo
    # Another key pair is refused: the Secret's are the ones in force.
    other = harness.make_client(appliance.url("s3"), "someone-else", "not-the-secret-key")
    with pytest.raises(Exception):
        other.list_buckets()

    from PIL import Image

    path = f"/rs:fit:300:200/plain/s3://{bucket}/rocket.jpg@webp"
    mac = hmac.new(bytes.fromhex(env["PIXELPORT_IMAGES__KEY"]),
                   bytes.fromhex(env["PIXELPORT_IMAGES__SALT"]) + path.encode(), hashlib.sha256)
    sig = base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")
    r = requests.get(f"{appliance.url('images')}/{sig}{path}", timeout=60)
    assert r.status_code == 200, r.text
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "WEBP" and img.size == (300, 200)
    # A tampered signature is refused (the last two characters changed, never to
    # themselves: a signature that already ended in "AA" made this pass by chance).
    tampered = sig[:-2] + ("AA" if not sig.endswith("AA") else "BB")
    assert requests.get(f"{appliance.url('images')}/{tampered}{path}", timeout=30).status_code == 403


def test_metrics_where_the_servicemonitor_scrapes(appliance):
    ep = appliance.b.one("ServiceMonitor")["spec"]["endpoints"][0]
    svc = appliance.b.one("Service")
    target = next(p["targetPort"] for p in svc["spec"]["ports"] if p["name"] == ep["port"])
    port_name = next(n for n, p in appliance.b.container_ports().items()
                     if p["containerPort"] == appliance.b.port_number(target))
    r = requests.get(appliance.url(port_name) + ep["path"], timeout=10)
    assert r.status_code == 200
    from prometheus_client.parser import text_string_to_metric_families

    names = {f.name for f in text_string_to_metric_families(r.text)}
    assert any(n.startswith("pixelport_") for n in names), sorted(names)[:20]


def test_root_filesystem_is_read_only_but_the_volumes_are_not(appliance):
    if not appliance.sandboxed:
        pytest.skip(f"no read-only root here: {_can_unshare_mounts()}")
    report = appliance.read_report()
    ctr = appliance.b.container
    writable_mounts = {m["mountPath"] for m in ctr["volumeMounts"]
                       if not m.get("readOnly")
                       and not any(k in appliance.b.volume(m["name"]) for k in ("configMap", "secret"))}
    assert writable_mounts == {"/var/lib/pixelport", "/tmp"}
    # Root itself could not create a file anywhere but in the writable volumes.
    for path, result in report["writes"].items():
        if path in writable_mounts:
            assert result == "ok", f"{path}: {result}"
        else:
            assert result == "EROFS", f"{path} is writable ({result})"
    # Every mount of the pod's filesystem is read-only but those volumes (and /proc and the
    # device nodes, which hold no files).
    for point, m in report["mounts"].items():
        if m["fstype"] in ("proc", "sysfs", "devtmpfs") or point.startswith("/dev/"):
            continue
        rw = "rw" in m["options"]
        assert rw == (point in writable_mounts), f"{point}: {m}"
    # The daemon ran there, as the manifest's user: its files on the volume are its own.
    data = appliance.volumes[appliance.b.mount_of(lambda v: "persistentVolumeClaim" in v)["name"]]
    owned = [p for p in data.rglob("*")]
    assert owned, "nothing written to the data volume"
    uid = appliance.b.pod["securityContext"]["runAsUser"]
    assert all(p.lstat().st_uid == uid for p in owned), \
        {str(p): p.lstat().st_uid for p in owned if p.lstat().st_uid != uid}


def _self_signed_tls(d: Path) -> dict[str, str]:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed (needed for the edge's test certificate)")
    key, crt = d / "tls.key", d / "tls.crt"
    out = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                          "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                          "-subj", "/CN=images.example.test",
                          "-addext", "subjectAltName=DNS:images.example.test",
                          "-keyout", str(key), "-out", str(crt)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return {"tls.crt": crt.read_text(), "tls.key": key.read_text()}


def test_edge_pod_starts_as_its_deployment_says(all_bundles, tmp_path):
    _need_root()
    edge = all_bundles["edge"]
    # The certificate Secret is the user's (README.md); a self-signed one stands in.
    tls_volume = next(v for v in edge.pod["volumes"] if "secret" in v)
    tls = _self_signed_tls(tmp_path)
    pod = Pod(edge, tmp_path / "pod", {tls_volume["secret"]["secretName"]: tls})
    pod.base.mkdir()
    pod.start()
    try:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = edge.container[probe]["httpGet"]
            pod.wait_for(get["port"], get["path"])
        # No appliance paired yet: ready, and the ServiceMonitor's path has the edge metrics.
        assert requests.get(pod.url("admin") + "/ready", timeout=5).status_code == 200
        metrics = requests.get(pod.url("admin") + "/metrics", timeout=5)
        assert metrics.status_code == 200 and "pixelport_edge" in metrics.text
        # The admin API takes the Secret's token.
        token = edge.env()["PIXELPORT_EDGE__ADMIN_TOKEN"]
        assert requests.get(pod.url("admin") + "/api/cache", timeout=5).status_code == 401
        assert requests.get(pod.url("admin") + "/api/cache", timeout=5,
                            headers={"Authorization": f"Bearer {token}"}).status_code == 200
        # HTTPS serves the certificate from the mounted Secret.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", pod.port("https")), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="images.example.test") as tls_sock:
                served = ssl.DER_cert_to_PEM_cert(tls_sock.getpeercert(binary_form=True))
        assert served.split() == tls["tls.crt"].split()
        # Its identity is made on the volume, as the manifest's user.
        mount = edge.mount_of(lambda v: "persistentVolumeClaim" in v)
        data = pod.volumes[mount["name"]] / os.path.relpath(
            setting(edge.config(), *DATA_DIR_KEY["edge"]), mount["mountPath"])
        identity = data / "edge-identity.pem"
        assert identity.exists(), sorted(p.name for p in data.iterdir())
        assert identity.stat().st_uid == edge.pod["securityContext"]["runAsUser"]
        if pod.sandboxed:
            writes = pod.read_report()["writes"]
            assert writes["/"] == "EROFS" and writes["/etc/pixelport"] == "EROFS"
            assert writes["/var/lib/pixelport"] == "ok"
    finally:
        rc, took = pod.stop()
    assert rc == 0, f"the edge exited with {rc} after SIGTERM ({took:.1f}s):\n{pod.logs()}"


if __name__ == "__main__":
    # `unshare --mount -- python test_kubernetes.py --sandbox SPEC`: see sandbox_main.
    assert sys.argv[1] == "--sandbox"
    sys.exit(sandbox_main(sys.argv[2]))
