#!/usr/bin/env bash
# Checks what can be checked of the deployment files without Docker or a cluster: hadolint on
# the Dockerfile (fails on anything at "info" or above), the Kubernetes manifests against the
# API schemas (strict: unknown fields fail), and the compose file's wiring.
# Needs the tools from scripts/requirements-test.txt; PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-target/pyenv/bin/python}
bin=$(dirname "$py")

echo "== hadolint docker/Dockerfile"
"$bin/hadolint" --failure-threshold info docker/Dockerfile && echo "clean"

echo "== kubernetes-validate docker/k8s"
"$bin/kubernetes-validate" --strict docker/k8s/*.yaml

echo "== docker/compose.yaml"
"$py" - <<'PY'
import yaml
c = yaml.safe_load(open("docker/compose.yaml"))
s = c["services"]
sock = "augserve-socket:/run/augserve"
assert sock in s["augserve"]["volumes"] and sock in s["trainer"]["volumes"], "socket volume not shared"
assert s["trainer"]["depends_on"]["augserve"]["condition"] == "service_healthy"
for name in ("augserve", "trainer"):
    (dev,) = s[name]["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"], name
# The JPEG engines need the driver's video capability in the server's container.
(dev,) = s["augserve"]["deploy"]["resources"]["reservations"]["devices"]
assert {"compute", "utility", "video"} <= set(dev["capabilities"]), dev
assert "video" in s["augserve"]["environment"]["NVIDIA_DRIVER_CAPABILITIES"].split(",")
assert "augserve-socket" in c["volumes"]
# Shared memory: the trainer joins the server's /dev/shm and runs as its user (0600 rings).
assert s["augserve"]["ipc"] == "shareable" and s["trainer"]["ipc"] == "service:augserve"
assert s["trainer"]["user"].split(":")[0] == "10001" and "shm" in s["trainer"]["command"]
print("compose wiring ok: shared socket volume and /dev/shm, health-gated trainer, GPU reservations, video capability")
PY

echo "== the video capability (hardware JPEG engines) in the image and the manifests"
grep -q 'NVIDIA_DRIVER_CAPABILITIES=compute,utility,video' docker/Dockerfile
"$py" - <<'PY'
import glob, yaml
for path in sorted(glob.glob("docker/k8s/*.yaml")):
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc["kind"] not in ("Job", "Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            if c["name"] != "augserve":
                continue
            env = {e["name"]: e.get("value", "") for e in c.get("env", [])}
            assert "video" in env.get("NVIDIA_DRIVER_CAPABILITIES", "").split(","), (path, c["name"])
            print(f"{path}: augserve container asks for video")
PY

echo "== the manifests' server.toml, checked by the server itself"
augserve=${AUGSERVE_BIN:-target/debug/augserve}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" - "$tmp" <<'PY'
import sys, yaml, glob
for path in sorted(glob.glob("docker/k8s/*.yaml")):
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc["kind"] == "ConfigMap" and "server.toml" in doc["data"]:
            out = f"{sys.argv[1]}/{doc['metadata']['name']}.toml"
            open(out, "w").write(doc["data"]["server.toml"])
PY
for f in "$tmp"/*.toml; do
  env -u AUGSERVE_LISTEN_TCP -u AUGSERVE_LISTEN_UDS "$augserve" serve --config "$f" --check-config >/dev/null
  echo "$(basename "$f"): valid"
done
