"""The SQLite event index: incremental == rebuilt, confirmation depth, and reorgs undone (real py-evm reorg)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.indexer import EventIndexer


def register_some(env, n: int) -> None:  # type: ignore[no-untyped-def]
    for p in env.participants[:n]:
        env.deployment.registry.register(sender=p, value=env.deployment.registry.min_stake())


def test_incremental_indexing_equals_a_rebuild_from_the_deployment_block(chain_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    incremental = EventIndexer(chain_env.deployment, tmp_path / "inc.sqlite")
    for p in chain_env.participants:
        chain_env.deployment.registry.register(sender=p, value=chain_env.deployment.registry.min_stake())
        incremental.sync()
    incremental.sync()
    rebuilt = EventIndexer(chain_env.deployment, tmp_path / "rebuilt.sqlite", window=3)
    rebuilt.sync()
    assert incremental.dump() == rebuilt.dump()
    assert len(incremental.events("ParticipantRegistered")) == 4
    assert incremental.events("ParticipantRegistered", account=chain_env.participants[0].lower())[0]["args"]["reputation"] == 500_000


def test_confirmation_depth_keeps_the_index_behind_the_head(chain_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index = EventIndexer(chain_env.deployment, tmp_path / "i.sqlite", confirmations=2)
    register_some(chain_env, 3)  # three blocks
    index.sync()
    head = chain_env.w3.eth.block_number
    assert index.cursor == head - 2
    assert len(index.events("ParticipantRegistered")) == 1
    with pytest.raises(ValueError, match="confirmations must be >= 0"):
        EventIndexer(chain_env.deployment, tmp_path / "j.sqlite", confirmations=-1)


def test_a_reorg_is_detected_rewound_and_reindexed(chain_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tester = chain_env.w3.provider.ethereum_tester
    index = EventIndexer(chain_env.deployment, tmp_path / "i.sqlite")
    register_some(chain_env, 1)
    index.sync()
    fork_point = chain_env.w3.eth.block_number
    snapshot = tester.take_snapshot()
    registry = chain_env.deployment.registry
    registry.register(sender=chain_env.participants[1], value=registry.min_stake())  # will be orphaned
    index.sync()
    assert len(index.events("ParticipantRegistered")) == 2
    tester.revert_to_snapshot(snapshot)  # the chain forgets that block...
    chain_env.transactor._nonces.clear()
    registry.register(sender=chain_env.participants[2], value=registry.min_stake())  # ...and grows another branch
    tester.mine_blocks(1)
    result = index.sync()
    assert result.rewound_to is not None and result.rewound_to <= fork_point
    registered = {e["args"]["account"] for e in index.events("ParticipantRegistered")}
    assert registered == {chain_env.participants[0], chain_env.participants[2]}
    fresh = EventIndexer(chain_env.deployment, tmp_path / "fresh.sqlite")
    fresh.sync()
    assert fresh.dump() == index.dump()


def test_an_index_of_another_deployment_is_started_afresh(chain_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "i.sqlite"
    register_some(chain_env, 1)
    EventIndexer(chain_env.deployment, path).sync()
    other = chain_env.deployment.manifest.__class__(**{**chain_env.deployment.manifest.__dict__,
                                                       "contracts": {**chain_env.deployment.manifest.contracts,
                                                                     "FedToken": chain_env.outsider}})
    chain_env.deployment.manifest = other
    reopened = EventIndexer(chain_env.deployment, path)
    assert reopened.dump() == [] and reopened.cursor == other.deployment_block - 1
