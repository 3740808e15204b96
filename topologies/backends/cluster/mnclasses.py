"""The Mininet Cluster Edition classes a cluster run builds with (`mininet.examples.cluster`,
Debian's `mininet` package), made per run so that every ssh they start reads the run's own
ssh configuration (each server's port, user, key and known-hosts file).

- hosts: `RemoteHost` (a shell in its own network namespace on its server, over ``ssh -tt``);
- base stations: a Linux bridge on each server that has nodes of it (`RemoteMixin` on
  Mininet's `LinuxBridge`, which adds every port it has, trunks included, not only ports
  named after it);
- links: same-server links are veth pairs; a link between servers is a tunnel whose two ends
  carry the link's interface names, so shaping and addresses apply to them as to any
  interface. ``gre``: Cluster Edition's `RemoteGRELink`; ``vxlan`` (ours, for kernels without
  GRE, such as our CI machines'): the same scheme with a VXLAN device per end (a VNI per
  tunnel, UDP port 4789, made in the server's root namespace and moved into the node's, so
  the encapsulated packets travel between the servers' own addresses); ``ssh``: Cluster
  Edition's ssh tunnel (a tap at each end, ``ssh -w``), with the run's ssh configuration.
  ``gre`` and ``vxlan`` set the MTU of every link of the run to 1450 (a bridge cannot
  fragment into a tunnel that adds 50 bytes), as Cluster Edition does for GRE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TUNNEL_MTU = 1450
VXLAN_PORT = 4789


@dataclass(frozen=True)
class ClusterClasses:
    """The host, bridge and link classes of one cluster run."""

    host: type
    bridge: type
    link: type


def cluster_classes(ssh_config: str, tunnel: str, vni_base: int) -> ClusterClasses:
    """Classes whose ssh commands use `ssh_config`, with `tunnel` (gre, vxlan or ssh) between
    servers; VXLAN ids count up from `vni_base`."""
    from mininet.examples.cluster import (
        RemoteGRELink,
        RemoteHost,
        RemoteLink,
        RemoteMixin,
        RemoteSSHLink,
    )
    from mininet.link import Link
    from mininet.nodelib import LinuxBridge
    from mininet.util import decode, quietRun

    sshbase = ["ssh", "-F", ssh_config, "-q", "-tt"]

    class Host(RemoteHost):
        """A Mininet host on its server, reached with the run's ssh configuration."""

        sshbase: list[str]

    Host.sshbase = sshbase

    class Bridge(RemoteMixin, LinuxBridge):
        """A base station's bridge (or part of one) on its server."""

        def start(self, _controllers: Any) -> None:
            self.cmd("ip link set dev", self, "down")
            self.cmd("brctl delbr", self)
            self.cmd("brctl addbr", self)
            self.cmd("brctl stp", self, "off")
            for intf in self.intfList():
                if intf.name != "lo":
                    self.cmd("brctl addif", self, intf)
            self.cmd("ip link set dev", self, "up")

        def stop(self, deleteIntfs: bool = True) -> None:
            self.cmd("ip link set dev", self, "down")
            self.cmd("brctl delbr", self)
            super().stop(deleteIntfs)

    Bridge.sshbase = sshbase

    def same_server_pair(
        intf1: str, intf2: str, addr1: Any, addr2: Any, node1: Any, node2: Any, mtu: bool
    ) -> Any:
        made = Link.makeIntfPair(intf1, intf2, addr1, addr2, node1, node2, deleteIntfs=True)
        if mtu:
            node1.cmd(f"ip link set dev {intf1} mtu {TUNNEL_MTU}")
            node2.cmd(f"ip link set dev {intf2} mtu {TUNNEL_MTU}")
        return made

    class VXLANLink(RemoteLink):
        """A link; between servers a VXLAN tunnel (one VNI per link)."""

        next_vni = vni_base
        tunnel: Any

        def makeIntfPair(
            self,
            intfname1: str,
            intfname2: str,
            addr1: Any = None,
            addr2: Any = None,
            node1: Any = None,
            node2: Any = None,
            deleteIntfs: bool = True,
        ) -> Any:
            node1 = self.node1 if node1 is None else node1
            node2 = self.node2 if node2 is None else node2
            if node1.server == node2.server:
                return same_server_pair(intfname1, intfname2, addr1, addr2, node1, node2, True)
            self.makeTunnel(node1, node2, intfname1, intfname2, addr1, addr2)
            self.tunnel = 1
            return None

        def makeTunnel(
            self,
            node1: Any,
            node2: Any,
            intfname1: str,
            intfname2: str,
            addr1: Any = None,
            addr2: Any = None,
        ) -> None:
            if node2.server == "localhost":
                self.makeTunnel(node2, node1, intfname2, intfname1, addr2, addr1)
                return
            ip1, ip2 = node1.serverIP, node2.serverIP
            if node1.server == "localhost":  # our address towards the other server
                ip1 = quietRun(f"ip route get {ip2}").split(" src ")[1].split()[0]
            vni = VXLANLink.next_vni
            VXLANLink.next_vni += 1
            for node, name, addr, local, remote in (
                (node1, intfname1, addr1, ip1, ip2),
                (node2, intfname2, addr2, ip2, ip1),
            ):
                node.rcmd(f"ip link delete {name}")
                said = node.rcmd(
                    f"ip link add name {name} type vxlan id {vni} local {local} "
                    f"remote {remote} dstport {VXLAN_PORT}"
                )
                if said:
                    raise RuntimeError(f"making vxlan {name} on {node.server} failed: {said}")
                if addr:
                    node.rcmd(f"ip link set {name} address {addr}")
                node.rcmd(f"ip link set dev {name} mtu {TUNNEL_MTU} up")
                if not self.moveIntf(name, node):
                    raise RuntimeError(f"moving {name} into {node} on {node.server} failed")

        def stop(self) -> None:
            if self.tunnel:
                self.intf1.delete()
                self.intf2.delete()
            else:
                Link.stop(self)
            self.tunnel = None

    class GRELink(RemoteGRELink):
        """Cluster Edition's GRE link (it sets every link's MTU to 1450 itself)."""

    class SSHLink(RemoteSSHLink):
        """Cluster Edition's ssh tunnel, its ssh reading the run's configuration."""

        def makeTunnel(
            self,
            node1: Any,
            node2: Any,
            intfname1: str,
            intfname2: str,
            addr1: Any = None,
            addr2: Any = None,
        ) -> Any:
            if node2.server == "localhost":
                return self.makeTunnel(node2, node1, intfname2, intfname1, addr2, addr1)
            for node in (node1, node2):
                said = node.rcmd(f"ip tuntap add dev tap9 mode tap user {node.user}")
                if said:
                    raise RuntimeError(f"making tap9 on {node.server} failed: {said}")
            dest = f"{node2.user}@{node2.serverIP}"
            cmd = ["ssh", "-F", ssh_config, "-n", "-o", "Tunnel=Ethernet", "-w", "9:9", dest]
            self.cmd = [*cmd, "echo @"]
            tunnel = node1.rpopen(self.cmd, sudo=False)
            first = decode(tunnel.stdout.read(1))
            if first != "@":
                raise RuntimeError(
                    f"the ssh tunnel {node1.server} -> {node2.server} failed: "
                    f"{first + decode(tunnel.stdout.read())}"
                )
            for node, name, addr in ((node1, intfname1, addr1), (node2, intfname2, addr2)):
                if not self.moveIntf("tap9", node):
                    raise RuntimeError(f"moving tap9 into {node} on {node.server} failed")
                rename = f"ip link set tap9 name {name}" + (f" address {addr}" if addr else "")
                said = node.cmd(rename)
                if said:
                    raise RuntimeError(f"renaming tap9 to {name} on {node.server}: {said}")
            return tunnel

    links = {"vxlan": VXLANLink, "gre": GRELink, "ssh": SSHLink}
    return ClusterClasses(host=Host, bridge=Bridge, link=links[tunnel])
