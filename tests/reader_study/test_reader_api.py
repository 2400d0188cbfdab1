"""The web API through FastAPI's test client: images only by ID, bad input is 4xx, answers persist and resume."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from sonosynth.errors import SonosynthError
from sonosynth.reader_study.app import create_app
from sonosynth.reader_study.store import StudyStore


def client_for(study_dir, **kwargs) -> TestClient:
    # raise_server_exceptions=False: a server error must show up as a 500 the test can see, not an exception.
    return TestClient(create_app(study_dir, **kwargs), raise_server_exceptions=False)


def register(client: TestClient, name: str) -> dict:
    response = client.post("/api/readers", json={"name": name})
    assert response.status_code == 200, response.text
    return response.json()


def answer(client: TestClient, reader: dict, position: int, label: str, **extra) -> dict:
    item = client.get(f"/api/readers/{reader['reader']}/items/{position}").json()
    response = client.put(f"/api/readers/{reader['reader']}/answers/{item['image_id']}", json={"answer": label, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_page_is_self_contained(study_dir):
    response = client_for(study_dir).get("/")
    assert response.status_code == 200
    page = response.text
    assert "<script>" in page and "<style>" in page
    # No external scripts, styles, fonts or images: nothing with a scheme or a protocol-relative URL.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_images_only_by_opaque_id(study_dir):
    client = client_for(study_dir)
    image_id = StudyStore(study_dir).key()["image_id"].iloc[0]
    response = client.get(f"/images/{image_id}")
    assert response.status_code == 200 and response.content[:4] == b"\x89PNG"
    assert response.headers["content-type"] == "image/png"
    assert "last-modified" not in response.headers and "etag" not in response.headers
    attempts = [
        "/images/../study.sqlite", "/images/..%2Fstudy.sqlite", "/images/%2e%2e%2fstudy.sqlite",
        "/images/..%2F..%2F..%2Fetc%2Fpasswd", "/images/....//....//etc/passwd", "/images/%2Fetc%2Fpasswd",
        f"/images/{image_id}.png", f"/images/{image_id}%00", f"/images/%2E%2E/images/{image_id}",
        "/images/study.sqlite",
        "/images/" + "0" * 16, "/images/" + "a" * 64, "/images/" + "a" * 500, "/study.sqlite", "/images/",
        "/images/%5C..%5Cstudy.sqlite", "/images/..\\study.sqlite",
    ]
    for url in attempts:
        response = client.get(url)
        assert response.status_code in (404, 422), (url, response.status_code)
        assert b"SQLite format" not in response.content and b"root:" not in response.content


def test_bad_input_is_4xx_never_500(study_dir):
    client = client_for(study_dir)
    reader = register(client, "Ann")
    token = reader["reader"]
    image_id = client.get(f"/api/readers/{token}/items/0").json()["image_id"]
    put = f"/api/readers/{token}/answers/{image_id}"
    cases = [
        ("post", "/api/readers", {"json": {"name": ""}}, 422),
        ("post", "/api/readers", {"json": {"name": "   "}}, 422),
        ("post", "/api/readers", {"json": {"name": "x" * 81}}, 422),
        ("post", "/api/readers", {"json": {"nom": "Ann"}}, 422),
        ("post", "/api/readers", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
        ("post", "/api/readers", {"json": ["Ann"]}, 422),
        ("get", "/api/readers/" + "0" * 32, {}, 404),
        ("get", "/api/readers/not-a-token", {}, 404),
        ("get", "/api/readers/" + "z" * 65, {}, 422),
        ("get", f"/api/readers/{token}/items/-1", {}, 422),
        ("get", f"/api/readers/{token}/items/abc", {}, 422),
        ("get", f"/api/readers/{token}/items/13", {}, 404),
        ("get", f"/api/readers/{token}/items/99999999999999999999", {}, 422),
        ("put", put, {"json": {"answer": "maybe"}}, 422),
        ("put", put, {"json": {"answer": "REAL"}}, 422),
        ("put", put, {"json": {}}, 422),
        ("put", put, {"json": {"answer": "real", "confidence": 0}}, 422),
        ("put", put, {"json": {"answer": "real", "confidence": 6}}, 422),
        ("put", put, {"json": {"answer": "real", "confidence": "high"}}, 422),
        ("put", put, {"json": {"answer": "real", "confidence": 2.5}}, 422),
        ("put", put, {"json": {"answer": "real", "note": "x" * 2001}}, 422),
        ("put", put, {"json": {"answer": "real", "seconds": -1}}, 422),
        ("put", put, {"json": {"answer": "real", "origin": "synthetic"}}, 422),
        ("put", put, {"content": b"real"}, 422),
        ("put", f"/api/readers/{token}/answers/" + "0" * 16, {"json": {"answer": "real"}}, 404),
        ("put", f"/api/readers/{token}/answers/..%2Fstudy.sqlite", {"json": {"answer": "real"}}, 404),
        ("put", f"/api/readers/{'0' * 32}/answers/{image_id}", {"json": {"answer": "real"}}, 404),
        ("delete", put, {}, 405),
    ]
    for method, url, kwargs, expected in cases:
        response = client.request(method.upper(), url, **kwargs)
        assert response.status_code == expected, (method, url, kwargs, response.status_code, response.text)
    # Nothing was recorded by all that.
    assert StudyStore(study_dir).answers().empty


def test_answers_in_order_and_back_one(study_dir):
    client = client_for(study_dir)
    reader = register(client, "Ann")
    token = reader["reader"]
    third = client.get(f"/api/readers/{token}/items/2").json()["image_id"]
    response = client.put(f"/api/readers/{token}/answers/{third}", json={"answer": "real"})
    assert response.status_code == 409  # cannot skip ahead
    state = answer(client, reader, 0, "synthetic", confidence=4, note="  comet tails look pasted  ")
    assert state["answered"] == 1 and state["total"] == 13 and not state["done"]
    # Back one image: it shows the earlier answer, and revising it does not move the reader on.
    item = client.get(f"/api/readers/{token}/items/0").json()
    assert item["answer"] == "synthetic" and item["confidence"] == 4 and item["note"] == "comet tails look pasted"
    assert answer(client, reader, 0, "real")["answered"] == 1
    answers = StudyStore(study_dir).answers()
    assert answers["answer"].tolist() == ["real"] and answers["revisions"].tolist() == [1]
    assert answers["confidence"].isna().all()
    # No response ever carries the key.
    assert set(item) == {"position", "image_id", "answer", "confidence", "note"}
    assert set(client.get("/api/study").json()) == {"name", "images"}


def test_resume_after_restart_and_per_reader_order(study_dir):
    client = client_for(study_dir)
    ann = register(client, "Ann")
    for position, label in enumerate(["real", "synthetic", "synthetic"]):
        answer(client, ann, position, label)
    seen = [client.get(f"/api/readers/{ann['reader']}/items/{p}").json()["image_id"] for p in range(13)]
    del client

    restarted = client_for(study_dir)
    assert restarted.get(f"/api/readers/{ann['reader']}").json()["answered"] == 3  # her token resumes her
    order = [restarted.get(f"/api/readers/{ann['reader']}/items/{p}").json() for p in range(13)]
    assert [o["image_id"] for o in order] == seen
    assert [o["answer"] for o in order[:4]] == ["real", "synthetic", "synthetic", None]
    bob = register(restarted, "Bob")
    assert bob["reader"] != ann["reader"] and bob["answered"] == 0
    bob_order = [restarted.get(f"/api/readers/{bob['reader']}/items/{p}").json()["image_id"] for p in range(13)]
    assert sorted(bob_order) == sorted(seen) and bob_order != seen
    for position in range(13):
        state = answer(restarted, bob, position, "real")
    assert state["done"] and state["answered"] == 13
    assert restarted.get(f"/api/readers/{bob['reader']}/items/13").status_code == 404


def test_host_check_and_not_a_study(study_dir, tmp_path):
    client = client_for(study_dir, allowed_hosts=["127.0.0.1", "localhost"])
    assert client.get("/", headers={"host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/", headers={"host": "evil.example:8000"}).status_code == 400
    with pytest.raises(SonosynthError, match="not a reader study"):
        create_app(tmp_path)


def test_typing_an_existing_name_never_hands_out_that_readers_token(study_dir):
    client = client_for(study_dir)
    ann = register(client, "Ann")
    answer(client, ann, 0, "real")
    for name in ("Ann", " Ann ", "Ann\t"):  # the same name, whitespace aside
        response = client.post("/api/readers", json={"name": name})
        assert response.status_code == 409 and ann["reader"] not in response.text
        assert "personal reader link" in response.json()["detail"]
    # Only the secret resumes the reading; the study owner can look it up (`reader-study link`).
    assert client.get(f"/api/readers/{ann['reader']}").json()["answered"] == 1
    assert StudyStore(study_dir).register_reader("Ann", resume_existing=True).token == ann["reader"]
    assert client.get("/").text.count("#reader=") >= 1  # the page shows the personal link


def test_request_bodies_are_capped_and_never_echoed(study_dir):
    from sonosynth.reader_study.app import MAX_BODY_BYTES

    client = client_for(study_dir)
    marker = "ECHO-ME-" * 20
    response = client.post("/api/readers", json={"name": marker})  # too long a name
    assert response.status_code == 422 and marker not in response.text and "name" in response.text
    response = client.post("/api/readers", content=b'{"nom": "' + marker.encode() + b'"}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 422 and marker not in response.text
    big = b'{"name": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
    response = client.post("/api/readers", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and len(response.content) < 200
    assert response.headers["x-content-type-options"] == "nosniff"

    def chunks():  # no Content-Length: the limit holds for a streamed body too
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536

    response = client.post("/api/readers", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert register(client, "Bea")["answered"] == 0  # normal requests still pass
