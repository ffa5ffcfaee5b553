"""The participant page's privacy ledger in headless chromium after two DP demo rounds (honest participants train
with DP-SGD at epsilon 8 per round under a budget of 20): the table equals GET /participants/{address}/privacy."""

from __future__ import annotations

from tests.dashboard.test_dashboard import rows, six, text


def test_participant_page_shows_the_privacy_ledger_as_the_api_does(served_dp, browser_for) -> None:
    submissions = served_dp.http.get("/rounds/1").json()["submissions"]
    ledgers = {s["participant"]: served_dp.http.get(f"/participants/{s['participant']}/privacy").json()
               for s in submissions}
    private = [a for a, led in ledgers.items() if led["rounds"]]
    public = [a for a, led in ledgers.items() if not led["rounds"]]
    assert len(private) == 3 and len(public) == 1  # the honest three use DP; the attacker does not
    browser = browser_for(served_dp.url)
    for address in private:
        led = ledgers[address]
        assert browser.open(f"/dashboard/participants/{address}").status == 200
        page = browser.page
        assert page.title().startswith("participant ") and "Privacy" not in page.title()
        assert page.locator("#privacy-ledger").count() == 1
        assert text(page, "#privacy-spent") == six(led["spent_epsilon"])
        assert text(page, "#privacy-budget") == six(led["budget_epsilon"]) == "20.000000"
        assert text(page, "#privacy-remaining") == six(led["remaining_epsilon"])
        assert led["remaining_micro"] == 20_000_000 - led["spent_micro"] > 0
        shown = rows(page, "#privacy-ledger tbody tr")
        assert [int(r["round"]) for r in shown] == [e["round_id"] for e in led["rounds"]] == [1, 2]
        for row, e in zip(shown, led["rounds"], strict=True):
            assert row["epsilon"] == six(e["epsilon"])
            assert 7.9 < e["epsilon"] <= 8.0
            assert row["total-epsilon"] == six(e["total_epsilon"])
            assert row["budget"] == six(e["budget_epsilon"])
    browser.screenshot("participant-privacy")
    assert browser.open(f"/dashboard/participants/{public[0]}").status == 200
    assert "no differentially private updates" in text(browser.page, "#privacy-ledger")
    assert text(browser.page, "#privacy-spent") == six(0.0)
    assert browser.foreign_requests() == []


def test_round_page_shows_each_committers_epsilon_as_the_api_does(served_dp, browser_for) -> None:
    view = served_dp.http.get("/rounds/2").json()
    browser = browser_for(served_dp.url)
    assert browser.open("/dashboard/rounds/2").status == 200
    shown = {r["participant"]: r for r in rows(browser.page, "#committers-table tbody tr")}
    assert set(shown) == {s["participant"] for s in view["submissions"]}
    private = [s for s in view["submissions"] if s["privacy"] is not None]
    assert len(private) == 3
    for s in view["submissions"]:
        expected = six(s["privacy"]["epsilon"]) if s["privacy"] else ""
        assert shown[s["participant"]]["epsilon"] == expected
    assert browser.foreign_requests() == []
