"""The outbound address policy: every non-public address, in every spelling, and every malformed
URL is refused by `fetch` and `post` before any connection is made. A fence on the socket layer
records (and refuses) every connection attempt, so "never connected to" is asserted, not assumed.
Local HTTP servers on 127.0.0.1 play the image origin and the internal service."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

import httpx
import pytest

from openkontext.serve import netguard
from openkontext.serve.netguard import Refused, check_url

from .conftest import png_bytes

PNG = png_bytes((48, 48))
PUBLIC_MSG = "only public addresses are allowed"

# Name -> the addresses the patched resolver answers with (no DNS on the test machine).
NAMES = {
    "metadata.example": ["100.100.100.200"],
    "mixed.example": ["93.184.216.34", "10.0.0.1"],
    "mapped.example": ["::ffff:169.254.169.254"],
    "public.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "xn--bcher-kva.example": ["93.184.216.34"],  # bücher.example, as IDNA encodes it
}

# (url, what the refusal says). Literal hosts need no resolver; the numeric IPv4 spellings go
# through the real getaddrinfo, which reads them as 127.0.0.1 just as a connection would.
ADDRESSES = [
    ("http://100.100.100.200/latest/meta-data", "100.100.100.200 is a shared (carrier-grade NAT)"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://[2002:a9fe:a9fe::]/", "6to4 for 169.254.169.254, a link-local address"),
    ("http://[2002:7f00:1::5]/", "6to4 for 127.0.0.1, a loopback address"),
    ("http://[2002:a00:1::]/", "6to4 for 10.0.0.1"),
    ("http://[64:ff9b::a9fe:a9fe]/", "NAT64 for 169.254.169.254, a link-local address"),
    ("http://[64:ff9b::127.0.0.1]/", "NAT64 for 127.0.0.1, a loopback address"),
    ("http://[64:ff9b:1::a9fe:a9fe]/", "a local-use NAT64 address"),
    ("http://[fec0::1]/", "fec0::1 is a site-local address"),
    ("http://[feff::1]/", "a site-local address"),
    # Teredo: server 65.54.227.120; the client 127.0.0.1 / 10.0.0.1, stored bit-inverted.
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "Teredo client for 127.0.0.1"),
    ("http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", "Teredo client for 10.0.0.1"),
    ("http://[2001:0:a9fe:a9fe:8000:63bf:a2c9:2bdd]/", "Teredo server for 169.254.169.254"),
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped for 127.0.0.1, a loopback address"),
    ("http://[::ffff:a9fe:a9fe]/", "IPv4-mapped for 169.254.169.254"),
    ("http://[::127.0.0.1]/", "IPv4-compatible for 127.0.0.1"),
    ("http://2130706433/", "'2130706433' resolves to 127.0.0.1, a loopback address"),
    ("http://017700000001/", "resolves to 127.0.0.1, a loopback address"),
    ("http://0x7f.1/", "'0x7f.1' resolves to 127.0.0.1"),
    ("http://0x7f000001/", "resolves to 127.0.0.1"),
    ("http://127.1/", "resolves to 127.0.0.1"),
    ("http://0.0.0.0/", "0.0.0.0 is the unspecified address"),
    ("http://0/", "resolves to 0.0.0.0, the unspecified address"),
    ("http://[::]/", ":: is the unspecified address"),
    ("http://127.0.0.1/x.png", "127.0.0.1 is a loopback address"),
    ("http://127.8.9.10:8080/", "a loopback address"),
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://localhost:8080/x.png", "'localhost' resolves to 127.0.0.1, a loopback address"),
    ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
    ("http://[fe80::1]/", "a link-local address"),
    ("http://224.0.0.1/", "a multicast address"),
    ("http://239.255.255.250/", "a multicast address"),
    ("http://[ff02::1]/", "a multicast address"),
    ("http://[ff0e::1]/", "a multicast address"),
    ("http://255.255.255.255/", "255.255.255.255 is a private, reserved or special-purpose"),
    ("http://240.0.0.1/", "reserved"),
    ("http://10.1.2.3/x.png", "10.1.2.3 is a private"),
    ("http://172.16.0.1/", "a private"),
    ("http://192.168.0.1/", "a private"),
    ("http://[fd00::1]/", "a private"),
    ("http://192.0.2.1/", "special-purpose"),
    ("http://198.51.100.7/", "special-purpose"),
    ("http://203.0.113.9/", "special-purpose"),
    ("http://[2001:db8::1]/", "special-purpose"),
    ("http://[3fff::1]/", "a documentation address"),
    ("http://198.18.0.1/", "special-purpose"),
    ("http://198.19.255.254/", "special-purpose"),
    ("http://metadata.example/", "'metadata.example' resolves to 100.100.100.200"),
    ("http://mixed.example/", "'mixed.example' resolves to 10.0.0.1"),
    ("http://mapped.example/", "IPv4-mapped for 169.254.169.254"),
]

# (url, what the refusal says): URLs refused before any address is looked at.
MALFORMED = [
    ("http://[::1", "not a valid URL"),
    ("http://0177.0.0.1/", "not a valid URL: Invalid IPv4 address"),
    ("http://h:99999/", "port 99999 is out of range"),
    ("http://h:0/", "port 0 is out of range"),
    ("http://h:abc/", "not a valid URL: Invalid port"),
    ("http://１２７.0.0.1/", "not a valid URL: Invalid IDNA hostname"),
    ("http://\u3000127.0.0.1/", "space or control character"),
    ("http://a\x00b/", "space or control character ('\\x00' at position 8)"),
    ("http://127.0.0.1/x\r\nHost: evil", "space or control character"),
    ("http://127.0.0.1\t/", "space or control character"),
    ("http://exa mple.com/", "space or control character"),
    (" http://93.184.216.34/", "space or control character"),
    ("http://93.184.216.34/\u200b", "space or control character"),
    ("http:///x.png", "the URL has no host"),
    ("http://%31%32%37.0.0.1/", "host '%31%32%37.0.0.1' is not a host name"),
    ("http://[fe80::1%25eth0]/", "is not a host name or an IP address"),
    ("ftp://93.184.216.34/", "only http and https URLs are accepted, got 'ftp'"),
    ("file:///etc/passwd", "only http and https"),
    ("//93.184.216.34/", "got 'none'"),
]

PUBLIC = [
    "http://93.184.216.34/x.png",
    "https://93.184.216.34:8443/x.png",
    "http://[2606:2800:220:1:248:1893:25c8:1946]/",
    "http://[::ffff:93.184.216.34]/",
    "http://[64:ff9b::5db8:d822]/",
    "http://[2002:5db8:d822::1]/",
    "https://public.example/a/b.png?x=1",
    "https://bücher.example/café.png",
]

SENDERS = {
    "fetch": lambda url: netguard.fetch(url, [], 1_000_000, 5.0),
    "post": lambda url: netguard.post(url, [], b"{}", {}, 5.0),
}


@dataclass
class Fence:
    """Every connection attempt of a test; refused unless its port is in `open_ports`."""

    attempts: list = field(default_factory=list)
    open_ports: set[int] = field(default_factory=set)

    def check(self, address) -> None:
        self.attempts.append(address)
        if not isinstance(address, tuple) or address[1] not in self.open_ports:
            raise ConnectionRefusedError(f"the test fence refused a connection to {address}")


@pytest.fixture
def fence(monkeypatch) -> Fence:
    fence = Fence()
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_create_connection = socket.create_connection

    def connect(sock, address):
        fence.check(address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        fence.check(address)
        return real_connect_ex(sock, address)

    def create_connection(address, *args, **kwargs):
        fence.check(address)
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return fence


@pytest.fixture
def resolver(monkeypatch) -> None:
    """getaddrinfo answers the names in NAMES; other hosts go to the real one."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in NAMES:
            return real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in NAMES[host]
        ]

    monkeypatch.setattr(netguard.socket, "getaddrinfo", getaddrinfo)


# Path -> where the origin redirects it; "/to?<quoted URL>" redirects to that URL.
REDIRECTS = {"/redirect": "/image.png", "/loop": "/loop"}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the http.server API)
        if self.path == "/slow.png":
            time.sleep(2)
        if self.path in REDIRECTS or self.path.startswith("/to?"):
            location = REDIRECTS.get(self.path) or unquote(self.path[4:])
            self.send_response(302)
            self.send_header("Location", location)
            self.end_headers()
            return
        body = PNG if self.path in ("/image.png", "/slow.png") else bytes(500_000)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # The server under test may give up first, as it should.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _running(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _port(url: str) -> int:
    return httpx.URL(url).port


@pytest.fixture
def origin():
    with _running(_Handler) as url:
        yield url


@pytest.fixture
def internal():
    """A second local server playing an internal service -> (its URL, the paths it served)."""
    seen: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"secret")

        def log_message(self, *args):
            pass

    with _running(Recorder) as url:
        yield url, seen


@pytest.mark.parametrize("send", SENDERS.values(), ids=list(SENDERS))
@pytest.mark.parametrize(("url", "reason"), ADDRESSES + MALFORMED)
def test_refused_urls_are_never_connected_to(fence, resolver, send, url, reason):
    with pytest.raises(Refused, match=re.escape(reason)) as refused:
        send(url)
    if (url, reason) in ADDRESSES:
        assert PUBLIC_MSG in str(refused.value) and "fetch_allow_hosts" in str(refused.value)
    assert fence.attempts == []


@pytest.mark.parametrize("url", PUBLIC)
def test_public_addresses_pass(fence, resolver, url):
    assert check_url(url, []) == httpx.URL(url)
    assert fence.attempts == []


def test_allow_list_by_name_and_network(resolver):
    check_url("http://localhost/x.png", ["localhost"])
    check_url("http://LocalHost/x.png", ["LOCALHOST."])
    check_url("http://10.1.2.3/x.png", ["10.0.0.0/8"])
    check_url("http://metadata.example/", ["100.64.0.0/10"])
    check_url("http://[::ffff:10.1.2.3]/", ["10.0.0.0/8"])
    check_url("http://[2002:a9fe:a9fe::]/", ["169.254.0.0/16"])
    check_url("http://[fd00::1]/", ["fd00::/8"])
    # A name on the list allows that name, not other spellings of its addresses.
    with pytest.raises(Refused, match="127.0.0.1 is a loopback"):
        check_url("http://127.0.0.1/x.png", ["localhost"])
    with pytest.raises(Refused, match="10.1.2.3 is a private"):
        check_url("http://10.1.2.3/x.png", ["192.168.0.0/16"])
    # Every address a name resolves to must pass, not just one.
    with pytest.raises(Refused, match="resolves to 10.0.0.1"):
        check_url("http://mixed.example/", ["192.168.0.0/16"])
    check_url("http://mixed.example/", ["10.0.0.0/8"])
    with pytest.raises(Refused, match="cannot resolve"):
        check_url("http://no-such-host.invalid/x.png", [])


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/secret",
        "http://[::ffff:127.0.0.1]:{port}/secret",
        "http://2130706433:{port}/secret",
        "http://169.254.169.254/latest/meta-data",
        "http://[2002:a9fe:a9fe::]/",
    ],
)
def test_redirects_to_internal_addresses_are_refused(fence, origin, internal, target):
    # The origin is allowed by name ("localhost"), the redirect names an address: refused.
    internal_url, seen = internal
    fence.open_ports.add(_port(origin))
    location = target.format(port=_port(internal_url))
    start = origin.replace("127.0.0.1", "localhost") + "/to?" + quote(location, safe="")
    with pytest.raises(Refused, match=PUBLIC_MSG):
        netguard.fetch(start, ["localhost"], 1_000_000, 5.0)
    assert fence.attempts, "the first hop was made"
    assert {a[1] for a in fence.attempts} == {_port(origin)}
    assert seen == []


def test_redirect_is_followed_when_its_target_is_allowed(fence, origin, internal):
    # The control for the test above: the same chain, the target allowed, reaches the service.
    internal_url, seen = internal
    fence.open_ports |= {_port(origin), _port(internal_url)}
    start = origin.replace("127.0.0.1", "localhost") + "/to?" + quote(f"{internal_url}/secret")
    assert netguard.fetch(start, ["localhost", "127.0.0.1/32"], 1_000_000, 5.0) == b"secret"
    assert seen == ["/secret"]


def test_bad_redirects_are_refused(fence, origin):
    fence.open_ports.add(_port(origin))
    with pytest.raises(Refused, match="fetching the URL failed: Invalid URL in location header"):
        netguard.fetch(f"{origin}/to?{quote('http://[::1')}", ["127.0.0.1"], 1_000_000, 5.0)
    with pytest.raises(Refused, match="more than 3 redirects"):
        netguard.fetch(f"{origin}/loop", ["127.0.0.1"], 1_000_000, 5.0)


def test_bad_urls_get_422_naming_the_field(serve, fence):
    live = serve()
    fence.open_ports.add(_port(live.url))
    cases = [
        ("http://100.100.100.200/latest/meta-data", "100.100.100.200 is a shared"),
        ("http://[2002:a9fe:a9fe::]/", "6to4 for 169.254.169.254"),
        ("http://[64:ff9b::a9fe:a9fe]/", "NAT64 for 169.254.169.254"),
        ("http://[fec0::1]/", "site-local"),
        ("http://2130706433/", "resolves to 127.0.0.1"),
        ("http://[::1", "not a valid URL"),
        ("http://h:99999/", "port 99999 is out of range"),
        ("http://１２７.0.0.1/", "not a valid URL"),
        ("http://a\tb/", "space or control character"),
        ("http://a\x00b/", "must not contain a NUL character"),  # refused with every text field
    ]
    for url, reason in cases:
        for name in ("input_image", "webhook_url"):
            r = live.submit({"prompt": "x", name: url})
            assert r.status_code == 422, (name, url, r.text)
            detail = r.json()["detail"][0]
            assert detail["loc"][-1] == name and reason in detail["msg"], (name, url, detail)
    assert {a[1] for a in fence.attempts} == {_port(live.url)}


def test_local_url_refused_by_default(serve, origin):
    live = serve()
    r = live.submit({"prompt": "x", "input_image": f"{origin}/image.png"})
    assert r.status_code == 422
    detail = r.json()["detail"][0]
    assert detail["loc"][-1] == "input_image" and "127.0.0.1" in detail["msg"]


def test_local_url_accepted_when_allow_listed(serve, origin):
    live = serve(
        fetch_allow_hosts=["127.0.0.1"], max_input_bytes=100_000, fetch_timeout_seconds=1.0
    )
    r = live.submit({"prompt": "x", "input_image": f"{origin}/redirect", "steps": 1})
    assert r.status_code == 200, r.text
    body = live.wait(r.json()["polling_url"])
    assert body["status"] == "Ready" and body["result"]["width"] == 64
    big = live.submit({"prompt": "x", "input_image": f"{origin}/big.png"})
    assert big.status_code == 422 and "100,000 byte limit" in big.json()["detail"][0]["msg"]
    slow = live.submit(
        {
            "prompt": "x",
            "input_image_2": f"{origin}/slow.png",
            "input_image": f"{origin}/image.png",
        }
    )
    assert slow.status_code == 422
    assert slow.json()["detail"][0]["loc"][-1] == "input_image_2"
    assert "took over 1 s" in slow.json()["detail"][0]["msg"]
