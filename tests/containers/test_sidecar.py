"""The nvmefs sidecar image under podman: built from nvmefs/deploy/Containerfile on a Debian
12 root file system made by mmdebstrap, then run as a sidecar whose FUSE mount a second
container reads through mount propagation, across stops, kills and restarts of the sidecar.

The host side of the sharing is a directory of the test's own, bound onto itself and made
a shared mount. The sidecar gets it at /mnt (rshared) and mounts nvmefs at /mnt/nvme, one
level down; the reader gets it at /nvmefs (ro,rslave) and reads /nvmefs/nvme/... Every
podman call and every read in the reader is bounded by a timeout: a dead mount must answer
ENOTCONN, never hang.

podman here (Debian's 4.3, as root) needs three things spelled out, all harmless elsewhere:
 - --ulimit nofile=H:H and nproc=N:N. Rootful podman asks the runtime for nofile (and,
   once any --ulimit is given, nproc) of 1048576, above the hard limits podman runs with
   (`ulimit -Hn`; nproc: podman's own hard limit, kernel.pid_max). Raising a hard limit
   needs CAP_SYS_RESOURCE, which a sandbox may withhold from root (this one does: it is
   missing from the bounding set), and then crun and runc fail with `setrlimit ...
   operation not permitted`. `--ulimit host` does not help on 4.3; explicit values at or
   below the hard limits do (containers.conf's default_ulimits would too).
 - --runtime runc. crun refuses a cgroup v1 host that also mounts a cgroup2 hierarchy with
   controllers ("cgroups in hybrid mode not supported"), even with --cgroups=disabled.
 - --network none for the containers (they need no network), --network host for the
   build's RUN steps (apt-get and pip, without netavark's bridge and firewall rules).
"""

from __future__ import annotations

import errno
import os
import re
import resource
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import DURATIONS, ENV

REPO = Path(__file__).parents[2]
CONTAINERFILE = REPO / "nvmefs" / "deploy" / "Containerfile"
TAG = f"localhost/nvmefs-test-{os.getpid()}"
IMAGE = f"{TAG}:latest"
BASE = f"{TAG}-base:bookworm-slim"
PODMAN = ["podman", "--runtime", "runc"]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
WAIT = 30.0                 # seconds for a mount to appear or go
DEFAULT_MIRROR = "http://deb.debian.org/debian"

pytestmark = pytest.mark.timeout(1200)


def run(cmd: list[str], timeout: float, check: bool = True) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(cmd)}: no answer in {timeout} s\n"
                             f"{e.stdout or ''}{e.stderr or ''}") from None
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: exit {r.returncode}\n"
                             f"{r.stdout[-4000:]}{r.stderr[-4000:]}")
    return r


def hard_limit(kind: int, cap: int) -> int:
    hard = resource.getrlimit(kind)[1]
    return cap if hard == resource.RLIM_INFINITY else min(hard, cap)


def ulimits() -> list[str]:
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    nofile = hard_limit(resource.RLIMIT_NOFILE, nr_open)
    nproc = hard_limit(resource.RLIMIT_NPROC, pid_max)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses for bookworm."""
    sources = Path("/etc/apt")
    for f in sorted(sources.glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if ("deb" in fields.get("Types", "").split()
                    and "bookworm" in fields.get("Suites", "").split()):
                return fields["URIs"].split()[0]
    for f in [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]:
        if f.exists():
            m = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", f.read_text(), re.M)
            if m:
                return m[1]
    return DEFAULT_MIRROR


def timed(step: str, cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    start = time.monotonic()
    r = run(cmd, timeout)
    DURATIONS[step] = time.monotonic() - start
    print(f"{step}: {DURATIONS[step]:.1f} s")
    return r


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    missing = [t for t in ("podman", "runc", "mmdebstrap") if not shutil.which(t)]
    if missing or os.geteuid() != 0:
        pytest.fail(f"{ENV}=1 but {'missing ' + ' '.join(missing) if missing else 'not root'}"
                    " (make test-containers installs podman, runc and mmdebstrap; run as root)")
    work = tmp_path_factory.mktemp("image")
    rootfs = work / "rootfs.tar"
    start = time.monotonic()
    try:
        timed("mmdebstrap (minbase bookworm)",
              ["mmdebstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror()],
              timeout=900)
        timed("podman import", ["podman", "import", str(rootfs), BASE], timeout=300)
        rootfs.unlink()
        build = [*PODMAN, "build", "--format", "docker", "--no-cache", "--layers=false",
                 "--network", "host", *ulimits(), "--build-arg", f"BASE={BASE}",
                 "-t", IMAGE, "-f", str(CONTAINERFILE)]
        if CA_BUNDLE.exists():      # the host's CAs, for pip behind a TLS-inspecting proxy
            build += ["-v", f"{CA_BUNDLE}:/run/host-ca.crt:ro",
                      "--build-arg", "PIP_CERT=/run/host-ca.crt"]
        if os.environ.get("PIP_INDEX_URL"):
            build += ["--build-arg", f"PIP_INDEX_URL={os.environ['PIP_INDEX_URL']}"]
        timed("podman build", [*build, str(REPO)], timeout=1200)
        DURATIONS["image total (bootstrap, import, build)"] = time.monotonic() - start
        yield IMAGE
    finally:
        run(["podman", "rmi", "-f", IMAGE, BASE], timeout=120, check=False)


@pytest.fixture
def containers():
    """Names of the containers a test starts; all removed afterwards."""
    names: list[str] = []
    yield names
    if names:
        run(["podman", "rm", "-f", "-t", "0", *names], timeout=120, check=False)


@pytest.fixture
def shared(tmp_path):
    """A host directory that is a shared mount of its own (/ need not be shared)."""
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o777)          # the image's unprivileged user creates the mount point here
    run(["mount", "--bind", str(d), str(d)], timeout=30)
    try:
        run(["mount", "--make-shared", str(d)], timeout=30)
        yield d
    finally:
        run(["umount", "-R", "-l", str(d)], timeout=30, check=False)


def fuse_mount_at(path: Path) -> str | None:
    """The options of the nvmefs mount at `path` in this (the host's) namespace, or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split()[4] == str(path) and right.startswith("fuse.nvmefs"):
                return right.split()[2]
    return None


def wait_for(predicate, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


READ_IDENTIFY = """
import errno, json, sys
try:
    with open(sys.argv[1], "rb") as f:
        print("OK", json.loads(f.read())["mn"].strip())
except OSError as e:
    print(errno.errorcode[e.errno])
"""


def read_identify(reader: str, path: str = "/nvmefs/nvme/nvme0/identify.json") -> str:
    """What the reader container gets from identify.json: "OK <model>" or an errno name."""
    r = run([*PODMAN, "exec", reader, "timeout", "5", "python3", "-c", READ_IDENTIFY, path],
            timeout=30, check=False)
    if r.returncode == 124:
        return "TIMEOUT"    # a hang: the failure this test exists to catch
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def reads(reader: str, expected: str):
    seen = []

    def check():
        seen.append(read_identify(reader))
        return seen[-1].startswith(expected)
    try:
        wait_for(check, f"reader reading {expected}")
    except AssertionError:
        raise AssertionError(f"reader never read {expected}; last: {seen[-3:]}") from None


def started_at(name: str) -> str:
    return run(["podman", "inspect", "--format", "{{.State.StartedAt}}", name],
               timeout=30).stdout.strip()


def start_reader(image: str, shared: Path, name: str) -> None:
    run([*PODMAN, "run", "-d", "--name", name, "--network", "none", *ulimits(),
         "-v", f"{shared}:/nvmefs:ro,rslave", "--entrypoint", "sleep", image, "infinity"],
        timeout=120)


MODEL = "OK nvmefs simulated controller"


def test_reader_follows_a_privileged_sidecar_across_stop_kill_and_restart(
        image, shared, containers):
    start = time.monotonic()
    side, reader = f"nvmefs-side-{os.getpid()}", f"nvmefs-reader-{os.getpid()}"
    containers += [side, reader]
    mnt = shared / "nvme"
    run([*PODMAN, "run", "-d", "--name", side, "--network", "none", *ulimits(),
         "--privileged", "--device", "/dev/fuse", "--user", "0",
         "-v", f"{shared}:/mnt:rshared", image], timeout=120)
    wait_for(lambda: fuse_mount_at(mnt), "the sidecar's mount on the host")
    assert "allow_other" in fuse_mount_at(mnt)
    assert run(["podman", "healthcheck", "run", side], timeout=60,
               check=False).returncode == 0, "the image's HEALTHCHECK"

    start_reader(image, shared, reader)
    first_start = started_at(reader)
    reads(reader, MODEL)

    # a clean stop: nvmefs unmounts on SIGTERM, the unmount propagates: the tree is gone
    run(["podman", "stop", "-t", "10", side], timeout=60)
    assert fuse_mount_at(mnt) is None
    assert read_identify(reader) == "ENOENT"
    run([*PODMAN, "start", side], timeout=120)
    reads(reader, MODEL)

    # a killed daemon leaves its mount behind: the reader gets ENOTCONN, not a hang
    run(["podman", "kill", "-s", "KILL", side], timeout=60)
    wait_for(lambda: run(["podman", "inspect", "--format", "{{.State.Running}}", side],
                         timeout=30).stdout.strip() == "false", "the sidecar's end")
    assert fuse_mount_at(mnt) is not None
    assert read_identify(reader) == errno.errorcode[errno.ENOTCONN]
    # the next sidecar detaches the dead mount and mounts again; the reader sees it
    run([*PODMAN, "start", side], timeout=120)
    reads(reader, MODEL)
    logs = run(["podman", "logs", side], timeout=30)
    assert "detached it" in logs.stdout + logs.stderr

    assert started_at(reader) == first_start, "the reader was restarted"
    DURATIONS["run: privileged sidecar, stop/kill/restart"] = time.monotonic() - start


def test_unprivileged_sidecar_user_mounts_sim_for_a_reader_started_first(
        image, shared, containers, tmp_path):
    """The image's own user (uid 10001) mounts `sim` through the setuid fusermount3: with
    CAP_SYS_ADMIN in the bounding set (for fusermount3) and a /dev/fuse it may open; this
    test's own node (mode 0666) stands in for a host's udev-made one."""
    start = time.monotonic()
    side, reader = f"nvmefs-user-side-{os.getpid()}", f"nvmefs-user-reader-{os.getpid()}"
    containers += [side, reader]
    node = tmp_path / "fuse"
    os.mknod(node, 0o666 | 0o020000, os.makedev(10, 229))
    node.chmod(0o666)
    mnt = shared / "nvme"

    start_reader(image, shared, reader)            # before the mount exists
    assert read_identify(reader) == "ENOENT"
    run([*PODMAN, "run", "-d", "--name", side, "--network", "none", *ulimits(),
         "--cap-add", "SYS_ADMIN", "--device", f"{node}:/dev/fuse",
         "-v", f"{shared}:/mnt:rshared", image], timeout=120)
    opts = wait_for(lambda: fuse_mount_at(mnt), "the sidecar's mount on the host")
    assert "user_id=10001" in opts and "allow_other" in opts, opts
    reads(reader, MODEL)
    run(["podman", "stop", "-t", "10", side], timeout=60)   # fusermount3 -u as the user
    assert fuse_mount_at(mnt) is None
    assert read_identify(reader) == "ENOENT"
    DURATIONS["run: unprivileged sidecar user"] = time.monotonic() - start
