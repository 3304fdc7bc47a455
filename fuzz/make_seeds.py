#!/usr/bin/env python3
"""Builds the fuzz seed corpora from recorded traffic (captures and payloads).

Usage: make_seeds.py CORPUS_DIR... OUT_DIR

Each CORPUS_DIR has the layout of testdata/ (pcap/, payloads/): the project's own testdata/,
and the extra conformance corpus when it is present.

Writes OUT_DIR/<target>/<name> for the targets wire_parse, tls_client_hello, http_host,
http_framing, capture_reader, pipeline, quic_initial, decap, starttls and dns_observe (DNS
queries and their answers from the captures, testdata/dns/ included). Classic pcap only (the corpus holds no pcapng); link types
Ethernet (with VLAN tags), raw IP, IPv4, Linux SLL and BSD NULL/LOOP.
"""
import hashlib
import os
import struct
import sys

MAX_CAPTURE_SEED = 64 * 1024


def frames(path):
    data = open(path, "rb").read()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        return
    linktype = struct.unpack(e + "I", data[20:24])[0] & 0xFFFF
    off = 24
    while off + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(e + "IIII", data[off : off + 16])
        frame = data[off + 16 : off + 16 + caplen]
        off += 16 + caplen
        if len(frame) < caplen:
            return
        ip = ip_of(linktype, frame)
        if ip:
            yield ip


def ip_of(linktype, f):
    if linktype == 1:
        at = 12
        while len(f) >= at + 2 and f[at : at + 2] in (b"\x81\x00", b"\x88\xa8"):
            at += 4
        if f[at : at + 2] in (b"\x08\x00", b"\x86\xdd"):
            return f[at + 2 :]
        return None
    if linktype in (12, 14, 101, 228, 229):
        return f
    if linktype in (0, 108):
        return f[4:]
    if linktype == 113:
        return f[16:]
    return None


def tcp_payload(ip):
    if not ip:
        return None
    v = ip[0] >> 4
    if v == 4:
        ihl = (ip[0] & 15) * 4
        if len(ip) < ihl + 20 or ip[9] != 6:
            return None
        seg = ip[ihl:]
    elif v == 6:
        if len(ip) < 60 or ip[6] != 6:
            return None
        seg = ip[40:]
    else:
        return None
    return seg[(seg[12] >> 4) * 4 :]


def udp_ports_payload(ip):
    """(source port, destination port, payload) of a UDP datagram, or None."""
    if not ip:
        return None
    v = ip[0] >> 4
    if v == 4:
        ihl = (ip[0] & 15) * 4
        if len(ip) < ihl + 8 or ip[9] != 17:
            return None
        udp = ip[ihl:]
    elif v == 6:
        if len(ip) < 48 or ip[6] != 17:
            return None
        udp = ip[40:]
    else:
        return None
    sport, dport = struct.unpack(">HH", udp[:4])
    return sport, dport, udp[8:]


def udp443_payload(ip):
    """The payload of a UDP datagram to port 443, or None."""
    u = udp_ports_payload(ip)
    return u[2] if u and u[1] == 443 else None


def dns_seeds(paths, out):
    """dns_observe input: the first half is offered as a query, the second as its answer. Each
    query is paired with the answer carrying its id, the query zero-padded to the answer's
    length so that the halves fall where they belong."""
    for path in paths:
        queries = {}
        for ip in frames(path):
            u = udp_ports_payload(ip)
            if not u or len(u[2]) < 12:
                continue
            sport, dport, msg = u
            if dport == 53:
                queries[msg[:2]] = msg
            elif sport == 53 and msg[:2] in queries:
                q = queries.pop(msg[:2])
                if len(q) <= len(msg):
                    write(out, "dns_observe", q + bytes(len(msg) - len(q)) + msg)
                write(out, "dns_observe", q + msg)


def quic_seed(datagrams):
    """quic_initial input: mode 0 (raw datagrams), then (u16 length, datagram)*."""
    return b"\x00" + b"".join(struct.pack(">H", len(d)) + d for d in datagrams)


def write(out, target, blob):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(blob).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as fh:
        fh.write(blob)


def pcapng_seed(e, ips):
    """A pcapng file (byte order e) with an Ethernet, a raw IP (ns) and an SLL2 interface."""

    def block(ty, body):
        body += b"\0" * (-len(body) % 4)
        n = len(body) + 12
        return struct.pack(e + "II", ty, n) + body + struct.pack(e + "I", n)

    out = block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack(e + "HHI", 1, 0, 65535))
    out += block(1, struct.pack(e + "HHI", 101, 0, 0) + struct.pack(e + "HH", 9, 1) + b"\x09\0\0\0" + b"\0" * 4)
    out += block(1, struct.pack(e + "HHI", 276, 0, 0))
    for i, ip in enumerate(ips):
        iface = i % 3
        if iface == 0:
            frame = b"\x02" * 12 + (b"\x08\x00" if ip[0] >> 4 == 4 else b"\x86\xdd") + ip
        elif iface == 1:
            frame = ip
        else:
            frame = (b"\x08\x00" if ip[0] >> 4 == 4 else b"\x86\xdd") + b"\0" * 18 + ip
        out += block(6, struct.pack(e + "IIIII", iface, 0, i, len(frame), len(frame)) + frame)
    return out


def tcp_v4(src, dst, sport, dport, seq, ack, flags, payload=b""):
    """An IPv4/TCP packet (checksums left zero: the seeds mark them unverified)."""
    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0,
                     bytes(src), bytes(dst))
    return ip + tcp


def http_session(requests):
    """Pipeline input for one plain-HTTP keep-alive connection to port 80: the handshake, then
    each request as its own segment with the server acknowledging it."""
    c, s, cisn, sisn = [10, 0, 0, 2], [93, 184, 216, 34], 1000, 5000
    syn, ack, psh = 0x02, 0x10, 0x08
    pkts = [tcp_v4(c, s, 40000, 80, cisn, 0, syn),
            tcp_v4(s, c, 80, 40000, sisn, cisn + 1, syn | ack),
            tcp_v4(c, s, 40000, 80, cisn + 1, sisn + 1, ack)]
    off = 0
    for r in requests:
        pkts.append(tcp_v4(c, s, 40000, 80, cisn + 1 + off, sisn + 1, ack | psh, r))
        off += len(r)
        pkts.append(tcp_v4(s, c, 80, 40000, sisn + 1, cisn + 1 + off, ack))
    return b"".join(struct.pack(">BH", 0x81, len(p)) + p for p in pkts)


def http_seeds(out):
    """Keep-alive sessions: plain requests, a chunked body, a smuggling attempt, a denied host."""
    get = lambda h: b"GET / HTTP/1.1\r\nHost: " + h + b"\r\n\r\n"
    chunked = (b"POST /v1 HTTP/1.1\r\nHost: api.anthropic.com\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;x=y\r\nhello\r\n0\r\nDigest: a\r\n\r\n")
    sized = b"POST /v1 HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 5\r\n\r\nhello"
    smuggle = (b"POST / HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 4\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    for i, reqs in enumerate([
        [get(b"api.anthropic.com"), chunked, sized, get(b"evil.example.net")],
        [chunked + get(b"api.anthropic.com"), get(b"api.anthropic.com")],
        [get(b"api.anthropic.com"), smuggle, get(b"api.anthropic.com")],
        [b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n\r\n"],
    ]):
        write(out, "pipeline", http_session(reqs))
        for r in reqs:
            write(out, "http_host", r)
            write(out, "http_framing", r)


def framing_seeds(out):
    """Heads with every kind of framing, and chunked bodies on their own (with extensions,
    trailers, upper-case sizes, and the malformed endings a smuggler would try)."""
    heads = [
        b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 12\r\n\r\nhello world!",
        b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    ]
    bodies = [
        b"5\r\nhello\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
        b"3\r\nabc\r\n0\r\nDigest: x\r\nOther: y\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        b"A\r\n0123456789\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\r",
        b"0\r\n folded: x\r\n\r\n",
        b"fffffffffffffff\r\n",
    ]
    chunked = b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n"
    for blob in heads + bodies + [chunked + b for b in bodies]:
        write(out, "http_framing", blob)


def seed_from(corpus, out):
    pdir = os.path.join(corpus, "pcap")
    for name in sorted(os.listdir(pdir)):
        path = os.path.join(pdir, name)
        if os.path.getsize(path) <= MAX_CAPTURE_SEED:
            write(out, "capture_reader", open(path, "rb").read())
        seq = b""
        quic = []
        for ip in frames(path):
            u = udp443_payload(ip)
            if u and len(quic) < 8:
                quic.append(u)
            write(out, "wire_parse", ip)
            write(out, "decap", ip)
            if len(seq) < 48 * 1024:
                # pipeline input: (u8 step, u16 length, packet)*; step: 1 ms, checksum unverified
                seq += struct.pack(">BH", 0x81, len(ip)) + ip
            p = tcp_payload(ip)
            if p and p[0] == 0x16:
                write(out, "tls_client_hello", p)
            if p and p[:1].isupper():
                write(out, "http_host", p)
            if p and p[:1].isalnum():
                write(out, "starttls", p)
        if seq:
            write(out, "pipeline", seq)
        if quic:
            write(out, "quic_initial", quic_seed(quic))
        ips = [ip for ip, _ in zip(frames(path), range(6))]
        if ips and name.startswith(("tls__tls-client-hello-frag", "community-id-ipv6", "chromium_v6")):
            write(out, "capture_reader", pcapng_seed("<", ips))
            write(out, "capture_reader", pcapng_seed(">", ips))
    ydir = os.path.join(corpus, "payloads")
    if not os.path.isdir(ydir):
        return
    for name in sorted(os.listdir(ydir)):
        if name.endswith(".hex") and name.startswith("rfc9001"):
            text = open(os.path.join(ydir, name)).read()
            write(out, "quic_initial", quic_seed([bytes.fromhex("".join(text.split()))]))
        if not name.endswith(".bin"):
            continue
        blob = open(os.path.join(ydir, name), "rb").read()
        if blob[:1] == b"\x16":
            write(out, "tls_client_hello", blob)
        elif blob[:1].isupper():
            write(out, "http_host", blob)
        if name.startswith("zapret__quic_"):
            write(out, "quic_initial", quic_seed([blob]))
        if name.endswith("_kyber_1.bin") and name.startswith("zapret__quic_"):
            other = open(os.path.join(ydir, name.replace("_1.bin", "_2.bin")), "rb").read()
            write(out, "quic_initial", quic_seed([blob, other]))
            write(out, "quic_initial", quic_seed([other, blob]))


def main():
    if len(sys.argv) < 3:
        raise SystemExit("usage: make_seeds.py CORPUS_DIR... OUT_DIR")
    *corpora, out = sys.argv[1:]
    http_seeds(out)
    framing_seeds(out)
    for corpus in corpora:
        seed_from(corpus, out)
        pcaps = []
        for sub in ("pcap", "dns"):
            d = os.path.join(corpus, sub)
            if os.path.isdir(d):
                pcaps += [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(".pcap")]
        dns_seeds(pcaps, out)


if __name__ == "__main__":
    main()
