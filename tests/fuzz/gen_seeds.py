#!/usr/bin/env python3
"""Write the committed seed corpora, tests/fuzz/seeds/<target>/, from the
test scripts: request and reply lines are the byte-string literals of the
protocol tests, caches files the TOML of the tests, binary packets are built
here in the shapes protocol-binary.txt gives. Re-run after changing tests:

    python3 tests/fuzz/gen_seeds.py

Each seed is named by the SHA-1 of its bytes, as libFuzzer names its own.
"""

import hashlib
import pathlib
import re
import shutil
import struct

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEEDS = ROOT / "tests" / "fuzz" / "seeds"

# Byte-string literals b"...", and raw strings r#"..."#.
BYTES_LIT = re.compile(rb'b"((?:[^"\\]|\\.|\\\n)*)"', re.S)
RAW_LIT = re.compile(rb'r#"(.*?)"#', re.S)


def unescape(body):
    """A Rust byte-string literal's bytes."""
    out = bytearray()
    i = 0
    simple = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"0": b"\0",
              b"\\": b"\\", b'"': b'"', b"'": b"'"}
    while i < len(body):
        c = body[i:i + 1]
        if c != b"\\":
            out += c
            i += 1
            continue
        nxt = body[i + 1:i + 2]
        if nxt in simple:
            out += simple[nxt]
            i += 2
        elif nxt == b"x":
            out.append(int(body[i + 2:i + 4], 16))
            i += 4
        elif nxt == b"\n":
            # A line continuation: skip the newline and leading whitespace.
            i += 2
            while i < len(body) and body[i:i + 1] in b" \t\n":
                i += 1
        else:
            out += c
            i += 1
    return bytes(out)


def literals(*paths):
    for path in paths:
        text = (ROOT / path).read_bytes()
        for m in BYTES_LIT.finditer(text):
            yield unescape(m.group(1))


def raw_strings(*paths):
    for path in paths:
        for m in RAW_LIT.finditer((ROOT / path).read_bytes()):
            yield m.group(1)


TEXT_COMMANDS = (b"get", b"gets", b"gat", b"gats", b"set", b"add", b"replace",
                 b"append", b"prepend", b"cas", b"delete", b"incr", b"decr",
                 b"touch", b"flush_all", b"version", b"verbosity", b"stats",
                 b"quit", b"mg", b"ms", b"md", b"ma", b"mn", b"me")
REPLY_CODES = (b"VA", b"HD", b"EN", b"NF", b"NS", b"EX", b"MN", b"ME", b"OK",
               b"VERSION", b"STAT", b"END", b"STORED", b"ERROR",
               b"CLIENT_ERROR", b"SERVER_ERROR")


def first_word(data):
    return data.lstrip(b" ").split(b" ", 1)[0].split(b"\r", 1)[0].split(b"\n", 1)[0]


# ---- requests ----

def text_requests():
    found = set()
    for lit in literals("src/protocol/text/tests.rs", "src/protocol/meta/tests.rs",
                        "tests/node_protocol.rs", "tests/proxy.rs",
                        "tests/proxy_memcached.rs", "tests/node_auth.rs"):
        if b"\n" in lit and first_word(lit) in TEXT_COMMANDS and len(lit) <= 4096:
            found.add(lit)
    return found


def packet(magic, opcode, key=b"", extras=b"", value=b"", status=0, opaque=0, cas=0):
    body = extras + key + value
    return struct.pack(">BBHBBHIIQ", magic, opcode, len(key), len(extras), 0,
                       status, len(body), opaque, cas) + body


def request(opcode, **kw):
    return packet(0x80, opcode, **kw)


def binary_requests():
    flags_exp = struct.pack(">II", 5, 0)
    arith = struct.pack(">QQI", 1, 0, 0)
    no_vivify = struct.pack(">QQI", 3, 10, 0xFFFFFFFF)
    exp = struct.pack(">I", 30)
    reqs = []
    for op in (0x00, 0x09, 0x0C, 0x0D):  # GET GETQ GETK GETKQ
        reqs.append(request(op, key=b"foo", opaque=op))
    for op in (0x1D, 0x1E, 0x23, 0x24):  # GAT GATQ GATK GATKQ
        reqs.append(request(op, key=b"foo", extras=exp))
    for op in (0x01, 0x02, 0x03, 0x11, 0x12, 0x13):  # SET ADD REPLACE (+Q)
        reqs.append(request(op, key=b"foo", extras=flags_exp, value=b"bar"))
    reqs.append(request(0x01, key=b"foo", extras=flags_exp, value=b"bar", cas=42))
    for op in (0x0E, 0x0F, 0x19, 0x1A):  # APPEND PREPEND (+Q)
        reqs.append(request(op, key=b"foo", value=b"tail"))
    for op in (0x04, 0x14):  # DELETE DELETEQ
        reqs.append(request(op, key=b"foo", cas=7))
    for op in (0x05, 0x06, 0x15, 0x16):  # INCREMENT DECREMENT (+Q)
        reqs.append(request(op, key=b"counter", extras=arith))
    reqs.append(request(0x05, key=b"counter", extras=no_vivify))
    for op in (0x07, 0x17, 0x0A, 0x0B, 0x20):  # QUIT QUITQ NOOP VERSION SASL_LIST
        reqs.append(request(op))
    reqs.append(request(0x08))  # FLUSH
    reqs.append(request(0x18, extras=exp))  # FLUSHQ with delay
    reqs.append(request(0x10))  # STAT
    reqs.append(request(0x10, key=b"settings"))
    # A group that UTF-8 repair widens past a key (a round-trip finding).
    reqs.append(request(0x10, key=b"\xff" * 250))
    reqs.append(request(0x1B, extras=struct.pack(">I", 1)))  # VERBOSITY
    reqs.append(request(0x1C, key=b"foo", extras=exp))  # TOUCH
    reqs.append(request(0x21, key=b"PLAIN", value=b"\0alice\0alice-secret"))
    reqs.append(request(0x22, key=b"PLAIN", value=b"more"))
    # Refusals: unknown opcode, wrong shape, over-size, bad magic.
    reqs.append(request(0x1F, key=b"foo"))
    reqs.append(request(0x00, key=b"foo", extras=exp))
    reqs.append(request(0x01, key=b"foo", extras=flags_exp, value=b"x" * 300))
    reqs.append(b"\x81" + request(0x00, key=b"foo")[1:])
    return reqs


# ---- replies ----

def response(opcode, **kw):
    return packet(0x81, opcode, **kw)


def binary_replies():
    """(command pick, frame pick, reply stream) as response_binary reads it."""
    get_ok = response(0x0C, key=b"key", extras=struct.pack(">I", 5), value=b"value", cas=9)
    number = response(0x05, value=struct.pack(">Q", 42), cas=3)
    stats = (response(0x10, key=b"pid", value=b"1") + response(0x10, key=b"uptime", value=b"5")
             + response(0x10))
    plain = response(0x01, cas=11)
    errors = [response(0x00, status=s, value=t) for s, t in (
        (0x01, b"Not found"), (0x02, b"Data exists for key."), (0x03, b"Too large."),
        (0x04, b"Invalid arguments"), (0x05, b"Not stored."), (0x06, b"Non-numeric"),
        (0x20, b"Auth failure."), (0x21, b"challenge"), (0x81, b"Unknown command"),
        (0x82, b"Out of memory"), (0x84, b"Internal error"), (0x86, b"Temporary failure"))]
    # Command picks follow memgate_fuzz::command's table.
    seeds = [(0, 0, get_ok), (1, 1, get_ok), (0, 2, get_ok + get_ok), (9, 0, number),
             (10, 1, number), (15, 0, stats), (16, 1, stats), (2, 0, plain), (3, 1, plain),
             (8, 2, response(0x04)), (13, 0, response(0x0B, value=b"1.6.18")),
             (20, 1, response(0x20, value=b"PLAIN")),
             (21, 1, response(0x21, value=b"Authenticated"))]
    for i, err in enumerate(errors):
        seeds.append((i, i % 3, err))
    return [bytes([c, f]) + stream for c, f, stream in seeds]


def meta_replies():
    """(command pick, frame pick, reply stream) as response_meta reads it."""
    ok = [b"VA 5 O7 f5 c12 t-1\r\nvalue\r\n", b"VA 5 O7 f0 c12 s5 t30 h1 l2 W\r\nvalue\r\n",
          b"HD O7 c5\r\n", b"HD O7 X Z\r\n", b"EN\r\n", b"EN O7\r\n", b"NF O7\r\n",
          b"NS O7\r\n", b"EX O7\r\n", b"MN\r\n", b"VA 2 O7 c3 t-1\r\n42\r\n",
          b"ME key exp=-1 la=1 cas=2 fetch=no cls=1 size=63\r\n", b"OK\r\n",
          b"VERSION 1.6.18\r\n", b"STAT pid 1\r\nSTAT uptime 5\r\nEND\r\n", b"STORED\r\n",
          b"ERROR\r\n", b"CLIENT_ERROR bad command line format\r\n",
          b"SERVER_ERROR out of memory storing object\r\n"]
    for lit in literals("src/protocol/meta_client/tests.rs"):
        if b"\n" in lit and first_word(lit) in REPLY_CODES and len(lit) <= 4096:
            ok.append(lit)
    # Pair every reply with the command it answers best, and with a couple of
    # frames; the fuzzer mixes the rest.
    code_commands = {b"VA": (0, 9), b"HD": (2, 8, 11), b"EN": (0, 19), b"NF": (8, 10),
                     b"NS": (4, 6), b"EX": (3,), b"MN": (18,), b"ME": (19,), b"OK": (12,),
                     b"VERSION": (13,), b"STAT": (15, 16), b"END": (15,), b"STORED": (20,)}
    seeds = []
    for reply in ok:
        for command in code_commands.get(first_word(reply), (0, 2)):
            for frame in (0, 1, 2 | 0xE0):
                seeds.append(bytes([command, frame]) + reply)
    return seeds


# ---- the rest ----

def sasl():
    return [b"\0alice\0alice-secret", b"admin\0alice\0s3cret", b"\0bob\0bob secret",
            b"\0al\xffice\0s3cret", b"\0alice\0s3\0cret", b""]


def input_streams(text, binary):
    text = sorted(text)
    streams = []
    # A few requests per stream, as a pipelining client sends them.
    for i in range(0, len(text), 4):
        streams.append(b"".join(text[i:i + 4]))
    streams.append(b"".join(binary[:12]))
    streams.append(b"".join(binary[12:24]))
    streams.append(b"".join(binary[24:]))
    return [bytes([i % 256]) + s for i, s in enumerate(streams)]


def caches():
    found = [r for r in raw_strings("tests/common/mod.rs", "tests/analytics.rs",
                                    "src/node/caches/tests.rs") if b"[[cache]]" in r]
    found.append(b'[[cache]]\nid = "9"\nmemory_limit = "1GiB"\n\n[[cache.credential]]\n'
                 b'username = "hashed"\npassword_hash = "$argon2id$v=19$m=19456,t=2,p=1$'
                 b'c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"\n')
    return found


def proxy():
    return [
        b'timeout = "2s"\nmetrics_listen = "none"\nservers = "127.0.0.1:11211"\n',
        b'listen = "127.0.0.1:11211"\nservers = "a.example:11211:2,b=10.0.0.2:11211"\n'
        b'tls_port = 11219\nserver_name = "nodes.example"\nca = "ca.pem"\n'
        b'client_cert = "client.pem"\nclient_key = "client-key.pem"\nusername = "15F38e"\n'
        b'password = "0c3a1b2d4e5f"\nconnections_per_node = 2\ntimeout = "500ms"\n'
        b'down_retry_delay = "1s"\nfailure_limit = 2\nkeepalive = "30s"\n'
        b'failover = "eject"\nmetrics_listen = "127.0.0.1:9151"\ndrain_timeout = "5s"\n'
        b'max_item_size = "1MiB"\n',
        b'listen = "0.0.0.0:11211"\nallow_remote = true\nca = "ca.pem"\n',
        b'ca = "ca.pem"\nclient_cert = "client.pem"\n',
        b'ca = "ca.pem"\nfailover = "error"\nkeepalive = "0s"\nmax_item_size = "2MiB"\n',
    ]


def write(target, seeds):
    out = SEEDS / target
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for seed in seeds:
        (out / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


def main():
    text = text_requests()
    binary = binary_requests()
    write("request_text", text)
    write("request_binary", binary)
    write("response_binary", binary_replies())
    write("response_meta", meta_replies())
    write("sasl", sasl())
    write("input", input_streams(text, binary))
    write("caches_toml", caches())
    write("proxy_toml", proxy())


if __name__ == "__main__":
    main()
