"""`fraudstream api` as separate processes over real HTTP and a real broker, with a real
scorer process behind them: the score round trip, the deadline, labels, auth, limits, and
two replicas each getting their own replies. One broker, one scorer and three API processes
are shared by the whole module (starting a scorer costs its compile warm-up)."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import jwt
import orjson
import pytest

from fraudstream.api.auth import AUDIENCE, ISSUER, hash_secret
from fraudstream.benchmark.model import publish_trained_model
from infra.broker import free_port
from infra.config import Settings
from tests.conftest import TEST_SIGNING_KEY, TEST_VERIFY_KEY, isolated_settings, settings_env
from tests.kafka_helpers import fraudstream_process, read_topic, wait_for

pytestmark = pytest.mark.integration

TOKEN_KEY = "test-token-key-" + uuid.uuid4().hex
CLIENTS = {
    # name: (scopes, rate_per_s, burst)
    "checkout": (["score"], None, None),
    "analyst": (["label"], None, None),
    "ops": (["admin"], None, None),
    "all": (["score", "label", "admin"], None, None),
    "limited": (["score"], 0.5, 3),
}


def secret_of(client: str) -> str:
    return f"secret-of-{client}"


def _tx(tid: str | None = None, **changes: object) -> dict[str, object]:
    tx: dict[str, object] = {
        "transaction_id": tid or f"api-{uuid.uuid4().hex[:12]}",
        "card_id": "card-api",
        "amount": 42.0,
        "merchant_category": "grocery",
        "timestamp": "2026-12-07T12:00:00Z",
    }
    tx.update(changes)
    return tx


class Api:
    """One running `fraudstream api` process."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=30)
        self._tokens: dict[str, str] = {}

    def token(self, client: str) -> str:
        if client not in self._tokens:
            r = self.http.post(
                "/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": client,
                    "client_secret": secret_of(client),
                },
            )
            assert r.status_code == 200, r.text
            self._tokens[client] = r.json()["access_token"]
        return self._tokens[client]

    def as_(self, client: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(client)}"}

    def wait_healthy(self, proc: object, log: Path, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]  # type: ignore[attr-defined]
            try:
                if self.http.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"api at {self.base} never answered: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def api_settings(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return isolated_settings(
        bootstrap,
        tmp_path_factory.mktemp("api"),
        # Module-scoped: the per-test key fixture is not active yet.
        snapshot_signing_key=TEST_SIGNING_KEY,
        snapshot_verify_key=TEST_VERIFY_KEY,
    )


def _api_env(settings: Settings, port: int, **extra: str) -> dict[str, str]:
    clients = {
        name: {
            "secret_sha256": hash_secret(secret_of(name)),
            "scopes": scopes,
            **({"rate_per_s": rate, "burst": burst} if rate else {}),
        }
        for name, (scopes, rate, burst) in CLIENTS.items()
    }
    return {
        **settings_env(settings),
        "FRAUDSTREAM_API__PORT": str(port),
        "FRAUDSTREAM_API__TOKEN_KEY": TOKEN_KEY,
        "FRAUDSTREAM_API__CLIENTS": orjson.dumps(clients).decode(),
        "FRAUDSTREAM_API__MAX_BODY_BYTES": "4096",
        "FRAUDSTREAM_API__MAX_BATCH_LABELS": "10",
        **extra,
    }


@pytest.fixture(scope="module")
def stack(
    api_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Api]]:
    """A scorer and three API processes: `a` and `b` (replicas), `late` (1 ms deadline)."""
    logs = tmp_path_factory.mktemp("api-logs")
    env = settings_env(api_settings)
    with ExitStack() as stack:
        stack.enter_context(
            fraudstream_process(["score", "--metrics-port", "0"], env, logs / "score.log")
        )
        apis: dict[str, Api] = {}
        procs = {}
        for name, extra in (("a", {}), ("b", {}), ("late", {"FRAUDSTREAM_API__DEADLINE_MS": "1"})):
            port = free_port()
            procs[name] = stack.enter_context(
                fraudstream_process(
                    ["api", "--host", "127.0.0.1"],
                    _api_env(api_settings, port, **extra),
                    logs / f"api-{name}.log",
                )
            )
            apis[name] = Api(f"http://127.0.0.1:{port}")
        for name, api in apis.items():
            api.wait_healthy(procs[name], logs / f"api-{name}.log")
        # The scorer answers once its warm-up is done: wait for a first Score.
        probe = _tx()
        a = apis["a"]
        assert a.http.post("/v1/transactions?wait=false", json=probe, headers=a.as_("checkout"))
        deadline = time.monotonic() + 240
        while (
            a.http.get(
                f"/v1/scores/{probe['transaction_id']}", headers=a.as_("checkout")
            ).status_code
            != 200
        ):
            assert time.monotonic() < deadline, (logs / "score.log").read_text()[-3000:]
            time.sleep(0.2)
        yield apis
        for api in apis.values():
            api.http.close()


def test_readyz_waits_for_a_model_and_model_reports_it(
    stack: dict[str, Api], api_settings: Settings
) -> None:
    a = stack["a"]
    r = a.http.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"] == {"broker": True, "score_reader": True, "model": False}
    assert a.http.get("/v1/model", headers=a.as_("checkout")).json()["error"] == "no_model"

    publish_trained_model(api_settings, api_settings.topics.model_updates, n=2000)
    deadline = time.monotonic() + 60
    while (r := a.http.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.1)
    model = a.http.get("/v1/model", headers=a.as_("analyst")).json()
    assert model["version"] == 1
    assert model["labels_learned"] == 2000
    assert model["lineage"]["origin"] == "trainer"
    assert model["name"] == api_settings.model.name
    # No registry version was logged from it (no trainer here): the lineage says so.
    assert model["registry"] == {
        "name": api_settings.model.name,
        "version": None,
        "latest_version": None,
        "latest_snapshot_version": None,
        "champion_version": None,
    }


def test_score_round_trip_answers_the_scorers_score(stack: dict[str, Api]) -> None:
    a = stack["a"]
    tx = _tx(amount=1234.5)
    r = a.http.post("/v1/transactions", json=tx, headers=a.as_("checkout"))
    assert r.status_code == 200, r.text
    score = r.json()
    assert score["transaction_id"] == tx["transaction_id"]
    assert score["card_id"] == tx["card_id"]
    assert 0.0 <= score["score"] <= 1.0
    assert score["features"]["amount"] == 1234.5
    # The same Score any replica can return later: once its own reader of `scores` has it
    # (404 "retry shortly" until then, as documented).
    b = stack["b"]

    def from_b() -> httpx.Response | None:
        got = b.http.get(f"/v1/scores/{tx['transaction_id']}", headers=b.as_("all"))
        return got if got.status_code != 404 else None

    again = wait_for("replica b to have the Score", from_b, timeout_s=10)
    assert again.status_code == 200 and again.json() == score


def test_past_the_deadline_answers_202_then_the_score_is_fetched(stack: dict[str, Api]) -> None:
    late = stack["late"]
    tx = _tx()
    r = late.http.post("/v1/transactions", json=tx, headers=late.as_("checkout"))
    assert r.status_code == 202, r.text
    url = r.json()["score_url"]
    assert r.headers["location"] == url == f"/v1/scores/{tx['transaction_id']}"
    deadline = time.monotonic() + 30
    while (got := late.http.get(url, headers=late.as_("checkout"))).status_code == 404:
        assert got.json()["error"] == "score_not_found"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert got.status_code == 200 and got.json()["transaction_id"] == tx["transaction_id"]


def test_wait_false_answers_202_without_waiting(stack: dict[str, Api]) -> None:
    a = stack["a"]
    tx = _tx()
    r = a.http.post("/v1/transactions?wait=false", json=tx, headers=a.as_("checkout"))
    assert r.status_code == 202
    assert r.json() == {
        "transaction_id": tx["transaction_id"],
        "status": "accepted",
        "score_url": f"/v1/scores/{tx['transaction_id']}",
    }


def test_two_api_processes_each_get_their_own_replies(stack: dict[str, Api]) -> None:
    results: dict[str, list[tuple[str, int, str | None]]] = {"a": [], "b": []}

    def post_many(name: str) -> None:
        api = stack[name]
        with httpx.Client(base_url=api.base, timeout=30) as http:
            for _ in range(40):
                tx = _tx()
                r = http.post("/v1/transactions", json=tx, headers=api.as_("checkout"))
                got = r.json().get("transaction_id") if r.status_code == 200 else None
                results[name].append((str(tx["transaction_id"]), r.status_code, got))

    threads = [threading.Thread(target=post_many, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("a", "b"):
        assert len(results[name]) == 40
        for sent, status, got in results[name]:
            assert (status, got) == (200, sent), f"replica {name}"


def test_labels_single_and_batch_carry_the_callers_client_id_as_source(
    stack: dict[str, Api], api_settings: Settings
) -> None:
    a = stack["a"]
    one = {"transaction_id": f"lab-{uuid.uuid4().hex[:8]}", "is_fraud": True, "source": "forged"}
    batch = [
        {"transaction_id": f"lab-{uuid.uuid4().hex[:8]}", "is_fraud": i % 2 == 0} for i in range(5)
    ]
    r = a.http.post("/v1/labels", json=one, headers=a.as_("analyst"))
    assert r.status_code == 202 and r.json() == {"accepted": 1, "source": "analyst"}
    r = a.http.post("/v1/labels", json={"labels": batch}, headers=a.as_("all"))
    assert r.status_code == 202 and r.json() == {"accepted": 5, "source": "all"}

    wanted = {one["transaction_id"], *(b["transaction_id"] for b in batch)}
    msgs = read_topic(
        api_settings,
        api_settings.topics.labels,
        lambda ms: wanted <= {orjson.loads(m.value())["transaction_id"] for m in ms},
        30,
    )
    sources = {
        orjson.loads(m.value())["transaction_id"]: orjson.loads(m.value())["source"] for m in msgs
    }
    assert sources[one["transaction_id"]] == "analyst"
    assert {sources[b["transaction_id"]] for b in batch} == {"all"}


def test_each_scope_allows_its_operations_only(stack: dict[str, Api]) -> None:
    a = stack["a"]
    label = {"transaction_id": "scope-1", "is_fraud": False}
    cases = [
        ("checkout", "post", "/v1/labels", label, 403),
        ("ops", "post", "/v1/labels", label, 403),
        ("analyst", "post", "/v1/labels", label, 202),
        ("analyst", "post", "/v1/transactions?wait=false", _tx(), 403),
        ("ops", "post", "/v1/transactions?wait=false", _tx(), 403),
        ("checkout", "post", "/v1/model/rollback", {"version": 1}, 403),
        ("analyst", "post", "/v1/model/rollback", {"version": 1}, 403),
        ("checkout", "get", "/v1/scores/nothing-such", None, 404),
        ("analyst", "get", "/v1/scores/nothing-such", None, 403),
    ]
    for client, method, path, body, status in cases:
        r = a.http.request(method, path, json=body, headers=a.as_(client))
        assert r.status_code == status, (client, path, r.text)
        if status == 403:
            assert r.json()["error"] == "insufficient_scope"
    # Admin reaches the registry (the same code as `fraudstream model rollback`), which has
    # no such version here: refused with the reason.
    r = a.http.post("/v1/model/rollback", json={"version": 99}, headers=a.as_("ops"))
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "rollback_refused"


def test_bad_credentials_and_tokens_are_refused_with_json_401(stack: dict[str, Api]) -> None:
    a = stack["a"]
    r = a.http.post(
        "/token",
        data={"grant_type": "client_credentials", "client_id": "all", "client_secret": "wrong"},
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = a.http.post(
        "/token", auth=("all", secret_of("all")), data={"grant_type": "client_credentials"}
    )
    assert r.status_code == 200 and r.json()["scope"] == "score label admin"

    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "all", "scope": "score", "iat": now}
    forged = jwt.encode({**claims, "exp": now + 60}, "another-key-" + "x" * 32, algorithm="HS256")
    expired = jwt.encode({**claims, "exp": now - 60}, TOKEN_KEY, algorithm="HS256")
    for headers, code in (
        ({}, "unauthenticated"),
        ({"Authorization": "Bearer not-a-token"}, "invalid_token"),
        ({"Authorization": f"Bearer {forged}"}, "invalid_token"),
        ({"Authorization": f"Bearer {expired}"}, "invalid_token"),
    ):
        r = a.http.post("/v1/transactions", json=_tx(), headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == code
        assert "detail" in r.json()
    # A token from another replica with the same key is honoured.
    b = stack["b"]
    assert b.http.get("/v1/scores/x", headers=a.as_("checkout")).status_code == 404


def test_invalid_transactions_get_422_with_the_field_and_are_not_published(
    stack: dict[str, Api], api_settings: Settings
) -> None:
    a = stack["a"]
    h = a.as_("checkout")
    bad = [
        (orjson.dumps(_tx("bad-1", amount="12")), "invalid", "amount"),
        (
            orjson.dumps({k: v for k, v in _tx("bad-2").items() if k != "card_id"}),
            "invalid",
            "card_id",
        ),
        (orjson.dumps(_tx("bad-3", timestamp="yesterday")), "invalid", "timestamp"),
        (b'{"transaction_id": "bad-4", ', "not_json", None),
        (b"[1, 2]", "not_object", None),
        (b"", "empty", None),
    ]
    for body, reason, field in bad:
        r = a.http.post("/v1/transactions", content=body, headers=h)
        assert r.status_code == 422, r.text
        err = r.json()
        assert err["error"] == "invalid_transaction" and err["reason"] == reason
        assert err.get("field") == field
    good = _tx()
    assert a.http.post("/v1/transactions?wait=false", json=good, headers=h).status_code == 202
    msgs = read_topic(
        api_settings,
        api_settings.topics.transactions,
        lambda ms: any(
            orjson.loads(m.value())["transaction_id"] == good["transaction_id"] for m in ms
        ),
        30,
    )
    published = {orjson.loads(m.value())["transaction_id"] for m in msgs}
    assert not published & {"bad-1", "bad-2", "bad-3"}

    r = a.http.post(
        "/v1/labels",
        json={
            "labels": [
                {"transaction_id": "x", "is_fraud": True},
                {"transaction_id": "y", "is_fraud": "yes"},
            ]
        },
        headers=a.as_("analyst"),
    )
    assert r.status_code == 422 and r.json()["field"] == "labels.1.is_fraud"
    r = a.http.post(
        "/v1/labels",
        json={"labels": [{"transaction_id": "x", "is_fraud": True}] * 11},
        headers=a.as_("analyst"),
    )
    assert r.status_code == 422 and r.json()["field"] == "labels"


def test_oversized_bodies_are_refused_before_parsing(stack: dict[str, Api]) -> None:
    a = stack["a"]
    h = a.as_("all")
    big = b'{"labels": [' + b" " * 5000 + b"]}"
    r = a.http.post("/v1/labels", content=big, headers=h)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    # No Content-Length (chunked): refused once the bytes received pass the limit.
    r = a.http.post("/v1/transactions", content=chunks(), headers=h)
    assert r.status_code == 413 and r.json()["limit_bytes"] == 4096


def test_a_client_over_its_rate_gets_429_with_retry_after(stack: dict[str, Api]) -> None:
    b = stack["b"]
    h = b.as_("limited")  # the token request took one of its 3 burst tokens
    statuses = [b.http.get("/v1/scores/none", headers=h).status_code for _ in range(4)]
    assert 429 in statuses and statuses[0] == 404
    r = b.http.get("/v1/scores/none", headers=h)
    assert r.status_code == 429
    assert r.json()["error"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
    # Other clients are not limited by it.
    assert b.http.get("/v1/scores/none", headers=b.as_("checkout")).status_code == 404


def test_metrics_count_requests_by_route_and_status(stack: dict[str, Api]) -> None:
    a = stack["a"]
    a.http.get("/v1/scores/metrics-probe", headers=a.as_("checkout"))
    text = a.http.get("/metrics").text
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("fraudstream_api_requests_total{")
        and 'route="/v1/scores/{transaction_id}"' in ln
        and 'status="404"' in ln
    )
    assert float(line.split()[-1]) >= 1
    assert "fraudstream_api_request_seconds_bucket{" in text
    assert 'fraudstream_api_score_replies_total{outcome="scored"}' in text


def test_docs_page_renders_every_operation_offline_in_headless_chromium(
    stack: dict[str, Api], tmp_path: Path
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip(
            "Debian's chromium is not installed (apt-get install -y chromium): "
            "the /docs page is not checked in a browser"
        )
    a = stack["a"]
    spec = a.http.get("/openapi.json").json()
    operations = {path for path in spec["paths"]}
    body = spec["paths"]["/v1/transactions"]["post"]["requestBody"]["content"]
    assert body["application/json"]["examples"]["transaction"]["value"]["transaction_id"]
    page = a.http.get("/docs").text
    assert "/docs/assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()

    # The browser may not reach anything but the API: no network use of its own, and the
    # page's assets come from the API process (no CDN).
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"{a.base}/docs",
        ],
        capture_output=True,
        timeout=120,
    )
    dom = result.stdout.decode()
    rendered = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert rendered == operations, (rendered, result.stderr.decode()[-2000:])
