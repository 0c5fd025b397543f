#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets: fuzz/seeds/<target>/<name>.

Each seed is one hand-picked case, named for what it tries. `channels` reads its bytes as a
query string; `event` and `last_event_id` decode theirs with `arbitrary` 1.x (derive), which
this file encodes by hand: integers little-endian, a bool is a byte's low bit, an `Option` a
bool then the value, an enum variant a `u32` (`index = value * variants >> 32`), a `Vec` of a
non-last field (and every `Vec` element of a last one) each element after a `1` byte, a
`String` its bytes from the front and its length from the end (one byte while what is left
is at most 256 bytes, else two, big-endian). Check a seed with
`cargo fuzz fmt <target> seeds/<target>/<name>` (from fuzz/). Run from anywhere:
`python3 fuzz/seeds/make.py`; the files are committed, so CI does not need Python.
"""

import pathlib
import struct

SEEDS = pathlib.Path(__file__).resolve().parent


class Data:
    """Bytes read from the front, and lengths read from the end (last pushed, first read)."""

    def __init__(self):
        self.front = bytearray()
        self.back = bytearray()

    def u8(self, v):
        self.front.append(v)
        return self

    def bool(self, v):
        return self.u8(1 if v else 0)

    def u32(self, v):
        self.front += struct.pack("<I", v)
        return self

    def u64(self, v):
        self.front += struct.pack("<Q", v)
        return self

    def variant(self, index, count):
        # The smallest u32 whose `value * count >> 32` is `index`.
        return self.u32(-(-index * 2**32 // count))

    def string(self, s):
        raw = s.encode()
        assert len(raw) < 256
        self.front += raw
        self.back.insert(0, len(raw))
        return self

    def last_string(self, s):
        """A `String` that is the last thing read: its length may take two bytes."""
        raw = s.encode()
        assert not self.back
        self.front += raw
        if len(raw) + 1 <= 256:
            self.back.append(len(raw))
        else:
            self.back += struct.pack(">H", len(raw))
        return self

    def bytes(self):
        return bytes(self.front + self.back)


def write(target, name, data):
    path = SEEDS / target / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.bytes())


# channels: a query string.
for name, query in {
    "one": "channel=a",
    "list-and-repeat": "channel=a,b&channel=a&other=x",
    "too-many-for-tight": "channel=a&channel=b&channel=c",
    "too-long-for-tight": "channel=abcde",
    "encoded-key-and-utf8": "%63hannel=%E2%82%AC,caf%C3%A9",
    "plus-is-space": "channel=a+b",
    "bad-percent": "channel=a%2",
    "not-utf8": "channel=%FF",
    "empty-name": "channel=a,,b",
    "no-value": "x=1&channel",
}.items():
    write("channels", name, query.encode())


# event: Vec<Call> (the last field: each call after a `1`); Call has 5 variants.
DATA, EVENT, ID, RETRY, COMMENT = range(5)


def event(*calls):
    d = Data()
    for kind, *args in calls:
        d.u8(1).variant(kind, 5)
        if kind == RETRY:
            d.u64(args[0]).u32(args[1])
        else:
            d.string(args[0])
    return d


write("event", "data", event((DATA, "hello")))
write("event", "data-lines", event((DATA, "a\r\nb\rc\nd")))
write("event", "empty-data", event((DATA, "")))
write(
    "event",
    "every-field",
    event(
        (DATA, "x"),
        (EVENT, "update"),
        (ID, "42\tb"),
        (RETRY, 3, 500_000_000),
        (COMMENT, "one\r\ntwo"),
    ),
)
write("event", "later-wins", event((DATA, "a"), (EVENT, "e1"), (DATA, "b"), (EVENT, "e2")))
write("event", "bad-type", event((DATA, "x"), (EVENT, "a\nb"), (ID, "1\r")))
write("event", "bad-id", event((ID, "a\x00b"), (DATA, "x")))
write("event", "unicode", event((DATA, "é€😀"), (ID, "café-1"), (COMMENT, "")))


# last_event_id: Input { channels: u8, header: Option<Vec<u8>>, query: Option<QueryId> }.
# `channels` indexes CHANNELS: 0 sse, 1 a, 2 b, 3 a,b, 4 sse&b, 5 c, 6 c,a, 7 sse,a,b,d.
RAW, ENCODED = range(2)


def request(channels, header=None, query=None):
    d = Data().u8(channels)
    d.bool(header is not None)
    if header is not None:
        for b in header.encode() if isinstance(header, str) else header:
            d.u8(1).u8(b)
        d.u8(0)
    d.bool(query is not None)
    if query is not None:
        kind, value = query
        d.variant(kind, 2)
        if kind == RAW:
            d.last_string(value)
        else:
            for b in value.encode():
                d.u8(1).u8(b)
    return d


for name, args in {
    "no-id": (0,),
    "seq-kept": (0, "1008"),
    "seq-gap": (0, "1002"),
    "seq-latest": (3, "1013"),
    "seq-after-latest": (0, "1014"),
    "seq-at-base": (0, "1000"),
    "seq-of-another-start": (1, "7"),
    "seq-too-big": (0, "18446744073709551616"),
    "leading-zero": (0, "01008"),
    "publisher-id-like-seq": (3, "1007"),
    "publisher-id-newer": (1, "pa"),
    "publisher-id-dropped": (0, "p3"),
    "publisher-id-first-channel": (7, "p5"),
    "new-channel": (5, "1004"),
    "new-channel-with-old": (6, "1009"),
    "header-utf8": (2, "é"),
    "header-not-utf8": (2, b"\xc3\x28"),
    "header-wins": (4, "1011", (RAW, "nope")),
    "query-raw": (1, None, (RAW, "pa")),
    "query-plus": (1, None, (RAW, "p+a")),
    "query-encoded-utf8": (2, None, (ENCODED, "é")),
    "query-bad-percent": (0, None, (RAW, "10%2")),
    "query-adds-channel": (0, None, (RAW, "1&channel=x")),
    "query-empty": (0, None, (RAW, "")),
    "query-too-long": (0, None, (RAW, "1" * 1025)),
}.items():
    write("last_event_id", name, request(*args))


# positions: channel names, one per line, a NUL, then the id. The tag is the high half of the
# 64-bit FNV-1a of the names joined with newlines, in 8 hex digits.
def positions_tag(names):
    h = 0xCBF29CE484222325
    for byte in "\n".join(names).encode():
        h ^= byte
        h = (h * 0x100000001B3) % 2**64
    return f"{h >> 32:08x}"


AB = ["a", "b"]
THREE = ["page.0", "page.1", "page.4"]
for name, (names, id) in {
    "two": (AB, f"~{positions_tag(AB)}.12.0"),
    "three": (THREE, f"~{positions_tag(THREE)}.1.1.1"),
    "largest": (AB, f"~{positions_tag(AB)}.18446744073709551615.0"),
    "too-large": (AB, f"~{positions_tag(AB)}.18446744073709551616.0"),
    "leading-zero": (AB, f"~{positions_tag(AB)}.01.2"),
    "one-short": (AB, f"~{positions_tag(AB)}.1"),
    "other-order": (["b", "a"], f"~{positions_tag(AB)}.1.2"),
    "upper-hex": (AB, f"~{positions_tag(AB).upper()}.1.2"),
    "an-event-id": (AB, "12"),
}.items():
    write("positions", name, "\n".join(names).encode() + b"\0" + id.encode())


# mercure: Input { subscribe: Vec<String>, raw_query: Option<String>, last_event_id:
# Option<String>, subscriber: Token, fields: Vec<Field>, publisher: Token }; Token has 3
# variants (None, Signed { publish, subscribe, expired }, Raw), Field 7 (Topic, Data, Private,
# Id, Type, Retry, Raw).
TOPIC, DATA_FIELD, PRIVATE, ID_FIELD = range(4)


def strings(d, items):
    for item in items:
        d.u8(1).string(item)
    return d.u8(0)


def mercure(subscribe, fields, publish=("*",)):
    d = Data()
    strings(d, subscribe)
    d.bool(False).bool(False)
    d.variant(0, 3)
    for kind, *args in fields:
        d.u8(1).variant(kind, 7)
        if args:
            d.string(args[0])
    d.u8(0)
    d.variant(1, 3)
    strings(d, publish)
    strings(d, [])
    d.bool(False)
    return d


BOOK = "https://example.com/books/1"
for name, args in {
    "public-to-its-topic": ([BOOK], [(TOPIC, BOOK), (DATA_FIELD, "hi")]),
    "star-gets-all": (["*"], [(TOPIC, "a"), (ID_FIELD, "x")]),
    "private-to-anonymous": (["a"], [(TOPIC, "a"), (PRIVATE,)]),
    "template": (["https://example.com/books/{id}"], [(TOPIC, BOOK)]),
    "other-topic": (["b"], [(TOPIC, "a")]),
    "alternate-topic": (["b", "a"], [(TOPIC, "a"), (TOPIC, "b")]),
    "not-allowed": (["a"], [(TOPIC, "a")], ["b"]),
}.items():
    write("mercure", name, mercure(*args))
