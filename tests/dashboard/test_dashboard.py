"""Every dashboard page in headless chromium after three demo rounds: the numbers shown equal the API's JSON for the
same objects, plots are drawn from them, the audit button re-runs the audit, a tampered blob shows as a failed
check, nothing is requested from outside the server, and bad ids answer 4xx HTML. Screenshots: docs/screenshots/."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import pytest

TOKEN = Decimal(10) ** 18

ROWS = """(rows) => rows.map((tr) => ({
    ...Object.fromEntries([...tr.querySelectorAll('td[class]')]
        .map((td) => [td.className.split(' ').pop(), td.innerText.trim()])),
    ...tr.dataset}))"""


def rows(page: Any, selector: str) -> list[dict[str, str]]:
    """Each table row as {last class of a cell: its text, plus the row's data-* attributes}."""
    return page.eval_on_selector_all(selector, ROWS)  # type: ignore[no-any-return]


def wei(text: str) -> int:
    """A token amount as the page shows it (exact decimal FED) back in base units."""
    value = Decimal(text) * TOKEN
    assert value == value.to_integral_value(), text
    return int(value)


def six(x: float | None) -> str:
    return "" if x is None else f"{x:.6f}"


def text(page: Any, selector: str) -> str:
    return page.inner_text(selector).strip()  # type: ignore[no-any-return]


def test_overview_shows_the_api_s_chain_contracts_model_rounds_minted_and_last_audit(served, browser) -> None:
    health = served.http.get("/health").json()
    model = served.http.get("/models/current").json()
    rounds = served.http.get("/rounds").json()
    assert browser.open("/dashboard").status == 200
    page = browser.page
    assert int(text(page, "#chain-id")) == health["chain_id"]
    assert text(page, "#stack") == "embedded"
    assert {r["contract"]: r["address"] for r in rows(page, "#contracts tbody tr")} == health["contracts"]
    assert text(page, "#model-hash") == model["hash"]
    assert int(text(page, "#model-rounds")) == model["rounds"] == 3
    assert int(text(page, "#round-count")) == len(rounds) == 3
    assert int(text(page, "#finalized-count")) == sum(r["finalized"] for r in rounds)
    assert wei(text(page, "#total-minted")) == sum(int(r["minted"]) for r in rounds) > 0
    # the demo's own audit of every round, until an audit runs here
    assert text(page, "#audit-verdict") == "verified"
    assert {int(r["round"]) for r in rows(page, "#audit-checks tbody tr")} == {1, 2, 3}
    assert page.get_attribute("#plot-accuracy", "data-drawn") == "3"
    assert page.locator("#plot-accuracy canvas").count() == 1
    browser.screenshot("overview")

    page.click("#rerun-audit")
    page.wait_for_selector("#rerun-audit[data-runs='1']")
    audit = served.http.get("/audit/rounds").json()
    shown = rows(page, "#audit-checks tbody tr")
    assert [(int(r["round"]), r["check"], r["result"], r["detail"]) for r in shown] == [
        (a["round"], c["name"], "ok" if c["ok"] else "FAILED", c["detail"]) for a in audit["rounds"] for c in a["checks"]]
    assert text(page, "#audit-verdict") == "verified"
    assert browser.foreign_requests() == []


def test_rounds_table_equals_the_rounds_json(served, browser) -> None:
    rounds = served.http.get("/rounds").json()
    browser.open("/dashboard/rounds")
    shown = rows(browser.page, "#rounds tbody tr")
    assert [int(r["round"]) for r in shown] == [r["round"] for r in rounds]
    for row, r in zip(shown, rounds, strict=True):
        assert int(row["submissions"]) == r["submissions"]
        assert int(row["accepted"]) == r["accepted"]
        assert wei(row["minted"]) == int(r["minted"])
        assert row["state"] == "finalized"
        assert 0.0 < float(row["accuracy"]) <= 1.0
    assert browser.page.get_attribute("#plot-accuracy", "data-drawn") == str(len(rounds))
    browser.screenshot("rounds")
    assert browser.foreign_requests() == []


def test_round_page_shows_every_committer_the_rule_and_the_audit_as_the_api_does(served, browser) -> None:
    view = served.http.get("/rounds/2").json()
    audit = served.http.get("/audit/rounds/2").json()
    assert browser.open("/dashboard/rounds/2").status == 200
    page = browser.page
    assert text(page, "#round-state") == view["state"] == "finalized"
    assert wei(text(page, "#round-minted")) == int(view["minted"])
    shown = rows(page, "#committers-table tbody tr")
    assert len(shown) == len(view["submissions"]) == 6
    recomputed = {v["participant"]: v for v in audit["rounds"][0]["verdicts"]}
    assert sorted(recomputed) == sorted(s["participant"] for s in view["submissions"])
    participant = served.http.get(f"/participants/{view['submissions'][0]['participant']}").json()
    for row, s in zip(shown, view["submissions"], strict=True):
        assert row["participant"] == s["participant"]
        assert row["status"] == s["status"]
        assert row["score"] == six(s["score"])
        assert wei(row["reward"]) == int(s["reward"])
        assert row["reputation"] == six(s["reputation_after"])
        assert row["reason"].startswith("accepted" if s["status"] == "ACCEPTED" else "rejected")
        why = recomputed[s["participant"]]  # the audit's re-derived verdict: its reason and who shares the score
        assert row["shared"] == str(why["group_size"]) and why["status"] == s["status"]
        assert row["reason"].endswith(f": {why['detail']}") if why["detail"] else row["reason"].count(":") == 1
    assert {r["status"] for r in shown} >= {"ACCEPTED"} and len({r["status"] for r in shown}) > 1
    # reputation after the round, as the participant's own history says
    mine = next(r for r in participant["rounds"] if r["round"] == 2)
    assert shown[0]["reputation"] == six(mine["reputation_after"])
    # the rule document the round committed to
    rule = {r["field"]: r["value"] for r in rows(page, "#rule tbody tr")}
    assert rule["aggregator"] == view["rule"]["aggregator"]
    assert float(rule["reject_norm_ratio"]) == view["rule"]["reject_norm_ratio"]
    assert rule["reward_budget"] == view["rule"]["reward_budget"]
    # a blob link serves the bytes committed on-chain
    href = page.get_attribute(f"#committers-table tr[data-participant='{view['submissions'][0]['participant']}'] "
                              "td.blob a", "href")
    blob = served.http.get(href)
    assert blob.status_code == 200
    assert "0x" + hashlib.sha256(blob.content).hexdigest() == view["submissions"][0]["content_hash"]
    # the per-check audit, then the button re-runs it
    expected = [(2, c["name"], "ok" if c["ok"] else "FAILED", c["detail"]) for c in audit["rounds"][0]["checks"]]
    as_shown = lambda: [(int(r["round"]), r["check"], r["result"], r["detail"])  # noqa: E731
                        for r in rows(page, "#audit-checks tbody tr")]
    assert as_shown() == expected
    assert {c for _, c, _, _ in expected} >= {"rule", "blobs", "scores", "decisions", "aggregate", "rewards"}
    before = text(page, "#audit-ran-at")
    page.click("#rerun-audit")
    page.wait_for_selector("#rerun-audit[data-runs='1']")
    assert text(page, "#audit-verdict") == "verified"
    assert as_shown() == expected
    assert text(page, "#audit-ran-at") >= before
    browser.screenshot("round")
    assert browser.foreign_requests() == []


def test_participant_page_plots_and_lists_reputation_and_rewards_as_the_api_does(served, browser) -> None:
    address = served.http.get("/rounds/1").json()["submissions"][-1]["participant"]
    p = served.http.get(f"/participants/{address}").json()
    assert browser.open(f"/dashboard/participants/{address.lower()}").status == 200
    page = browser.page
    assert text(page, "#participant-address") == p["address"]
    assert text(page, "#participant-status") == p["status"] == "active"
    assert text(page, "#participant-admitted") == "yes" and p["admitted"] is True  # an open registry admits all
    assert text(page, "#participant-reputation") == six(p["reputation"])
    assert wei(text(page, "#participant-balance")) == int(p["balance"])
    assert wei(text(page, "#participant-earned")) == sum(int(r["reward"]) for r in p["rounds"])
    shown = rows(page, "#history tbody tr")
    assert [int(r["round"]) for r in shown] == [r["round"] for r in p["rounds"]] == [1, 2, 3]
    for row, r in zip(shown, p["rounds"], strict=True):
        assert row["status"] == r["status"]
        assert row["score"] == six(r["score"])
        assert wei(row["reward"]) == int(r["reward"])
        assert row["reputation"] == six(r["reputation_after"])
    for plot in ("#plot-reputation", "#plot-reward"):
        assert page.get_attribute(plot, "data-drawn") == "3"
        assert page.locator(f"{plot} canvas").count() == 1
    browser.screenshot("participant")
    assert browser.foreign_requests() == []


def test_lineage_page_chains_the_model_hashes_of_the_api(served, browser) -> None:
    lineage = served.http.get("/models/lineage").json()
    browser.open("/dashboard/lineage")
    items = browser.page.eval_on_selector_all(
        "#lineage li", "(lis) => lis.map((li) => ({round: li.dataset.round, cls: li.className,"
                       " hash: li.querySelector('.hash').innerText.trim()}))")
    assert [(int(i["round"]), i["hash"]) for i in items] == [(m["round"], m["model_hash"]) for m in lineage]
    assert len(items) == 4 and all(i["cls"] == "ok" for i in items)
    assert all(m["base_model_hash"] == prev["model_hash"] for prev, m in zip(lineage, lineage[1:]))
    browser.screenshot("lineage")
    assert browser.foreign_requests() == []


def test_a_tampered_update_blob_shows_as_a_failed_blobs_check_on_the_round_page(served, browser) -> None:
    view = served.http.get("/rounds/3").json()
    victim = next(s for s in view["submissions"] if s["status"] == "ACCEPTED")
    digest = victim["cid"].rsplit(":", 1)[1]
    path = served.state_dir / "blobs" / "sha256" / digest[:2] / digest
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 0x01]))
    try:
        browser.open("/dashboard/rounds/3")
        page = browser.page
        assert text(page, "#audit-verdict") == "FAILED"
        blobs = page.locator("#audit-checks tr[data-check='blobs']")
        assert blobs.get_attribute("class") == "failed"
        assert text(page, "#audit-checks tr[data-check='blobs'] td.result") == "FAILED"
        assert victim["participant"] in text(page, "#audit-checks tr[data-check='blobs'] td.detail")
        assert served.http.get("/audit/rounds/3").json()["verified"] is False
        href = page.get_attribute(f"#committers-table tr[data-participant='{victim['participant']}'] td.blob a", "href")
        assert served.http.get(href).status_code == 422  # the blob route refuses bytes that miss their hash
        browser.screenshot("round-tampered")
        assert browser.foreign_requests() == []
    finally:
        path.write_bytes(original)
    page.click("#rerun-audit")
    page.wait_for_selector("#rerun-audit[data-runs='1']")
    assert text(page, "#audit-verdict") == "verified"


@pytest.mark.parametrize(("path", "status"), [
    ("/dashboard/rounds/99", 404),
    ("/dashboard/rounds/0", 422),
    ("/dashboard/rounds/-1", 422),
    ("/dashboard/rounds/1e3", 422),
    ("/dashboard/rounds/99999999999999999999", 422),
    ("/dashboard/participants/0x12", 422),
    ("/dashboard/participants/0x" + "zz" * 20, 422),
    ("/dashboard/participants/0x" + "00" * 19 + "01", 404),
    ("/dashboard/nope", 404),
])
def test_unknown_or_malformed_ids_answer_4xx_html_not_500(served, path: str, status: int) -> None:
    answer = served.http.get(path)
    assert answer.status_code == status, answer.text[:300]
    if path.startswith(("/dashboard/rounds", "/dashboard/participants")):
        assert answer.headers["content-type"].startswith("text/html")
        assert f'data-status="{status}"' in answer.text


def test_pages_stay_out_of_the_openapi_schema_and_forbid_foreign_loads(served) -> None:
    paths = served.http.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/dashboard") or p == "/"]
    assert "/rounds/{round_id}" in paths
    page = served.http.get("/dashboard")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert served.http.get("/", follow_redirects=False).headers["location"] == "/dashboard"
    assert served.http.get("/dashboard/static/vendor/uplot-1.6.32/uPlot.iife.min.js").status_code == 200


def test_only_evaluations_of_the_models_on_chain_are_shown(served, browser) -> None:
    evaluations = served.state_dir / "evaluations.jsonl"
    original = evaluations.read_text()
    recorded = {int(line.split('"round": ')[1].split(",")[0]): line for line in original.splitlines()}
    assert sorted(recorded) == [1, 2, 3]
    browser.open("/dashboard/rounds")
    before = {r["round"]: r["accuracy"] for r in rows(browser.page, "#rounds tbody tr")}
    try:
        evaluations.write_text(original + "not json\n"
                               + '{"round": 1, "model_hash": "0x' + "ab" * 32 + '", "accuracy": 0.01}\n'
                               + '{"round": 2, "accuracy": 0.02}\n')
        browser.open("/dashboard/rounds")
        assert {r["round"]: r["accuracy"] for r in rows(browser.page, "#rounds tbody tr")} == before
        evaluations.write_text("")
        browser.open("/dashboard/rounds")
        assert {r["accuracy"] for r in rows(browser.page, "#rounds tbody tr")} == {""}
        assert browser.page.locator("#plot-accuracy").count() == 0
    finally:
        evaluations.write_text(original)
