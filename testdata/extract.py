#!/usr/bin/env python3
"""Turns the captures record.sh made into testdata: pcaps, ClientHello payloads, hostile shapes
cut from them, and the two manifests (same columns as the external conformance corpus).

Usage: extract.py PCAP_DIR SOURCES_TSV TESTDATA_DIR

The server names in the manifests are read from the captured bytes by the small TLS reader here,
which is independent of the gateway's parser: the tests compare the two.
"""
import os
import shutil
import struct
import sys

# capture name -> payload file for its first ClientHello (or HTTP request)
PAYLOADS = {
    "curl_v4": "client__curl.bin",
    "curl_http_v4": "client__curl_http.bin",
    "openssl_tls13_v4": "client__openssl_tls13.bin",
    "openssl_tls12_v6": "client__openssl_tls12.bin",
    "openssl_nosni_v4": "client__openssl_nosni.bin",
    "python_v4": "client__python.bin",
    "rustls_pq_v4": "client__rustls_pq.bin",
    "rustls_classic_v4": "client__rustls.bin",
    "rustls_tls12_v4": "client__rustls_tls12.bin",
    "chromium_v4": "client__chromium.bin",
}


def ip_packets(path):
    data = open(path, "rb").read()
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        e = "<"
    elif magic == b"\xa1\xb2\xc3\xd4":
        e = ">"
    else:
        raise SystemExit(f"{path}: not a classic pcap")
    link = struct.unpack(e + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        caplen = struct.unpack(e + "I", data[off + 8 : off + 12])[0]
        frame = data[off + 16 : off + 16 + caplen]
        off += 16 + caplen
        if link == 1 and frame[12:14] in (b"\x08\x00", b"\x86\xdd"):
            yield frame[14:]
        elif link in (12, 101):
            yield frame


def tcp_segment(ip):
    """(src, dst, sport, dport, seq, flags, payload) of a TCP packet, else None."""
    if ip[0] >> 4 == 4:
        ihl = (ip[0] & 15) * 4
        if ip[9] != 6:
            return None
        total = struct.unpack(">H", ip[2:4])[0]
        src, dst, seg = ip[12:16], ip[16:20], ip[ihl:total]
    elif ip[0] >> 4 == 6:
        if ip[6] != 6:
            return None
        plen = struct.unpack(">H", ip[4:6])[0]
        src, dst, seg = ip[8:24], ip[24:40], ip[40 : 40 + plen]
    else:
        return None
    sport, dport, seq = struct.unpack(">HHI", seg[:8])
    doff = (seg[12] >> 4) * 4
    return src, dst, sport, dport, seq, seg[13], seg[doff:]


def client_streams(path):
    """Per connection, in the order of their SYNs: the client's byte stream and the stream
    offsets at which each first-transmitted data segment starts."""
    flows = {}
    order = []
    for ip in ip_packets(path):
        t = tcp_segment(ip)
        if not t:
            continue
        src, dst, sport, dport, seq, flags, payload = t
        key = (src, sport, dst, dport)
        if flags & 0x02 and not flags & 0x10:
            flows[key] = {"isn": seq, "segs": {}}
            order.append(key)
        elif key in flows and payload:
            off = (seq - flows[key]["isn"] - 1) % (1 << 32)
            flows[key]["segs"].setdefault(off, payload)
    out = []
    for key in order:
        stream = b""
        starts = []
        for off, p in sorted(flows[key]["segs"].items()):
            if off <= len(stream) < off + len(p):
                starts.append(off)
                stream += p[len(stream) - off :]
        out.append((key[3], stream, starts))
    return out


def hello_of(stream):
    """(hello message, bytes of stream it spans, records) of a TLS stream, else None."""
    msg, pos, records = b"", 0, 0
    while pos + 5 <= len(stream) and stream[pos] == 22:
        n = struct.unpack(">H", stream[pos + 3 : pos + 5])[0]
        msg += stream[pos + 5 : pos + 5 + n]
        pos += 5 + n
        records += 1
        if len(msg) >= 4 and len(msg) >= 4 + int.from_bytes(msg[1:4], "big"):
            return msg[: 4 + int.from_bytes(msg[1:4], "big")], pos, records
    return None


def extensions(msg):
    """The (type, data) extensions of a ClientHello message, and the offset of the block."""
    p = 4 + 2 + 32
    p += 1 + msg[p]
    p += 2 + struct.unpack(">H", msg[p : p + 2])[0]
    p += 1 + msg[p]
    start = p
    end = p + 2 + struct.unpack(">H", msg[p : p + 2])[0]
    p += 2
    out = []
    while p + 4 <= end:
        ty, n = struct.unpack(">HH", msg[p : p + 4])
        out.append((ty, msg[p + 4 : p + 4 + n]))
        p += 4 + n
    return out, start


def sni(msg):
    for ty, data in extensions(msg)[0]:
        if ty == 0:
            n = struct.unpack(">H", data[3:5])[0]
            return data[5 : 5 + n].decode()
    return None


def records(msg, size):
    out = b""
    for i in range(0, len(msg), size):
        chunk = msg[i : i + size]
        out += bytes([22, 3, 1]) + struct.pack(">H", len(chunk)) + chunk
    return out


def without_sni(msg):
    """The hello with its server_name extension taken out and the lengths fixed."""
    exts, start = extensions(msg)
    block = b"".join(struct.pack(">HH", ty, len(d)) + d for ty, d in exts if ty != 0)
    body = msg[4:start] + struct.pack(">H", len(block)) + block
    return b"\x01" + len(body).to_bytes(3, "big") + body


def main():
    pcaps, sources, out = sys.argv[1:]
    desc = dict(line.rstrip("\n").split("\t", 1) for line in open(sources))
    for sub in ("pcap", "payloads"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
        os.makedirs(os.path.join(out, sub))
    cap_rows, pay_rows, hellos = [], [], {}
    for name in desc:
        src = os.path.join(pcaps, name + ".pcap")
        names, max_segs, max_recs = [], 0, 0
        for port, stream, starts in client_streams(src):
            h = hello_of(stream)
            if h is None:
                names.append("-")
                if name in PAYLOADS and name not in hellos and stream:
                    hellos[name] = (stream, "-", "plain HTTP request; Host header api.openai.com")
                continue
            msg, span, recs = h
            names.append(sni(msg) or "-")
            max_segs = max(max_segs, sum(1 for s in starts if s < span))
            max_recs = max(max_recs, recs)
            if name in PAYLOADS and name not in hellos:
                hellos[name] = (stream[:span], names[-1], f"{len(msg) + 5 * recs} bytes")
        if not names:
            raise SystemExit(f"{name}: no connection was captured")
        shutil.copy(src, os.path.join(out, "pcap", name + ".pcap"))
        segs = str(max_segs) if max_segs > 1 else ""
        recs = str(max_recs) if max_recs > 1 else ""
        cap_rows.append([f"pcap/{name}.pcap", "TCP", ",".join(names), segs, recs, "", "",
                         f"record.sh: {desc[name]}"])
        print(f"  {name}: {','.join(names)} (hello over {max_segs or 1} segments)")
    for name, file in PAYLOADS.items():
        if name not in hellos:
            print(f"  {file}: skipped, no {name} capture")
            continue
        blob, want, note = hellos[name]
        open(os.path.join(out, "payloads", file), "wb").write(blob)
        pay_rows.append([file, "TCP", want, f"{desc[name]}: {note}"])
    # Hostile shapes cut from the real hellos.
    for base, size in (("chromium_v4", 100), ("curl_v4", 7)):
        if base in hellos:
            blob, want, _ = hellos[base]
            msg = hello_of(blob)[0]
            file = f"variant__{PAYLOADS[base][8:-4]}_records_{size}.bin"
            open(os.path.join(out, "payloads", file), "wb").write(records(msg, size))
            pay_rows.append([file, "TCP", want, f"{PAYLOADS[base]} re-cut into {size}-byte TLS records"])
    for base in ("chromium_v4", "python_v4"):
        if base in hellos:
            msg = hello_of(hellos[base][0])[0]
            file = f"variant__{PAYLOADS[base][8:-4]}_no_sni.bin"
            open(os.path.join(out, "payloads", file), "wb").write(records(without_sni(msg), 16384))
            pay_rows.append([file, "TCP", "-", f"{PAYLOADS[base]} with its server_name extension taken out"])
    with open(os.path.join(out, "manifest.tsv"), "w") as f:
        f.write("# file\ttransport\texpected_sni_in_order\tmax_tcp_segments_of_clienthello\t"
                "max_tls_handshake_fragments\tmax_quic_crypto_frags\tquic_versions\tsource\n")
        for r in cap_rows:
            f.write("\t".join(r) + "\n")
    with open(os.path.join(out, "payloads", "manifest.tsv"), "w") as f:
        f.write("# file\ttransport\texpected_sni\tnotes\n")
        for r in pay_rows:
            f.write("\t".join(r) + "\n")


if __name__ == "__main__":
    main()
