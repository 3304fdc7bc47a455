#!/usr/bin/env python3
"""A userspace tunnel endpoint for the recording lab: a TUN device on one side, GENEVE, GRE,
ERSPAN or IP-in-IP on the wire on the other. record.sh uses it for the tunnel types the kernel
it runs on cannot create with `ip link add` (VXLAN is always the kernel's own).

Usage: tunnel.py MODE TUNDEV LOCAL REMOTE

MODE: geneve (UDP 6081, IP payload as a Gateway Load Balancer sends it, with an 8-byte option),
gre (key and sequence number), erspan (ERSPAN type II over GRE, an Ethernet frame inside),
ipip (4in4), sit (6in4), ip4in6 (4in6), ip6in6 (6in6). LOCAL and REMOTE are the underlay
addresses (IPv4, or IPv6 for ip4in6 and ip6in6). Runs until killed.
"""
import fcntl
import os
import select
import socket
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
GENEVE_PORT = 6081


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def ethertype(packet):
    return 0x86DD if packet[0] >> 4 == 6 else 0x0800


def main():
    mode, dev, local, remote = sys.argv[1:5]
    tun = open_tun(dev)
    v6 = mode in ("ip4in6", "ip6in6")
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    proto = {"gre": 47, "erspan": 47, "ipip": 4, "sit": 41, "ip4in6": 4, "ip6in6": 41}.get(mode)
    if mode == "geneve":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((local, GENEVE_PORT))
        peer = (remote, GENEVE_PORT)
    else:
        sock = socket.socket(fam, socket.SOCK_RAW, proto)
        sock.bind((local, 0))
        peer = (remote, 0)
    seq = 0

    def wrap(inner):
        nonlocal seq
        seq += 1
        if mode == "geneve":
            # Version 0, 2 words of options, protocol of the inner packet, VNI 4242, and one
            # option (class 0x0108, type 1, 4 bytes of data).
            hdr = struct.pack(">BBHI", 2, 0, ethertype(inner), 4242 << 8)
            return hdr + struct.pack(">HBB", 0x0108, 1, 1) + b"\x00\x00\x00\x2a" + inner
        if mode == "gre":
            return struct.pack(">HHII", 0x3000, ethertype(inner), 7, seq) + inner
        if mode == "erspan":
            # GRE with a sequence number, ERSPAN II (version 1, session 7), then an Ethernet
            # frame around the packet.
            gre = struct.pack(">HHI", 0x1000, 0x88BE, seq)
            erspan = struct.pack(">HHI", (1 << 12) | 0, 7, 0)
            eth = bytes.fromhex("020000000002020000000001") + struct.pack(">H", ethertype(inner))
            return gre + erspan + eth + inner
        return inner

    def unwrap(data):
        if not v6 and mode != "geneve":
            data = data[(data[0] & 15) * 4 :]  # IPv4 raw sockets see the IP header
        if mode == "geneve":
            return data[8 + (data[0] & 0x3F) * 4 :]
        if mode == "gre":
            return data[12:]
        if mode == "erspan":
            return data[8 + 8 + 14 :]
        return data

    while True:
        ready, _, _ = select.select([tun, sock], [], [])
        if tun in ready:
            inner = os.read(tun, 65535)
            try:
                sock.sendto(wrap(inner), peer)
            except OSError:
                pass
        if sock in ready:
            data, _ = sock.recvfrom(65535)
            inner = unwrap(data)
            if inner:
                try:
                    os.write(tun, inner)
                except OSError:
                    pass


if __name__ == "__main__":
    main()
