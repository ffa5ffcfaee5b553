"""Gas of the stake paths on the embedded EVM (py-evm receipts): `.venv/bin/python scripts/stake_gas.py`."""

from __future__ import annotations

import hashlib

from eth_utils import keccak

from chain.accounts import devnet_wallets
from chain.deploy import deploy_all
from chain.embedded import advance_time, embedded_transactor, embedded_web3
from chain.lists import ListHeader, ResultEntry, ResultList
from fedledger.wiring import default_stake_params

DAY = 86_400
BUDGET = 10**20
DECAY = 800_000


def ref(label: str) -> tuple[bytes, str]:
    return keccak(text=label), f"cid-{label}"


def main() -> None:
    w3 = embedded_web3()
    tx = embedded_transactor(w3)
    w = devnet_wallets(tx, 9, ["admin", "operator", "aggregator", "outsider"] + [f"p/{i}" for i in range(4)])
    d = deploy_all(tx, admin=w["admin"], operator=w["operator"], aggregator=w["aggregator"],
                   stake=default_stake_params())
    registry, rounds, op, agg = d.registry, d.rounds, w["operator"], w["aggregator"]
    ps = sorted((w[f"p/{i}"] for i in range(4)), key=lambda a: int(a, 16))
    stake = registry.min_stake()

    def now() -> int:
        return int(w3.eth.get_block("latest")["timestamp"])

    def open_round() -> int:
        return rounds.open_round(now() + DAY, *ref("rule"), BUDGET, DECAY, sender=op).gas_used

    g: dict[str, int] = {}
    g["register (stake 1 ETH)"] = registry.register(sender=ps[0], value=stake).gas_used
    for p in ps[1:]:
        registry.register(sender=p, value=stake)
    g["depositStake (top-up)"] = registry.deposit_stake(ps[0], sender=w["outsider"], value=1).gas_used
    rounds.publish_genesis(*ref("genesis"), sender=op)

    open_round()
    g["commitUpdate, first commit (records the round)"] = rounds.commit_update(1, *ref("u0"), sender=ps[0]).gas_used
    for i, p in enumerate(ps[1:], 1):
        rounds.commit_update(1, *ref(f"u{i}"), sender=p)
    rounds.close_round(1, sender=op)
    g["finalizeRound, 4 accepted"] = rounds.finalize_round(1, *ref("m1"), ps, [900_000] * 4, [0] * 4,
                                                           sender=agg).gas_used

    open_round()
    for i, p in enumerate(ps):
        rounds.commit_update(2, *ref(f"v{i}"), sender=p)
    rounds.close_round(2, sender=op)
    g["finalizeRound, 2 accepted + 2 slashed"] = rounds.finalize_round(
        2, *ref("m2"), ps, [900_000, 900_000, -900_000, -900_000], [0, 0, 1, 1], sender=agg).gas_used
    for p in ps[2:]:
        registry.deposit_stake(p, sender=p, value=stake // 10)

    g["openRound, a later one (records the open round in the registry)"] = open_round()
    g["commitUpdate, later round"] = rounds.commit_update(3, *ref("x0"), sender=ps[0]).gas_used
    rounds.commit_update(3, *ref("x1"), sender=ps[1])
    rounds.close_round(3, sender=op)
    entries = [ResultEntry(ps[0], 0, 900_000, BUDGET, 560_000), ResultEntry(ps[1], 1, -900_000, 0, 400_000)]
    lst = ResultList.build(ListHeader(w3.eth.chain_id, rounds.address, 3), ref("rule")[0], ref("m3")[0], entries)
    digest = hashlib.sha256(lst.canonical_bytes()).digest()
    g["finalizeRoundWithResults"] = rounds.finalize_round_with_results(
        3, *ref("m3"), lst.root, digest, "list", 2, 1, BUDGET, sender=agg).gas_used
    e = lst.entry(ps[1])
    assert e is not None
    g["slash by proof (Merkle round)"] = rounds.slash(3, ps[1], e.status, e.score, e.reward, e.reputation,
                                                      lst.proof(ps[1]), sender=w["outsider"]).gas_used

    g["requestWithdrawal"] = registry.request_withdrawal(sender=ps[0]).gas_used
    advance_time(w3, registry.withdrawal_delay())
    g["withdraw"] = registry.withdraw(sender=ps[0]).gas_used
    for k, v in g.items():
        print(f"{k:66s} {v:>9,}")


if __name__ == "__main__":
    main()
