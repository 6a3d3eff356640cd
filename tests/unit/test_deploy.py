"""The container image's files and the Kubernetes manifests in nvmefs/deploy: valid YAML,
and the fields the sidecar depends on (the image itself is built and run by
tests/containers, `make test-containers`)."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

import pytest

from nvmefs import cli
from nvmefs.deploy import sidecar

yaml = pytest.importorskip("yaml", reason="PyYAML (the test extra) is not installed")

DEPLOY = Path(sidecar.__file__).parent
K8S = DEPLOY / "k8s"


def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]


def only(name: str, kind: str) -> dict:
    docs = load(name)
    assert [d["kind"] for d in docs] == [kind]
    return docs[0]


def mount_args(container: dict) -> list[str]:
    """What the image's entry point hands `nvmefs mount -f --allow-other`."""
    return container.get("args", ["/mnt/nvme", "sim"])


def mountpoint_of(container: dict) -> PurePosixPath:
    mp = sidecar.mountpoint(mount_args(container))
    assert mp is not None, mount_args(container)
    return PurePosixPath(mp)


def volume_mount(container: dict, volume: str) -> dict:
    (vm,) = [m for m in container["volumeMounts"] if m["name"] == volume]
    return vm


def probe_path(probe: dict) -> str:
    cmd = probe["exec"]["command"]
    assert cmd[:2] == ["timeout", "4"] and int(probe["timeoutSeconds"]) > 4, cmd
    return cmd[-1]


@pytest.mark.parametrize("name", sorted(p.name for p in K8S.glob("*.yaml")))
def test_manifest_is_yaml_with_kind_and_name(name):
    for doc in load(name):
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]


def test_pod_runs_nvmefs_as_a_native_sidecar_shared_by_propagation():
    pod = only("pod.yaml", "Pod")["spec"]
    (side,) = pod["initContainers"]
    (app,) = pod["containers"]
    assert side["restartPolicy"] == "Always"            # native sidecar
    assert side["securityContext"]["privileged"] is True   # Bidirectional needs it
    (volume,) = [v for v in pod["volumes"] if "emptyDir" in v]
    vm_side = volume_mount(side, volume["name"])
    vm_app = volume_mount(app, volume["name"])
    assert vm_side["mountPropagation"] == "Bidirectional"
    assert vm_app["mountPropagation"] == "HostToContainer"
    assert vm_app.get("readOnly") is True
    assert "privileged" not in app.get("securityContext", {})

    # nvmefs mounts strictly inside the volume, so the app binds the mount's parent
    mp = mountpoint_of(side)
    rel = mp.relative_to(vm_side["mountPath"])
    assert rel.parts, "nvmefs must not mount at the volume's root"
    for probe in ("startupProbe", "readinessProbe"):
        assert probe_path(side[probe]) == str(mp / "nvme0" / "info")
    seen_by_app = PurePosixPath(vm_app["mountPath"]) / rel / "nvme0" / "identify.json"
    assert str(seen_by_app) in " ".join(app["command"])


def test_daemonset_exposes_the_node_read_only_through_a_host_path():
    ds = only("daemonset.yaml", "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= \
        ds["spec"]["template"]["metadata"]["labels"].items()
    (side,) = spec["containers"]
    args = mount_args(side)
    ns = cli.parser().parse_args(sidecar.PREFIX + args)
    assert (ns.passthru, ns.others) == ("info", "info") and ns.devices == []
    assert side["securityContext"]["privileged"] is True
    assert side["securityContext"]["runAsUser"] == 0       # the node's /dev/nvme*
    (volume,) = spec["volumes"]
    host = volume["hostPath"]["path"]
    vm = volume_mount(side, volume["name"])
    assert vm["mountPropagation"] == "Bidirectional"
    mp = mountpoint_of(side)
    assert mp.relative_to(vm["mountPath"]).parts
    for probe in ("startupProbe", "readinessProbe"):
        assert probe_path(side[probe]) == str(mp / "nvme0" / "info")

    reader = only("node-reader.yaml", "Pod")["spec"]
    (rvol,) = reader["volumes"]
    assert rvol["hostPath"]["path"] == host                # the parent, not the mount
    (rc,) = reader["containers"]
    rvm = volume_mount(rc, rvol["name"])
    assert rvm["mountPropagation"] == "HostToContainer" and rvm["readOnly"] is True
    assert rc["securityContext"]["runAsNonRoot"] is True
    assert rc["securityContext"]["allowPrivilegeEscalation"] is False
    assert reader["nodeSelector"] == spec["nodeSelector"]


def containerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) of each instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Containerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_containerfile_builds_from_an_overridable_debian_slim_base():
    ins = containerfile()
    assert ins[0][0] == "ARG" and ins[0][1].startswith("BASE=") and "bookworm-slim" in ins[0][1]
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) == 2 and all(f.startswith("${BASE}") for f in froms)
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    for pkg in ("gcc", "libfuse3-dev", "liburing-dev", "pkg-config", "python3-venv", "fuse3"):
        assert re.search(rf"\b{re.escape(pkg)}\b", runs), pkg
    assert "pip install" in runs and "user_allow_other" in runs
    assert ("USER", "nvmefs") in ins


def test_containerfile_entry_point_health_check_and_defaults():
    ins = dict(containerfile())      # the last of each instruction
    assert json.loads(ins["ENTRYPOINT"]) == ["python3", "-m", "nvmefs.deploy.sidecar"]
    assert sidecar.PREFIX == ["mount", "-f", "--allow-other"]
    assert json.loads(ins["CMD"]) == ["/mnt/nvme", "sim"]
    hc = ins["HEALTHCHECK"]
    assert "--timeout=" in hc
    check = json.loads(hc.partition("CMD")[2])
    assert check[:2] == ["timeout", "4"] and check[-1] == "/mnt/nvme/nvme0/info"


def test_sidecar_finds_the_mount_point_as_nvmefs_would():
    assert sidecar.mountpoint(["/mnt/nvme", "sim"]) == "/mnt/nvme"
    assert sidecar.mountpoint(["--passthru", "info", "--others", "info", "/x/y"]) == "/x/y"
    assert sidecar.mountpoint(["--uid", "0", "--log", "/tmp/l", "/m", "sim:size=1G"]) == "/m"
    assert sidecar.mountpoint(["--passthru", "bogus", "/m"]) is None
    assert sidecar.mountpoint([]) is None


def test_sidecar_makes_the_mount_point_and_its_parents(tmp_path):
    mp = tmp_path / "volume" / "nvme"
    sidecar.make_mountpoint(str(mp))
    assert mp.is_dir()
    sidecar.make_mountpoint(str(mp))        # already there: fine
