#!/usr/bin/env bash
# Validates the Kubernetes manifests under deploy/kubernetes (run by .ci/run):
# 1. every YAML file against the Kubernetes API schemas, strictly (an unknown or
#    misspelt field is an error), with kubernetes-validate from PyPI;
# 2. what a schema cannot see: the tokengate.toml of each ConfigMap parses as TOML, the
#    probes reach its admin_listen, the grace period covers the drain, the Service
#    exposes port 8080 only, and deploy/tokengate.toml (for docker run) is the SQLite
#    ConfigMap's file but for upstream.url.
# Prints one line per file checked; exits non-zero on the first kind of failure.
#
#   bash deploy/validate.sh
#   K8S_VERSION=1.31.0 bash deploy/validate.sh   # another schema set of kubernetes-validate
set -euo pipefail
cd "$(dirname "$0")/.."

k8s_version=${K8S_VERSION:-1.30.0}

if ! python3 -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
  echo "validate: installing kubernetes-validate from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
fi

mapfile -t files < <(find deploy/kubernetes -type f \( -name '*.yaml' -o -name '*.yml' \) | LC_ALL=C sort)
[ "${#files[@]}" -gt 0 ] || { echo "validate: no manifests under deploy/kubernetes" >&2; exit 1; }

# YAML forbids tabs for indentation; refuse them anywhere in a manifest.
if grep -n "$(printf '\t')" "${files[@]}"; then
  echo "validate: tabs in the manifests above" >&2
  exit 1
fi

# 1. Schemas. Run as a module so that a --user install off PATH works too. It exits 0
# on a kind it has no schema for (a WARN line): that counts as a failure here.
out=$(python3 -m kubernetes_validate --strict --kubernetes-version "$k8s_version" "${files[@]}" 2>&1) && rc=0 || rc=$?
# One line per file: "schema OK <file> <kind>/<name>" or the tool's own message.
printf '%s\n' "$out" | sed -E 's/^INFO ([^ ]+) passed for resource ([^ ]+) against version (.*)$/schema OK   \1 (\2, Kubernetes \3)/'
if [ "$rc" -ne 0 ] || printf '%s\n' "$out" | grep -qvE '^INFO .* passed for resource '; then
  echo "validate: schema validation failed (Kubernetes $k8s_version)" >&2
  exit 1
fi

# 2. Cross-checks.
python3 - "${files[@]}" <<'EOF'
import sys, tomllib, yaml

failed_files = set()
def fail(path, msg):
    failed_files.add(path)
    print(f"FAIL        {path}: {msg}")

configs = {}   # directory -> parsed tokengate.toml
docs = []      # (path, document)
for path in sys.argv[1:]:
    with open(path) as f:
        docs += [(path, d) for d in yaml.safe_load_all(f) if d is not None]

for path, d in docs:
    if d.get("kind") == "ConfigMap" and "tokengate.toml" in d.get("data", {}):
        try:
            cfg = tomllib.loads(d["data"]["tokengate.toml"])
        except tomllib.TOMLDecodeError as e:
            fail(path, f"tokengate.toml is not TOML: {e}")
            continue
        configs[path.rsplit("/", 1)[0]] = cfg
        server = cfg.get("server", {})
        if not server.get("admin_listen", "127.0.0.1:9090").startswith("0.0.0.0:"):
            fail(path, "server.admin_listen must be 0.0.0.0:PORT for kubelet's probes")
        else:
            print(f"toml OK     {path} (tokengate.toml parses; store {cfg.get('store', {}).get('backend', 'sqlite')})")

for path, d in docs:
    kind, directory = d.get("kind"), path.rsplit("/", 1)[0]
    if kind == "Service":
        ports = [p.get("targetPort", p.get("port")) for p in d["spec"].get("ports", [])]
        if ports != [8080]:
            fail(path, f"the Service must target tokengate's port 8080 only, not {ports}")
        else:
            print(f"service OK  {path} (targets 8080 only)")
    elif kind == "Deployment":
        cfg = configs.get(directory)
        if cfg is None:
            fail(path, "no ConfigMap with tokengate.toml beside it")
            continue
        pod = d["spec"]["template"]["spec"]
        gate = next((c for c in pod["containers"] if c["name"] == "tokengate"), None)
        if gate is None:
            fail(path, "no container named tokengate")
            continue
        admin_port = int(cfg["server"]["admin_listen"].rsplit(":", 1)[1])
        for probe in ("livenessProbe", "readinessProbe"):
            port = gate.get(probe, {}).get("httpGet", {}).get("port")
            if port != admin_port:
                fail(path, f"{probe} is on port {port}, admin_listen on {admin_port}")
        grace = cfg["server"].get("shutdown_grace_seconds", 25)
        pre = gate.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pre_s = int(pre[1]) if pre[:1] == ["sleep"] and len(pre) == 2 else 0
        period = pod.get("terminationGracePeriodSeconds", 30)
        if period <= grace + pre_s:
            fail(path, f"terminationGracePeriodSeconds {period} <= preStop {pre_s} s + shutdown_grace_seconds {grace}")
        sqlite = cfg.get("store", {}).get("backend", "sqlite") == "sqlite"
        if sqlite and (d["spec"].get("replicas", 1) != 1 or d["spec"].get("strategy", {}).get("type") != "Recreate"):
            fail(path, "a SQLite store needs replicas: 1 and strategy Recreate")
        if path not in failed_files:
            print(f"pod OK      {path} (probes on {admin_port}, grace {period} s > {pre_s} + {grace} s)")

# deploy/tokengate.toml: the SQLite ConfigMap's file, upstream.url aside.
docker_path = "deploy/tokengate.toml"
with open(docker_path, "rb") as f:
    docker = tomllib.load(f)
k8s = configs.get("deploy/kubernetes/sqlite")
if k8s is None:
    fail(docker_path, "deploy/kubernetes/sqlite has no tokengate.toml to compare with")
else:
    strip = lambda c: {**c, "upstream": {k: v for k, v in c.get("upstream", {}).items() if k != "url"}}
    if strip(docker) != strip(k8s):
        fail(docker_path, "differs from deploy/kubernetes/sqlite/configmap.yaml beyond upstream.url")
    else:
        print(f"toml OK     {docker_path} (parses; the SQLite ConfigMap's but for upstream.url)")

# deploy/forward-auth: the Traefik and Envoy examples parse as YAML and name tokengate's
# forward-auth route (nginx.conf is run by tests/forward_auth.rs).
for path in ("deploy/forward-auth/traefik.yml", "deploy/forward-auth/envoy.yaml"):
    try:
        with open(path) as f:
            text = f.read()
        doc = yaml.safe_load(text)
        if not isinstance(doc, dict) or "/_tokengate/auth" not in text:
            fail(path, "not a YAML mapping naming /_tokengate/auth")
        else:
            print(f"yaml OK     {path}")
    except yaml.YAMLError as e:
        fail(path, f"not YAML: {e}")

sys.exit(1 if failed_files else 0)
EOF
echo "validate: all manifests OK (Kubernetes $k8s_version)" >&2
