"""`nvmefs completion bash`: a bash completion script made from the command line's
own parser, so every subcommand, option and choice it has is completed; the
values only the machine knows (controllers, PCI functions bound to vfio-pci,
nvmefs mounts) are looked up in /sys and /proc when completing."""

from __future__ import annotations

import argparse
import shlex

from . import fstab

# what a positional argument (by its dest) is, where its choices do not say
POSITIONAL_KINDS = {"mountpoint": "dir", "devices": "device", "file": "file", "bdf": "pci",
                    "target": "w:tcp://"}
# what an option's value is, where its choices do not say
VALUE_KINDS = {"--uid": "user", "--gid": "group", "--log": "file"}
# -o options of `nvmefs SOURCE MOUNTPOINT -o ...` offered besides nvmefs's own
MOUNT_OPTIONS_EXTRA = ("ro", "noexec", "noatime", "nofail", "noauto", "_netdev",
                       "x-systemd.requires=", "x-systemd.automount")

TEMPLATE = r"""# bash completion for nvmefs                               -*- shell-script -*-
# Made by `nvmefs completion bash`; install as
# /usr/share/bash-completion/completions/nvmefs (or source it from ~/.bashrc).
# Device URIs come from $NVMEFS_SYSFS (default /sys): /dev/nvmeN of class/nvme,
# vfio:BDF of the NVMe functions bound to vfio-pci.

_nvmefs_commands=@COMMANDS@
_nvmefs_top_options="--version -h --help"
_nvmefs_mount_options=@MOUNT_OPTIONS@

# the command's options, those that take a value, its positionals (kinds) and
# whether the last positional repeats
_nvmefs_spec() {
    _nvmefs_opts= _nvmefs_valued= _nvmefs_pos=() _nvmefs_rep=0
    case $1 in
@SPECS@
    esac
}

# the candidates for the value of option $2 of command $1
_nvmefs_value() {
    case "$1 $2" in
@VALUES@
    esac
}

_nvmefs_words() { local w; for w in $1; do printf '%s\n' "$w"; done; }
_nvmefs_prefix() { local x; while IFS= read -r x; do printf '%s\n' "$1$x"; done; }

_nvmefs_devices() {
    local d sys=${NVMEFS_SYSFS:-/sys}
    printf '%s\n' sim sim: vfio:sim vfio: tcp://
    for d in "$sys"/class/nvme/nvme*; do
        [[ ${d##*/} =~ ^nvme[0-9]+$ ]] && printf '/dev/%s\n' "${d##*/}"
    done
    for d in "$sys"/bus/pci/drivers/vfio-pci/*:*; do
        [[ -r $d/class && $(<"$d/class") == 0x010802 ]] && printf 'vfio:%s\n' "${d##*/}"
    done
}

# PCI NVMe functions: bound to vfio-pci ($1 = unbind) or not (bind)
_nvmefs_pci() {
    local d drv sys=${NVMEFS_SYSFS:-/sys}
    for d in "$sys"/bus/pci/devices/*:*; do
        [[ -r $d/class && $(<"$d/class") == 0x010802 ]] || continue
        drv=$(readlink "$d/driver" 2>/dev/null); drv=${drv##*/}
        if [[ $1 == unbind ]]; then [[ $drv == vfio-pci ]]; else [[ $drv != vfio-pci ]]; fi &&
            printf '%s\n' "${d##*/}"
    done
}

_nvmefs_mounts() {
    local src mp type rest
    while read -r src mp type rest; do
        [[ $type == fuse.nvmefs ]] && printf '%s\n' "${mp//\\040/ }"
    done </proc/self/mounts 2>/dev/null
}

# candidates of kind $1 for the word $2 ($3: the vfio action)
_nvmefs_kind() {
    case $1 in
        dir) compopt -o filenames 2>/dev/null; compgen -d -- "$2" ;;
        file) compopt -o filenames 2>/dev/null; compgen -f -- "$2" ;;
        user) compgen -u -- "$2" ;;
        group) compgen -g -- "$2" ;;
        mounts) _nvmefs_mounts; compopt -o filenames 2>/dev/null; compgen -d -- "$2" ;;
        pci) _nvmefs_pci "$3" ;;
        device)         # several devices may be joined by + (SOURCE of the mount(8) form)
            local head=
            [[ $2 == *+* ]] && head=${2%+*}+
            _nvmefs_devices | _nvmefs_prefix "$head" ;;
        options)        # -o OPTION[,OPTION...]
            local head= last=$2
            [[ $2 == *,* ]] && head=${2%,*}, last=${2##*,}
            case $last in
                passthru=*) _nvmefs_words "@POLICIES@" | _nvmefs_prefix "${head}passthru=" ;;
                others=*) _nvmefs_words "@OTHERS@" | _nvmefs_prefix "${head}others=" ;;
                uid=*) compgen -u | _nvmefs_prefix "${head}uid=" ;;
                gid=*) compgen -g | _nvmefs_prefix "${head}gid=" ;;
                log=*) compgen -f -- "${last#log=}" | _nvmefs_prefix "${head}log=" ;;
                *) _nvmefs_words "$_nvmefs_mount_options" | _nvmefs_prefix "$head" ;;
            esac ;;
        w:*) _nvmefs_words "${1#w:}" ;;
    esac
}

_nvmefs() {
    local -a w=()
    local line i
    if [[ -n ${COMP_LINE+set} ]]; then
        line=${COMP_LINE:0:${COMP_POINT:-${#COMP_LINE}}}
        read -ra w <<<"$line"
        [[ -z $line || $line == *[[:space:]] ]] && w+=("")
    else                # bash's words, the pieces it cut at : and = joined again
        for ((i = 0; i <= COMP_CWORD; i++)); do
            if (( ${#w[@]} )) && [[ ${COMP_WORDS[i]} == [:=]* || ${w[-1]} == *[:=] ]]; then
                w[-1]+=${COMP_WORDS[i]}
            else
                w+=("${COMP_WORDS[i]}")
            fi
        done
    fi
    local n=${#w[@]} cur=${w[-1]} prev= cmd= cmdi=0
    (( n > 1 )) && prev=${w[n-2]}
    for ((i = 1; i < n - 1; i++)); do
        [[ ${w[i]} == -* ]] && continue
        cmd=${w[i]} cmdi=$i
        break
    done
    local -a c=()
    local prefix=$cur
    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            c=($(compgen -W "$_nvmefs_top_options" -- "$cur"))
        else
            c=($(compgen -W "$_nvmefs_commands" -- "$cur"))
            # no command starts so: SOURCE of `nvmefs SOURCE MOUNTPOINT -o ...`
            (( ${#c[@]} )) || [[ -z $cur ]] || mapfile -t c < <(_nvmefs_kind device "$cur")
        fi
    elif [[ " $_nvmefs_commands " != *" $cmd "* ]]; then
        local k=0
        for ((i = cmdi + 1; i < n - 1; i++)); do
            [[ ${w[i]} == -o ]] && { ((i++)); continue; }
            [[ ${w[i]} == -* ]] || ((k++))
        done
        if [[ $prev == -o ]]; then
            mapfile -t c < <(_nvmefs_kind options "$cur")
        elif [[ $cur == -* ]]; then
            c=(-o)
        elif (( k == 0 )); then
            mapfile -t c < <(_nvmefs_kind dir "$cur")
        fi
    else
        _nvmefs_spec "$cmd"
        if [[ -n $prev && " $_nvmefs_valued " == *" $prev "* ]]; then
            mapfile -t c < <(_nvmefs_value "$cmd" "$prev" "$cur")
        elif [[ $cur == --*=* && " $_nvmefs_valued " == *" ${cur%%=*} "* ]]; then
            mapfile -t c < <(_nvmefs_value "$cmd" "${cur%%=*}" "${cur#*=}" |
                             _nvmefs_prefix "${cur%%=*}=")
        elif [[ $cur == -* ]]; then
            c=($(compgen -W "$_nvmefs_opts" -- "$cur"))
        else
            local k=0 action=
            for ((i = cmdi + 1; i < n - 1; i++)); do
                if [[ ${w[i]} == -* ]]; then
                    [[ ${w[i]} != *=* && " $_nvmefs_valued " == *" ${w[i]} "* ]] && ((i++))
                    continue
                fi
                ((k == 0)) && action=${w[i]}
                ((k++))
            done
            if (( k >= ${#_nvmefs_pos[@]} && _nvmefs_rep )); then
                k=$(( ${#_nvmefs_pos[@]} - 1 ))
            fi
            (( k < ${#_nvmefs_pos[@]} )) &&
                mapfile -t c < <(_nvmefs_kind "${_nvmefs_pos[k]}" "$cur" "$action")
        fi
    fi
    # keep the candidates that extend the word, as bash will see them
    COMPREPLY=()
    local x
    for x in "${c[@]}"; do
        [[ $x == "$prefix"* ]] && COMPREPLY+=("$x")
    done
    # bash cut the word at ':' and '=' (COMP_WORDBREAKS): give only what follows
    local strip=$cur
    while [[ -n $strip && ( ${strip: -1} != [:=] || $COMP_WORDBREAKS != *"${strip: -1}"* ) ]]; do
        strip=${strip%?}
    done
    if [[ -n $strip ]]; then
        c=("${COMPREPLY[@]}") COMPREPLY=()
        for x in "${c[@]}"; do
            x=${x#"$strip"}
            [[ -n $x ]] && COMPREPLY+=("$x")
        done
    fi
    local last
    for x in "${COMPREPLY[@]}"; do last=${x: -1}; done
    if (( ${#COMPREPLY[@]} == 1 )) && [[ $last == [:=/,+] ]]; then
        compopt -o nospace 2>/dev/null
    fi
    return 0
}

complete -F _nvmefs nvmefs
"""


def _kind(command: str, action: argparse.Action) -> str:
    if command == "umount" and action.dest == "mountpoint":
        return "mounts"
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        return "w:" + " ".join(action.choices)
    return POSITIONAL_KINDS.get(action.dest, "file")


def _spec(command: str, sub: argparse.ArgumentParser) -> tuple[list[str], list[str],
                                                                 list[str], bool]:
    opts, valued, pos, rep = [], [], [], False
    for action in sub._actions:
        if action.option_strings:
            opts += action.option_strings
            if action.nargs != 0:
                valued += action.option_strings
        elif isinstance(action, argparse._SubParsersAction):     # vfio bind|unbind BDF
            pos.append("w:" + " ".join(action.choices))
            first = next(iter(action.choices.values()))
            o, v, p, r = _spec(command, first)
            opts, valued, pos, rep = opts + o, valued + v, pos + p, r
        else:
            pos.append(_kind(command, action))
            rep = action.nargs in ("*", "+")
    return list(dict.fromkeys(opts)), list(dict.fromkeys(valued)), pos, rep


def bash(parser: argparse.ArgumentParser) -> str:
    from .spec.passthru import POLICIES
    subparsers = parser._subparsers._group_actions[0]
    specs, values = [], []
    for name, sub in subparsers.choices.items():
        opts, valued, pos, rep = _spec(name, sub)
        specs.append(f"        {shlex.quote(name)}) _nvmefs_opts={shlex.quote(' '.join(opts))}"
                     f" _nvmefs_valued={shlex.quote(' '.join(valued))}"
                     f" _nvmefs_pos=({' '.join(map(shlex.quote, pos))})"
                     f" _nvmefs_rep={int(rep)} ;;")
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0:
                continue
            if action.choices:
                words = "_nvmefs_words " + shlex.quote(" ".join(action.choices))
            elif action.option_strings[-1] in VALUE_KINDS:
                words = f"_nvmefs_kind {VALUE_KINDS[action.option_strings[-1]]} \"$3\""
            else:
                continue
            for flag in action.option_strings:
                values.append(f"        {shlex.quote(f'{name} {flag}')}) {words} ;;")
    mount_options = [f"{o}=" for o in fstab.VALUED] + list(fstab.FLAGS) + list(MOUNT_OPTIONS_EXTRA)
    from .cli import OTHERS
    return (TEMPLATE
            .replace("@COMMANDS@", shlex.quote(" ".join(subparsers.choices)))
            .replace("@MOUNT_OPTIONS@", shlex.quote(" ".join(mount_options)))
            .replace("@POLICIES@", " ".join(POLICIES))
            .replace("@OTHERS@", " ".join(OTHERS))
            .replace("@SPECS@", "\n".join(specs))
            .replace("@VALUES@", "\n".join(values)))
