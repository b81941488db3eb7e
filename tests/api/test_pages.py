"""The browser pages: the redirect, the dashboard and the API docs, every asset local."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from service.api.pages import STATIC_DIR

ASSET = re.compile(r'(?:src|href)="([^"#]+)"')
URL = re.compile(r'(?:src|href|url)\s*[=:(]\s*["\']((?:https?:)?//[^"\']+)["\']')


def assets(html: str) -> list[str]:
    return [a for a in ASSET.findall(html) if not a.startswith("data:")]


def test_the_root_redirects_to_the_dashboard_whatever_the_host(client: TestClient) -> None:
    r = client.get("/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == "/dashboard"
    assert client.get("/").url.path == "/dashboard"


def test_the_dashboard_and_every_asset_it_names_are_served(client: TestClient) -> None:
    r = client.get("/dashboard")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    names = assets(r.text)
    assert "/static/vendor/uplot/uPlot.iife.min.js" in names
    assert "/static/dashboard/main.js" in names
    for name in names:
        assert name.startswith("/"), f"{name} is not served by the service"
        assert client.get(name).status_code == 200, name
    # the modules import each other by relative path: each of those is there too
    for module in (STATIC_DIR / "dashboard").glob("*.js"):
        for imported in re.findall(r'from "\./([^"]+)"', module.read_text()):
            assert (module.parent / imported).is_file(), f"{module.name} imports {imported}"


@pytest.mark.parametrize(
    ("path", "needs"),
    [
        ("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]),
        ("/redoc", ["redoc.standalone.js"]),
    ],
)
def test_the_api_docs_load_nothing_from_elsewhere(
    client: TestClient, path: str, needs: list[str]
) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert URL.findall(r.text) == []  # no CDN, no Google fonts
    names = assets(r.text)
    for need in needs:
        assert any(n.endswith("/" + need) for n in names), (need, names)
    for name in names:
        assert client.get(name).status_code == 200, name
    assert "/openapi.json" in r.text


def test_the_pages_are_not_api_operations(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/dashboard", "/docs", "/redoc"} & set(paths)


def test_assets_are_compressed_for_clients_that_accept_it(client: TestClient) -> None:
    path = "/static/vendor/swagger-ui/swagger-ui-bundle.js"
    size = (STATIC_DIR / "vendor/swagger-ui/swagger-ui-bundle.js").stat().st_size
    r = client.get(path, headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert r.num_bytes_downloaded < size / 2
    assert len(r.content) == size  # decoded by the client
    plain = client.get(path, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers


def test_static_files_stay_inside_their_folder(client: TestClient) -> None:
    assert client.get("/static/dashboard/nothing.js").status_code == 404
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/%2e%2e/app.py").status_code == 404


def test_every_vendored_library_ships_with_its_licence() -> None:
    vendor = STATIC_DIR / "vendor"
    for library in (p for p in vendor.iterdir() if p.is_dir()):
        assert (library / "LICENSE").is_file(), library.name
        assert library.name in (vendor / "VERSIONS.txt").read_text()
