"""Prepare the cached guest boot assets: a Debian kernel and a busybox initramfs.

    python -m tests.vm.assets [--refresh]      (or: python tests/vm/assets.py)

Result, keyed by kernel version, under <project>/.cache/vm/<version>/:
    linux-image-*.deb  the Debian package, kept to rebuild without downloading
    vmlinuz            its kernel
    modules/           the modules we need and their dependencies
    modules.txt        the same, in load order
    initramfs.cpio.gz  busybox-static, tests/vm/init and those modules
    stamp              hash of this file and init; the build is done

Needs the packages busybox-static (installed) and linux-image-6.1.0-*-amd64
(fetched with `apt-get download`, which needs a current `apt-get update`).
Installs nothing. A second run finds the cache and returns at once.
"""

import gzip
import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
CACHE = PROJECT / ".cache" / "vm"
BUSYBOX = Path("/bin/busybox")
KERNEL_SERIES = "6.1.0"  # Debian 12's kernel
# Modules the guest loads at boot, in this order (their dependencies come
# first automatically). Names missing from the kernel or built in are skipped.
MODULES = [
    "virtio_pci", "9pnet_virtio", "9p", "virtio_net", "configfs", "fuse",
    "crc64_rocksoft_generic", "crct10dif_generic",  # crypto backends of t10-pi
    "crc32c_generic",                                # NVMe/TCP header and data digests
    "nvme_core", "nvme", "nvme_fabrics", "nvme_tcp", "nvmet", "nvmet_tcp",
    "vfio", "vfio_iommu_type1", "vfio_pci",
]


class AssetError(RuntimeError):
    pass


@dataclass(frozen=True)
class Assets:
    version: str  # e.g. "6.1.0-56-amd64"
    kernel: Path
    initramfs: Path


def log(msg: str) -> None:
    print(f"vm-assets: {msg}", file=sys.stderr, flush=True)


def prepare(refresh: bool = False) -> Assets:
    """Return the cached assets, building them first if needed.

    The kernel version is $NVMEFS_VM_KERNEL if set, else the newest one
    already cached, else (or with refresh=True) the newest one apt knows.
    The assets are rebuilt (from the cached .deb) when this file or
    tests/vm/init change.
    """
    version = os.environ.get("NVMEFS_VM_KERNEL") or (
        None if refresh else newest_cached())
    if not version:
        version = newest_available()
    out = CACHE / version
    stamp = out / "stamp"
    recipe = hashlib.sha256(Path(__file__).read_bytes()
                            + (HERE / "init").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != recipe:
        build(out, version)
        stamp.write_text(recipe)
    return Assets(version, out / "vmlinuz", out / "initramfs.cpio.gz")


def newest_cached() -> str | None:
    found = [p.parent.name for p in CACHE.glob(f"{KERNEL_SERIES}-*-amd64/stamp")]
    return max(found, key=abi_number, default=None)


def abi_number(version: str) -> int:
    return int(version.split("-")[1])


def newest_available() -> str:
    """Newest linux-image-6.1.0-N-amd64 that apt can fetch (no -rt/-cloud/...)."""
    require_tool("apt-cache", "apt")
    names = run(["apt-cache", "pkgnames", f"linux-image-{KERNEL_SERIES}-"]).split()
    pattern = re.compile(rf"linux-image-({re.escape(KERNEL_SERIES)}-\d+-amd64)")
    versions = [m[1] for n in names if (m := pattern.fullmatch(n))]
    if not versions:
        raise AssetError(
            f"apt knows no linux-image-{KERNEL_SERIES}-N-amd64 package; "
            "run `apt-get update` (Debian 12 package lists are needed)")
    return max(versions, key=abi_number)


def build(out: Path, version: str) -> None:
    check_busybox()
    require_tool("dpkg", "dpkg")
    out.mkdir(parents=True, exist_ok=True)
    (out / "stamp").unlink(missing_ok=True)
    package = f"linux-image-{version}"
    debs = list(out.glob(f"{package}_*.deb"))
    if not debs:
        require_tool("apt-get", "apt")
        log(f"downloading {package} (apt-get download) ...")
        try:
            run(["apt-get", "download", package], cwd=out)
        except AssetError as e:
            raise AssetError(f"cannot download {package}: {e}\n"
                             "Is `apt-get update` done and the package listed?") from None
        debs = list(out.glob(f"{package}_*.deb"))
    with tempfile.TemporaryDirectory(dir=out, prefix="unpack-") as tmp:
        tmp = Path(tmp)
        log(f"unpacking {debs[0].name} (dpkg -x) ...")
        run(["dpkg", "-x", str(debs[0]), str(tmp)])
        shutil.copyfile(tmp / "boot" / f"vmlinuz-{version}", out / "vmlinuz")
        moddir = tmp / "lib/modules" / version
        order = resolve_modules(moddir, MODULES)
        shutil.rmtree(out / "modules", ignore_errors=True)
        for rel in order:
            dest = out / "modules" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(moddir / rel, dest)
    (out / "modules.txt").write_text("".join(r + "\n" for r in order))
    build_initramfs(out, version)
    log(f"ready: {out}")


# --- modules -----------------------------------------------------------------

def modinfo(path: Path) -> dict[str, list[str]]:
    """Read the key=value strings of a .ko file's ELF .modinfo section."""
    data = path.read_bytes()
    if data[:5] != b"\x7fELF\x02":
        raise AssetError(f"{path}: not a 64-bit ELF module (compressed?)")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i):
        name, _, _, _, off, size = struct.unpack_from(
            "<IIQQQQ", data, shoff + i * shentsize)
        return name, data[off:off + size]

    _, names = section(shstrndx)
    info: dict[str, list[str]] = {}
    for i in range(shnum):
        name, body = section(i)
        if names[name:names.index(b"\0", name)] == b".modinfo":
            for item in body.split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(key, []).append(value)
    return info


def norm(name: str) -> str:
    return name.replace("-", "_")


def resolve_modules(moddir: Path, wanted: list[str]) -> list[str]:
    """Paths (relative to moddir) of `wanted` and their deps, deps first."""
    by_name = {norm(p.name[:-3]): p for p in moddir.glob("kernel/**/*.ko")}
    builtin = {norm(Path(line).name[:-3])
               for line in (moddir / "modules.builtin").read_text().split()}
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str, needed_by: str | None) -> None:
        if name in seen:
            return
        seen.add(name)
        if name in builtin:
            if needed_by is None:
                log(f"  {name}: built into the kernel")
            return
        if name not in by_name:
            if needed_by is not None:
                raise AssetError(f"{needed_by} needs {name}, which is missing")
            log(f"  {name}: not in this kernel, skipped")
            return
        deps = modinfo(by_name[name]).get("depends", [""])[0]
        for dep in filter(None, deps.split(",")):
            visit(norm(dep), name)
        order.append(str(by_name[name].relative_to(moddir)))

    for name in wanted:
        visit(norm(name), None)
    log(f"  {len(order)} modules: "
        + " ".join(Path(r).name[:-3] for r in order))
    return order


# --- initramfs -----------------------------------------------------------------

def check_busybox() -> None:
    if not BUSYBOX.exists():
        raise AssetError(f"{BUSYBOX} missing: apt-get install busybox-static")
    data = BUSYBOX.read_bytes()
    # A static ELF has no PT_INTERP (type 3) program header.
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0]
             for i in range(phnum)]
    if 3 in types:
        raise AssetError(f"{BUSYBOX} is dynamically linked: "
                         "apt-get install busybox-static")


def build_initramfs(out: Path, version: str) -> None:
    """Pack busybox, /init and out/modules into out/initramfs.cpio.gz."""
    check_busybox()
    order = (out / "modules.txt").read_text().split()
    cpio = Cpio()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc",
              "sys", "host", "results", "tmp", "etc", "lib", "lib/modules"):
        cpio.dir(d)
    cpio.node("dev/console", 0o020600, 5, 1)  # the kernel opens it for /init
    cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    applets = run([str(BUSYBOX), "--list-full"]).split()
    for applet in applets:
        if applet != "bin/busybox":
            cpio.symlink(applet, "/bin/busybox")
    init = (HERE / "init").read_bytes()
    cpio.file("init", init, 0o755)
    mods = f"lib/modules/{version}"
    cpio.dir(mods)
    for rel in order:  # parents first
        parts = Path(rel).parts
        for i in range(1, len(parts)):
            cpio.dir(f"{mods}/{'/'.join(parts[:i])}")
        cpio.file(f"{mods}/{rel}", (out / "modules" / rel).read_bytes(), 0o644)
    cpio.file(f"{mods}/modules.dep", modules_dep(out, order).encode(), 0o644)
    names = [norm(Path(rel).name[:-3]) for rel in order]
    cpio.file("etc/modules", "".join(n + "\n" for n in names).encode(), 0o644)
    blob = gzip.compress(cpio.finish(), compresslevel=6, mtime=0)
    tmp = out / "initramfs.cpio.gz.tmp"
    tmp.write_bytes(blob)
    tmp.rename(out / "initramfs.cpio.gz")
    log(f"initramfs: {len(blob) // 1024} KiB, {len(applets)} busybox applets")


def modules_dep(out: Path, order: list[str]) -> str:
    """modules.dep as depmod writes it: each module's full dependency list,
    the ones to load last first."""
    by_name = {norm(Path(r).name[:-3]): r for r in order}
    direct = {r: [by_name[norm(d)] for d in filter(None, modinfo(
        out / "modules" / r).get("depends", [""])[0].split(","))]
        for r in order}
    lines = []
    for r in order:
        closure: set[str] = set()
        todo = list(direct[r])
        while todo:
            d = todo.pop()
            if d not in closure:
                closure.add(d)
                todo += direct[d]
        deps = sorted(closure, key=order.index, reverse=True)
        lines.append(f"{r}: {' '.join(deps)}".rstrip() + "\n")
    return "".join(lines)


class Cpio:
    """A minimal writer of the 'newc' cpio format the kernel unpacks."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 0
        self.dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"",
               rdev: tuple[int, int] = (0, 0)) -> None:
        self.ino += 1
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev,
                  len(name) + 1, 0]
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.buf.write(name.encode() + b"\0")
        self._pad()
        self.buf.write(data)
        self._pad()

    def _pad(self):
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name: str) -> None:
        if name not in self.dirs:
            self.dirs.add(name)
            self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, perm: int) -> None:
        self._entry(name, 0o100000 | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def node(self, name: str, mode: int, major: int, minor: int) -> None:
        self._entry(name, mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


# --- helpers -------------------------------------------------------------------

def require_tool(tool: str, package: str) -> None:
    if not shutil.which(tool):
        raise AssetError(f"`{tool}` not found: apt-get install {package}")


def run(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise AssetError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                         + (proc.stderr.strip() or proc.stdout.strip()))
    return proc.stdout


def main(argv: list[str]) -> int:
    refresh = "--refresh" in argv
    try:
        a = prepare(refresh=refresh)
    except AssetError as e:
        log(f"error: {e}")
        return 1
    log(f"kernel {a.version}: {a.kernel}")
    log(f"initramfs: {a.initramfs}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
