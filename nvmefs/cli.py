"""The `nvmefs` command: mount, umount, list, vfio, decode (nvmefs(1)).

Start-up is cheap: each command imports what it uses when it runs, so `--version`,
`--help`, `completion` and `decode` never load trio, FUSE, the backends or the tree.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
from functools import cached_property
from typing import Callable, Sequence

from . import __version__, fstab

OTHERS = ("off", "info", "readonly")

READY_TIMEOUT = 180.0          # seconds the parent waits for the daemon's mount


def _owner(text: str, kind: str) -> int:
    if text.isdigit():
        return int(text)
    import grp
    import pwd
    try:
        return pwd.getpwnam(text).pw_uid if kind == "user" else grp.getgrnam(text).gr_gid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such {kind}: {text}") from None


def _size(text: str) -> int:
    from .backends.sim.config import parse_size
    try:
        n = parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if n < 1 << 20:
        raise argparse.ArgumentTypeError(f"{text}: at least 1M")
    return n


class _LazyChoices:
    """An option's choices, loaded when first needed (a value checked, help shown,
    completion written): building the parser imports nothing. Give the option a
    metavar (argparse would list the choices, loading them, to make one)."""

    def __init__(self, load: Callable[[], Sequence[str]]):
        self._load = load

    @cached_property
    def _choices(self) -> tuple[str, ...]:
        return tuple(self._load())

    def __iter__(self):
        return iter(self._choices)

    def __contains__(self, value) -> bool:
        return value in self._choices


def _policies() -> Sequence[str]:
    from .spec.passthru import POLICIES
    return POLICIES


def _decode_kinds() -> Sequence[str]:
    from .spec.render import RENDERERS
    return sorted(RENDERERS)


class _Version(argparse.Action):
    """--version: the package metadata is read only when it is asked for."""

    def __init__(self, option_strings, dest, help="show program's version number and exit"):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"nvmefs {version()}")
        parser.exit()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nvmefs", description="NVMe controllers as a file tree.")
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("mount", help="mount controllers at MOUNTPOINT")
    m.add_argument("mountpoint")
    m.add_argument("devices", nargs="*", metavar="DEVICE",
                   help="/dev/nvmeN, sim, sim:key=value,...; one directory each "
                        "(default: every controller of this machine)")
    m.add_argument("-f", "--foreground", action="store_true", help="do not daemonize")
    m.add_argument("--allow-other", action="store_true",
                   help="let other users in (file modes decide; implies default_permissions)")
    m.add_argument("--uid", type=lambda t: _owner(t, "user"), default=os.getuid(),
                   help="owner of every file (name or number)")
    m.add_argument("--gid", type=lambda t: _owner(t, "group"), default=os.getgid(),
                   help="group of every file (name or number)")
    m.add_argument("--umask", type=lambda t: int(t, 8), default=0,
                   help="permission bits to clear, octal (e.g. 027)")
    m.add_argument("--passthru", choices=_LazyChoices(_policies), default="readonly",
                   metavar="POLICY",
                   help="what passthru/, Set Features and reset may do for the mounting "
                        "user and root: %(choices)s (default: readonly)")
    m.add_argument("--others", choices=OTHERS, default="info", metavar="POLICY",
                   help="the same for every other user, never more than --passthru: "
                        "%(choices)s (default: info)")
    m.add_argument("--max-buffer", type=_size, metavar="SIZE",
                   help="answers the whole mount may hold, e.g. 512M (default: 512M)")
    m.add_argument("--log", metavar="FILE", help="append the daemon's log to FILE")
    m.add_argument("-d", "--debug", action="store_true", help="log debug messages")

    u = sub.add_parser("umount", help="unmount an nvmefs mount")
    u.add_argument("mountpoint")

    sub.add_parser("list", help="list this machine's NVMe controllers and namespaces")

    v = sub.add_parser("vfio", help="hand a PCI NVMe function to vfio-pci or back to nvme")
    vsub = v.add_subparsers(dest="action", required=True)
    for action, text in (("bind", "unbind from nvme and bind to vfio-pci (driver_override)"),
                         ("unbind", "give back to the kernel's nvme driver")):
        a = vsub.add_parser(action, help=text)
        a.add_argument("bdf", metavar="BDF", help="PCI address, e.g. 0000:00:03.0")

    c = sub.add_parser("discover", help="print the Discovery Log Page of an NVMe/TCP target")
    c.add_argument("target", metavar="tcp://HOST[:PORT]",
                   help="the target's discovery controller (port 8009 by default)")
    c.add_argument("-o", "--output-format", choices=("normal", "json"), default="normal",
                   help="nvme-cli's text (default) or its JSON")

    d = sub.add_parser("decode", help="decode a saved raw structure")
    d.add_argument("--as", dest="kind", required=True, choices=_LazyChoices(_decode_kinds),
                   metavar="KIND", help="what the bytes are: %(choices)s")
    d.add_argument("--format", choices=("json", "txt"), default="json")
    d.add_argument("--name", default="nvme0", help="controller name, for pages keyed by it")
    d.add_argument("--fid", type=lambda t: int(t, 0), default=None,
                   help="feature identifier (with --as feature)")
    d.add_argument("--csi", type=lambda t: int(t, 0), default=0,
                   help="command set identifier (with --as effects)")
    d.add_argument("file", help="the raw bytes, or - for standard input")

    k = sub.add_parser("completion", help="print a shell completion script")
    k.add_argument("shell", choices=("bash",), help="the shell (bash)")

    s = sub.add_parser("serve-metrics", help="serve MOUNTPOINT/metrics over HTTP (Prometheus)")
    s.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="address to listen on, e.g. 127.0.0.1:9857, [::1]:9857, :9857 "
                        "(port 0: any free port; the address is printed)")
    s.add_argument("mountpoint", help="an nvmefs mount")
    return p


DISCOVERY_TIMEOUT = 30.0        # seconds to connect, read the log and disconnect


def cmd_discover(args) -> int:
    import json

    import trio

    from .backends import TransportError, opened
    from .mount import sole_exception
    from .spec import discovery
    from .spec.commands import LID_DISCOVERY

    target = args.target.rstrip("/")
    if not target.startswith("tcp://") or "/" in target[len("tcp://"):] or "?" in target:
        print(f"nvmefs discover: expected tcp://HOST[:PORT], not {args.target!r}",
              file=sys.stderr)
        return 1
    host = target[len("tcp://"):]
    if not host.rpartition("]")[2].count(":"):
        target += f":{discovery.DISCOVERY_PORT}"
    uri = f"{target}/{discovery.DISCOVERY_NQN}?kato=0&queues=1"

    async def fetch() -> bytes:
        with trio.fail_after(DISCOVERY_TIMEOUT):
            async with opened(uri) as ctrl:
                head = await ctrl.get_log(LID_DISCOVERY, discovery.DISC_HEADER_SIZE)
                if not head.ok:
                    raise TransportError(f"Get Log Page 70h: status {head.status:#x}")
                size = discovery.discovery_log_len(discovery.record_count(head.data))
                whole = await ctrl.get_log(LID_DISCOVERY, size)
                if not whole.ok:
                    raise TransportError(f"Get Log Page 70h: status {whole.status:#x}")
                return whole.data
    try:
        try:
            raw = trio.run(fetch)
        except BaseExceptionGroup as group:
            raise sole_exception(group) from None
    except (TransportError, ValueError, trio.TooSlowError) as e:
        print(f"nvmefs discover: {args.target}: {e or 'timed out'}", file=sys.stderr)
        return 1
    decoded = discovery.decode_discovery(raw)
    if args.output_format == "json":
        sys.stdout.write(json.dumps(decoded, indent=2) + "\n")
    else:
        sys.stdout.write(discovery.text_discovery(decoded))
    return 0


def cmd_decode(args) -> int:
    from .spec import render
    if args.kind == "feature" and args.fid is None:
        print("nvmefs decode: --as feature needs --fid", file=sys.stderr)
        return 2
    try:
        if args.file == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as f:
                raw = f.read()
        ctx = {"name": args.name, "fid": args.fid, "csi": args.csi}
        out = render.render(args.kind, raw, args.format, ctx)
    except (OSError, ValueError) as e:
        print(f"nvmefs decode: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(out)
    return 0


def cmd_list(args) -> int:
    import importlib

    from .backends import Unsupported, sysfs
    try:
        importlib.import_module("nvmefs.backends.ffi")     # the compiled extension
    except Unsupported as e:
        print(f"nvmefs list: these controllers cannot be mounted: {e}", file=sys.stderr)
    from .backends.vfio import bind
    ctrls = sysfs.controllers()
    vfio = [f for f in bind.pci_nvme_functions() if f.driver == bind.VFIO_DRIVER]
    if not ctrls and not vfio:
        print("no NVMe controllers (the kernel shows none under /sys/class/nvme)", file=sys.stderr)
        return 1
    for nqn, ports in sysfs.subsystems(ctrls).items():     # a subsystem's controllers together
        print(nqn)
        for c in ports:
            nodes = [f"/dev/{ng}" for ng in c.generic] + [f"/dev/{p.head}(head)" for p in c.paths]
            print(f"  {c.dev}  {c.model}  sn {c.serial}  fw {c.firmware}  {c.transport} "
                  f"{c.address}  cntlid {c.cntlid}  {c.state}  "
                  f"namespaces: {' '.join(nodes) or '-'}")
    if vfio:
        print("vfio-pci")
    for f in vfio:
        print(f"  {f.uri}  pci {f.vendor:04x}:{f.device:04x}  /dev/vfio/{f.iommu_group or '-'}")
    return 0


def cmd_vfio(args) -> int:
    from .backends.vfio import bind
    try:
        if args.action == "bind":
            changed = bind.bind(args.bdf)
            bdf = bind.normalize(args.bdf)
            group = bind.iommu_group_of(bdf)
            print(f"{bdf}: {'bound to' if changed else 'already bound to'} vfio-pci "
                  f"(/dev/vfio/{group}); mount it as vfio:{bdf}")
        else:
            changed = bind.unbind(args.bdf)
            bdf = bind.normalize(args.bdf)
            owner = (" ".join(f"/dev/{c}" for c in bind.kernel_controllers(bdf))
                     or bind.driver_of(bdf) or "no driver")
            print(f"{bdf}: {'given back' if changed else 'not bound to vfio-pci'} ({owner})")
    except (bind.BindError, OSError) as e:
        print(f"nvmefs vfio {args.action}: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_serve_metrics(args) -> int:
    from .metrics_server import main as serve
    return serve(args.mountpoint, args.listen)


def version() -> str:
    """The installed package's version (its metadata), else the source tree's."""
    from importlib import metadata
    try:
        return metadata.version("nvmefs")
    except metadata.PackageNotFoundError:
        return __version__


def cmd_completion(args) -> int:
    from . import completion
    sys.stdout.write(completion.bash(parser()))
    return 0


def cmd_umount(args) -> int:
    from .mount import MountError, unmount
    try:
        unmount(args.mountpoint)
    except MountError as e:
        print(f"nvmefs umount: {e}", file=sys.stderr)
        return 1
    return 0


def _setup_logging(args, daemon: bool) -> None:
    import logging
    level = logging.DEBUG if args.debug else logging.INFO
    fmt = "%(asctime)s nvmefs[%(process)d] %(levelname)s %(name)s: %(message)s"
    if args.log:
        logging.basicConfig(filename=args.log, level=level, format=fmt)
    elif daemon:
        logging.basicConfig(handlers=[logging.NullHandler()], level=level)
    else:
        logging.basicConfig(stream=sys.stderr, level=level, format=fmt)


def cmd_mount(args) -> int:
    from .mount import MountError, MountOptions, prepare_mountpoint

    def say(msg: str) -> None:
        print(msg, file=sys.stderr)

    from .backends import local_devices
    devices = args.devices or local_devices()
    if not devices:
        say("nvmefs mount: this machine has no NVMe controllers; name a device (e.g. sim)")
        return 1
    opts = MountOptions(os.path.abspath(args.mountpoint), devices, args.allow_other,
                        args.uid, args.gid, args.umask, args.passthru, args.others,
                        args.max_buffer, flags=tuple(getattr(args, "flags", ())))
    try:
        prepare_mountpoint(opts.mountpoint, say)
    except MountError as e:
        say(f"nvmefs mount: {e}")
        return 1
    if args.foreground:
        _setup_logging(args, daemon=False)
        return _run(opts, lambda: None, say)

    # Daemonize before trio starts: the child mounts and reports through a pipe.
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(wfd)
        return _wait_for_child(rfd, pid, opts.mountpoint)
    os.close(rfd)
    os.setsid()
    _setup_logging(args, daemon=True)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)

    def report(msg: str) -> None:
        os.write(wfd, msg.encode())

    def ready() -> None:
        report("ok")
        os.close(wfd)
        os.dup2(null, 2)

    code = _run(opts, ready, lambda msg: report(msg + "\n"))
    os._exit(code)


def _run(opts, ready, say) -> int:
    import trio

    from .backends import TransportError
    from .mount import MountError, serve
    try:
        trio.run(serve, opts, ready)
    except (MountError, TransportError, ValueError, OSError, trio.TooSlowError) as e:
        say(f"nvmefs mount: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _wait_for_child(rfd: int, pid: int, mountpoint: str) -> int:
    chunks = []
    while True:
        ready, _, _ = select.select([rfd], [], [], READY_TIMEOUT)
        if not ready:
            print(f"nvmefs mount: no mount at {mountpoint} after {READY_TIMEOUT:.0f} s",
                  file=sys.stderr)
            return 1
        chunk = os.read(rfd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    msg = b"".join(chunks).decode(errors="replace")
    if msg.startswith("ok"):
        return 0
    os.waitpid(pid, 0)
    print(msg.rstrip() or "nvmefs mount: the daemon exited before mounting", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    if fstab.is_helper_form(argv, p._subparsers._group_actions[0].choices):
        mount_args, flags = fstab.mount_argv(argv)     # nvmefs SOURCE MNT -o OPTS (mount(8))
        args = p.parse_args(mount_args)
        args.flags = flags
    else:
        args = p.parse_args(argv)
    commands = {"mount": cmd_mount, "umount": cmd_umount, "decode": cmd_decode, "list": cmd_list,
                "vfio": cmd_vfio, "discover": cmd_discover, "serve-metrics": cmd_serve_metrics,
                "completion": cmd_completion}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
