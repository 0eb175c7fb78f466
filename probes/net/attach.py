"""Attaching the network probe's tc programs with pyroute2, touching nothing that is not ours.

Our filters are recognisable: kind bpf, priority OUR_PRIO, a handle 0x6773xxxx fixed per state directory
(handle_for(); two agents with different state directories never touch each other's filters), name starting with
FILTER_PREFIX, on the clsact hooks (parent ffff:fff2 ingress, ffff:fff3 egress). A state file still held by a live
process (same pid and start time) means another agent owns these filters: start refuses and touches nothing. The clsact qdisc is deleted on stop only if we
created it and no other filter is left on it. Whether we created it is written to a state file *before* creating
it, so an agent restarted after `kill -9` still knows: start first undoes whatever the state file says a previous
run left (our filters, and a clsact we created that nobody else uses), then removes any stray filter of ours, then
attaches afresh — so exactly one set of our filters exists after any restart.

We attach at a high priority number (late in the chain) and return TC_ACT_UNSPEC, so we never pre-empt another
filter's verdict; a filter before us that ends classification hides those packets from us (status lists them).
"""
from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpusleuth.probes.base import ProbeUnavailable

log = logging.getLogger(__name__)

OUR_PRIO = 0xC0DE  # 49374: `tc filter show` prints "pref 49374"
HANDLE_BASE = 0x67730000  # "gs" in the upper half; the lower half comes from the state directory
FILTER_PREFIX = "gpusleuth_net"
HOOKS = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
ETH_P_ALL = 0x0003
IFF_UP, IFF_LOOPBACK = 0x1, 0x8
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772


@dataclass(slots=True, frozen=True)
class Link:
    name: str
    index: int
    is_up: bool
    is_loopback: bool
    kind: str  # IFLA_INFO_KIND ("veth", "bond", ...) or "" for plain devices
    l2_len: int  # header bytes before the IP header at the tc hook


def handle_for(state_dir: str) -> int:
    """Our filter handle: fixed for a state directory, different between directories."""
    return HANDLE_BASE | (zlib.crc32(os.path.abspath(state_dir).encode()) & 0xFFFF) or HANDLE_BASE | 1


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), to tell a live owner from a reused pid."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


@dataclass(slots=True, frozen=True)
class TcFilter:
    hook: str
    prio: int
    handle: int
    kind: str
    name: str

    def is_ours(self, handle: int) -> bool:
        return (self.prio == OUR_PRIO and self.handle == handle and self.kind == "bpf"
                and self.name.startswith(FILTER_PREFIX))

    def describe(self) -> str:
        return f"{self.hook} pref {self.prio} {self.kind} handle {self.handle:#x} {self.name}".rstrip()


def open_iproute(netns: str) -> Any:
    """An IPRoute socket in `netns` (a name under /var/run/netns) or in our own namespace when empty."""
    from pyroute2 import IPRoute  # noqa: PLC0415  (optional at import time)
    return IPRoute(netns=netns) if netns else IPRoute()


def list_links(ipr: Any) -> list[Link]:
    links = []
    for msg in ipr.get_links():
        info = msg.get_attr("IFLA_LINKINFO")
        kind = (info.get_attr("IFLA_INFO_KIND") if info is not None else None) or ""
        l2 = 14 if msg["ifi_type"] in (ARPHRD_ETHER, ARPHRD_LOOPBACK) else 0
        links.append(Link(msg.get_attr("IFLA_IFNAME"), msg["index"], bool(msg["flags"] & IFF_UP),
                          bool(msg["flags"] & IFF_LOOPBACK) or msg["ifi_type"] == ARPHRD_LOOPBACK, kind, l2))
    return links


class TcAttacher:
    """Owns our tc filters (and possibly clsact qdiscs) in one network namespace."""

    def __init__(self, ipr: Any, netns: str, state_dir: str) -> None:
        self.ipr = ipr
        self.handle = handle_for(state_dir)
        self.state_path = Path(state_dir) / f"net-tc-{netns or 'host'}.json"
        self.state: dict[str, dict[str, Any]] = self._load_state()

    # ------------------------------------------------------------------ state file (survives kill -9)
    def _load_state(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.state_path.read_text())
            ifaces = {str(k): dict(v) for k, v in data.get("ifaces", {}).items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("ignoring unreadable tc state file %s: %s", self.state_path, exc)
            return {}
        pid = data.get("pid")
        if ifaces and pid not in (None, os.getpid()) and _start_time(pid) == data.get("start_time"):
            raise ProbeUnavailable(f"the net probe's tc filters on {', '.join(ifaces)} belong to live process {pid} "
                                   f"(another gpusleuth agent, per {self.state_path}); stop it, or give this agent "
                                   "its own probes.net.state_dir")
        return ifaces

    def _save_state(self) -> None:
        if not self.state:
            self.state_path.unlink(missing_ok=True)
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        record = {"pid": os.getpid(), "start_time": _start_time(os.getpid()), "ifaces": self.state}
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, self.state_path)  # atomic: a crash leaves the old or the new file, never half of one

    # ------------------------------------------------------------------ reading tc
    def filters(self, index: int) -> list[TcFilter]:
        out = []
        for hook, parent in HOOKS.items():
            for msg in self.ipr.get_filters(index=index, parent=parent):
                opts = msg.get_attr("TCA_OPTIONS")
                if opts is None:  # the per-priority header message, not a filter
                    continue
                name = ""
                if msg.get_attr("TCA_KIND") == "bpf":
                    name = opts.get_attr("TCA_BPF_NAME") or ""
                out.append(TcFilter(hook, msg["info"] >> 16, msg["handle"], msg.get_attr("TCA_KIND"), name))
        return out

    def clsact_state(self, index: int) -> str:
        """'clsact', 'ingress' (a plain ingress qdisc: no egress hook) or '' when neither exists."""
        for msg in self.ipr.get_qdiscs(index=index):
            kind = msg.get_attr("TCA_KIND")
            if kind in ("clsact", "ingress"):
                return kind
        return ""

    # ------------------------------------------------------------------ changing tc
    def _del_ours(self, index: int) -> int:
        removed = 0
        for f in self.filters(index):
            if f.is_ours(self.handle):
                self.ipr.tc("del-filter", "bpf", index, self.handle, parent=HOOKS[f.hook], prio=OUR_PRIO,
                            protocol=ETH_P_ALL)
                removed += 1
        return removed

    def _release_clsact(self, index: int) -> bool:
        """Delete the clsact we created, unless somebody else's filter now lives on it."""
        if self.clsact_state(index) != "clsact":
            return False
        others = [f for f in self.filters(index) if not f.is_ours(self.handle)]
        if others:
            log.info("leaving clsact on ifindex %d: it now carries %s", index, [f.describe() for f in others])
            return False
        self.ipr.tc("del", "clsact", index)
        return True

    def recover(self, links: dict[str, Link]) -> dict[str, int]:
        """Undo what a previous run (possibly killed) left, as recorded in the state file."""
        removed = {}
        for name, entry in list(self.state.items()):
            link = links.get(name)
            if link is not None and link.index == entry.get("ifindex"):
                removed[name] = self._del_ours(link.index)
                if entry.get("created_clsact"):
                    self._release_clsact(link.index)
            del self.state[name]
        self._save_state()
        return removed

    def attach(self, link: Link, fds: dict[str, int]) -> None:
        """Attach our programs on both hooks of `link` (creating clsact if needed, and recording that first)."""
        present = self.clsact_state(link.index)
        if present == "ingress":
            raise ProbeUnavailable(f"{link.name} has a plain 'ingress' qdisc (no egress hook); the net probe needs "
                                   f"clsact. Move its filters to clsact, or leave {link.name} out of "
                                   "probes.net.interfaces")
        self.state[link.name] = {"ifindex": link.index, "created_clsact": not present}
        self._save_state()
        if not present:
            self.ipr.tc("add", "clsact", link.index)
        self._del_ours(link.index)  # a stray filter of ours that no state file recorded
        for hook, parent in HOOKS.items():
            try:
                self.ipr.tc("add-filter", "bpf", link.index, self.handle, fd=fds[hook],
                            name=f"{FILTER_PREFIX}_{hook}", parent=parent, classid=1, direct_action=True,
                            prio=OUR_PRIO, protocol=ETH_P_ALL)
            except Exception as exc:  # pyroute2 NetlinkError; e.g. a foreign filter of another kind at our prio
                raise ProbeUnavailable(f"cannot add tc filter on {link.name} {hook} at pref {OUR_PRIO}: {exc}; "
                                       "is another tool using that priority?") from None

    def detach(self, link_name: str) -> None:
        """Remove our filters from `link_name`, and its clsact if we created it and nobody else uses it."""
        entry = self.state.get(link_name)
        if entry is None:
            return
        index = entry["ifindex"]
        try:
            self._del_ours(index)
            if entry.get("created_clsact"):
                self._release_clsact(index)
        except Exception as exc:  # the interface vanished meanwhile: nothing of ours is left on it
            log.info("detach from %s (ifindex %d): %s", link_name, index, exc)
        del self.state[link_name]
        self._save_state()

    def detach_all(self) -> None:
        for name in list(self.state):
            self.detach(name)
