"""Run scripts in a throwaway QEMU guest whose Linux NVMe driver talks to
QEMU's emulated NVMe controllers.

    from tests.vm.guest import Guest, NvmeDevice
    with Guest(nvme=[NvmeDevice(serial="nvmefs0001", size="1G", lba=512)]) as g:
        r = g.run("nvme list -o json", timeout=600)
        assert r.returncode == 0, r.stderr

Each run() boots a fresh guest (a few seconds, TCG) that sees this machine's
whole root read-only over 9p, so the project's .venv, python, nvme-cli and fio
work unchanged. The script runs as root with bash, cwd = the project, PATH
starting with the project's .venv/bin. Writable there: /tmp, /run, /var/tmp
(tmpfs, lost at power off) and $VM_RESULTS, the run directory, which has the
same path inside and outside. The NVMe disk images live in the Guest's
workdir and keep their data from one run() to the next.

CLI (prints the script's output, exits with its status):
    python -m tests.vm.guest [--nvme N | --shapes] [--size 1G] [--lba 512] [--iommu]
        [--hostfwd tcp:127.0.0.1:PORT-:4420] [--timeout S] [--keep] SCRIPT
SCRIPT is shell text, or @FILE, or - for stdin.
"""

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import assets

PROJECT = assets.PROJECT
RUNS = assets.CACHE / "runs"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class GuestError(RuntimeError):
    """The guest did not run the script to its end (boot or init failure)."""


class GuestTimeout(GuestError):
    pass


@dataclass
class Namespace:
    """One `nvme-ns`: `options` are extra properties, e.g. "ms=8,mset=1",
    "zoned=true,zoned.zone_size=8M", "shared=off" (private to its controller in a
    subsystem), "detached=true" (attached to no controller at power on)."""
    nsid: int
    size: str | int = "64M"
    lba: int = 512
    options: str = ""


@dataclass
class NvmeDevice:
    """One emulated NVMe controller with `namespaces` namespaces of `size`
    bytes ("1G", "512M" or an int) and `lba` bytes per logical block, or the
    given list of Namespace. `options` are extra `-device nvme` properties,
    e.g. "mdts=5,max_ioqpairs=4". Controllers naming the same `subsys` (an
    NQN's last part) are ports of one NVM subsystem (QEMU wants them to have one
    serial); a shared namespace given on one of them is attached to all.
    """
    serial: str = "nvmefs0001"
    size: str | int = "1G"
    lba: int = 512
    namespaces: int | list[Namespace] = 1
    options: str = ""
    subsys: str = ""

    @property
    def namespace_list(self) -> list[Namespace]:
        if isinstance(self.namespaces, int):
            return [Namespace(n, self.size, self.lba) for n in range(1, self.namespaces + 1)]
        return self.namespaces

    @property
    def visible(self) -> int:
        """Namespaces the guest sees at power on (for init to wait for)."""
        return sum("detached=true" not in ns.options for ns in self.namespace_list)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    dir: Path            # the run directory ($VM_RESULTS in the guest)
    console: Path        # serial console log (kernel and init messages)
    boot_seconds: float  # guest uptime when the script started
    seconds: float       # wall time from starting QEMU to its exit

    def check(self) -> "Result":
        if self.returncode:
            raise GuestError(f"guest script exited {self.returncode}\n"
                             f"--- stderr (tail) ---\n{tail(self.stderr)}")
        return self


class Guest:
    def __init__(self, nvme: list[NvmeDevice] | None = None, memory: str = "2G",
                 cpus: int = 2, iommu: bool = False,
                 hostfwd: str | list[str] | None = None, kernel_args: str = "",
                 workdir: str | Path | None = None, keep: bool = False):
        """nvme: the controllers (default: one NvmeDevice()).
        iommu: emulate an Intel IOMMU (q35 intel-iommu; guest intel_iommu=on).
        hostfwd: QEMU user-net forwards such as "tcp:127.0.0.1:PORT-:4420";
            the host side must be 127.0.0.1. Adds a virtio NIC (eth0,
            10.0.2.15) that cannot reach anything else.
        kernel_args: extra kernel command line; "module.param=value" words
            also reach modules loaded by init (e.g. "nvme.poll_queues=2").
        workdir: where disk images and run directories go (default: a new
            directory under .cache/vm/runs/, deleted by close() unless `keep`
            or a run failed); a given workdir is never deleted.
        """
        self.nvme = list(nvme) if nvme is not None else [NvmeDevice()]
        serials = [(d.serial, d.subsys) for d in self.nvme if not d.subsys]
        serials += list({(d.serial, d.subsys) for d in self.nvme if d.subsys})
        if len({s for s, _ in serials}) != len(serials):    # a subsystem's ports share one
            raise ValueError(f"NVMe serials must be unique but in a subsystem: {serials}")
        self.hostfwd = [hostfwd] if isinstance(hostfwd, str) else list(hostfwd or [])
        for rule in self.hostfwd:
            if not re.fullmatch(r"tcp:127\.0\.0\.1:\d+-:\d+", rule):
                raise ValueError(f"hostfwd {rule!r}: use tcp:127.0.0.1:PORT-:PORT")
        self.memory, self.cpus, self.iommu = memory, cpus, iommu
        self.kernel_args = kernel_args
        self.qemu = shutil.which("qemu-system-x86_64")
        if not self.qemu:
            raise GuestError("qemu-system-x86_64 not found: "
                             "apt-get install qemu-system-x86")
        self.assets = assets.prepare()
        if workdir is None:
            RUNS.mkdir(parents=True, exist_ok=True)
            self.workdir = Path(tempfile.mkdtemp(dir=RUNS, prefix="guest-"))
            self.owned = not keep
        else:
            self.workdir = Path(workdir).resolve()
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.owned = False
        self.runs = 0
        self.running: Running | None = None
        self.images = self._make_images()

    def __enter__(self) -> "Guest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.owned:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def run(self, script: str, timeout: float = 600, cwd: str | Path = PROJECT,
            env: dict[str, str] | None = None) -> Result:
        """Boot, run `script` (bash) in the guest, power off; see the module
        docstring. Raises GuestTimeout after `timeout` seconds (QEMU killed)
        and GuestError if the guest never ran the script to its end."""
        return self.start(script, cwd, env).wait(timeout)

    def start(self, script: str, cwd: str | Path = PROJECT,
              env: dict[str, str] | None = None) -> "Running":
        """Like run(), but return at once (to talk to the guest over hostfwd
        meanwhile); call .wait(timeout) on the result."""
        if self.running and self.running.proc.poll() is None:
            raise GuestError("this guest is still running; wait() for it first")
        self.runs += 1
        rundir = self.workdir / f"run{self.runs}"
        rundir.mkdir()
        # Paths the script needs even if they lie under the guest's tmpfs mounts.
        keep = [PROJECT, Path(cwd).resolve(), Path(sys.executable).resolve().parents[1]]
        (rundir / "guest.env").write_text(
            f"VM_RESULTS={shlex.quote(str(rundir))}\n"
            f"VM_NAMESPACES={self.visible_namespaces()}\n"
            f"VM_KEEP={shlex.quote(chr(10).join(map(str, keep)))}\n")
        (rundir / "run.sh").write_text(self._wrap(script, rundir, cwd, env or {}))
        log = open(rundir / "qemu.log", "wb")
        try:
            proc = subprocess.Popen(self.command(rundir), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self.running = Running(self, proc, rundir)
        return self.running

    def command(self, rundir: Path) -> list[str]:
        """The QEMU command line for one run."""
        machine = "q35,kernel-irqchip=split" if self.iommu else "q35"
        append = ["console=ttyS0", "panic=-1"]
        if self.iommu:
            append += ["intel_iommu=on", "iommu=pt"]
        append += self.kernel_args.split()
        cmd = [self.qemu, "-accel", "tcg,thread=multi", "-machine", machine,
               "-cpu", "max", "-smp", str(self.cpus), "-m", self.memory,
               "-nodefaults", "-no-user-config", "-display", "none",
               "-no-reboot", "-kernel", str(self.assets.kernel),
               "-initrd", str(self.assets.initramfs), "-append", " ".join(append),
               "-serial", f"file:{esc(rundir / 'console.log')}"]
        if self.iommu:  # before the devices that sit behind it
            cmd += ["-device", "intel-iommu,intremap=on,caching-mode=on"]
        cmd += ["-virtfs", "local,path=/,mount_tag=host,security_model=none,"
                "readonly=on,multidevs=remap",
                "-virtfs", f"local,path={esc(rundir)},mount_tag=results,"
                "security_model=none"]
        for name in dict.fromkeys(d.subsys for d in self.nvme if d.subsys):
            cmd += ["-device", f"nvme-subsys,id=subsys-{name},nqn={name}"]
        for c, dev in enumerate(self.nvme):
            opts = f",{dev.options}" if dev.options else ""
            subsys = f",subsys=subsys-{dev.subsys}" if dev.subsys else ""
            cmd += ["-device", f"nvme,id=ctrl{c},serial={dev.serial}{subsys}{opts}"]
            for ns, image in zip(dev.namespace_list, self.images[c], strict=True):
                drive = f"nvm{c}n{ns.nsid}"
                nsopts = f",{ns.options}" if ns.options else ""
                cmd += ["-drive", f"file={esc(image)},if=none,id={drive},format=raw",
                        "-device", f"nvme-ns,drive={drive},bus=ctrl{c},nsid={ns.nsid},"
                        f"logical_block_size={ns.lba},physical_block_size={ns.lba}{nsopts}"]
        if self.hostfwd:
            fwd = "".join(f",hostfwd={rule}" for rule in self.hostfwd)
            cmd += ["-netdev", f"user,id=net0,restrict=on{fwd}",
                    "-device", "virtio-net-pci,netdev=net0"]
        return cmd

    def _make_images(self) -> list[list[Path]]:
        """Sparse raw images, created once per workdir (their data persists)."""
        images = []
        for c, dev in enumerate(self.nvme):
            paths = []
            for ns in dev.namespace_list:
                size, path = parse_size(ns.size), self.workdir / f"{dev.serial}-c{c}-n{ns.nsid}.img"
                if not path.exists() or path.stat().st_size != size:
                    with open(path, "wb") as f:
                        f.truncate(size)
                paths.append(path)
            images.append(paths)
        return images

    def visible_namespaces(self) -> int:
        """Namespace nodes init waits for: a namespace shared by a subsystem's
        controllers counts once (the kernel's multipath head)."""
        return sum(d.visible for d in self.nvme)

    def _wrap(self, script: str, rundir: Path, cwd, env: dict[str, str]) -> str:
        path = [str(PROJECT / ".venv/bin")] if (PROJECT / ".venv/bin").is_dir() else []
        path += [str(Path(sys.executable).resolve().parent), BASE_PATH]
        variables = {"PATH": ":".join(dict.fromkeys(path)), "HOME": "/tmp",
                     "LANG": "C.UTF-8", "TERM": "dumb", "PYTHONUNBUFFERED": "1",
                     "PYTHONDONTWRITEBYTECODE": "1", "VM_GUEST": "1",
                     "VM_RESULTS": str(rundir), **env}
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in variables.items())
        return (f"# written by tests/vm/guest.py\n{exports}"
                f"cd {shlex.quote(str(cwd))} || exit 125\n{script}\n")


class Running:
    """A guest started by Guest.start()."""

    def __init__(self, guest: Guest, proc: subprocess.Popen, rundir: Path):
        self.guest, self.proc, self.dir = guest, proc, rundir
        self.started = time.monotonic()

    def wait(self, timeout: float = 600) -> Result:
        try:
            self.proc.wait(timeout=max(0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.kill()
            self._failed(GuestTimeout, f"guest timed out after {timeout} s; QEMU killed")
        seconds = time.monotonic() - self.started
        rc = self.dir / "rc"
        if not rc.exists():
            why = read(self.dir / "init-error") or "the guest did not finish"
            self._failed(GuestError, f"{why} (QEMU exit status {self.proc.returncode})")
        return Result(returncode=int(rc.read_text()), stdout=read(self.dir / "stdout"),
                      stderr=read(self.dir / "stderr"), dir=self.dir,
                      console=self.dir / "console.log",
                      boot_seconds=float(read(self.dir / "uptime") or "nan"),
                      seconds=seconds)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _failed(self, kind: type[GuestError], message: str):
        self.guest.owned = False  # keep the evidence
        parts = [f"{message}\nrun directory: {self.dir}"]
        for name in ("qemu.log", "console.log", "stdout", "stderr"):
            parts.append(f"--- {name} (tail) ---\n{tail(read(self.dir / name))}")
        raise kind("\n".join(parts))


def esc(path) -> str:
    """Escape a path for a QEMU option list (a comma is written twice)."""
    return str(path).replace(",", ",,")


def parse_size(size: str | int) -> int:
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"(\d+)([KMGT]?)i?B?", size.strip(), re.IGNORECASE)
    if not m:
        raise ValueError(f"bad size {size!r}")
    return int(m[1]) << (10 * " KMGT".index((m[2] or " ").upper()))


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.vm.guest",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("script", help="shell text, @FILE, or - for stdin")
    p.add_argument("--nvme", type=int, default=1, help="controllers (default 1)")
    p.add_argument("--shapes", action="store_true",
                   help="the controllers of tests/vm/shapes.py instead of --nvme ones")
    p.add_argument("--namespaces", type=int, default=1, help="per controller")
    p.add_argument("--size", default="1G")
    p.add_argument("--lba", type=int, default=512)
    p.add_argument("--memory", default="2G")
    p.add_argument("--iommu", action="store_true")
    p.add_argument("--hostfwd", action="append")
    p.add_argument("--kernel-args", default="")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    a = p.parse_args(argv)
    script = (sys.stdin.read() if a.script == "-" else
              Path(a.script[1:]).read_text() if a.script.startswith("@") else a.script)
    devices = [NvmeDevice(serial=f"nvmefs{i + 1:04d}", size=a.size, lba=a.lba,
                          namespaces=a.namespaces) for i in range(a.nvme)]
    if a.shapes:
        from .shapes import SHAPES
        devices = SHAPES
    try:
        with Guest(nvme=devices, memory=a.memory, iommu=a.iommu, hostfwd=a.hostfwd,
                   kernel_args=a.kernel_args, keep=a.keep) as g:
            r = g.run(script, timeout=a.timeout)
    except (GuestError, assets.AssetError) as e:
        print(f"vm-guest: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    print(f"vm-guest: exit {r.returncode}; script started {r.boot_seconds:.2f} s "
          f"after boot; {r.seconds:.1f} s in all; run dir {r.dir}"
          + ("" if a.keep else " (deleted)"), file=sys.stderr)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
