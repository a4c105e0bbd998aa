"""The stages' classes have the kernel's seam shapes (fleet.interfaces); mypy checks the
signatures where the root builds them, this checks the members at run time."""

from __future__ import annotations

from fleet import interfaces
from fleet.model import OrgConfig, VehicleConfig
from fleet.registry import OrgTree, Registry
from geofence.index import FenceIndex, LiveFences
from rules.config import RulesConfig
from rules.engine import RulesEngine
from store.config import StoreConfig
from store.live import MemoryLiveState, RedisLiveState
from store.sqlite import SQLiteHistory
from stream.feed import FeedCore
from web.commands import RedisCommands


def _registry() -> Registry:
    v = VehicleConfig(id="V1", plate="川X00001", terminal="10001", org="c")
    return Registry([v], OrgTree.from_config([OrgConfig(id="c", name="市")]))


def test_the_stages_implement_the_kernel_protocols() -> None:
    reg = _registry()
    assert isinstance(FeedCore(reg), interfaces.Feed)
    assert isinstance(RulesEngine(RulesConfig(), reg), interfaces.RulesEngine)
    assert isinstance(MemoryLiveState(), interfaces.LiveState)
    assert isinstance(SQLiteHistory(StoreConfig(), path=":memory:"), interfaces.HistoryStore)
    fences = LiveFences(())
    assert isinstance(fences, interfaces.FenceSource)
    assert isinstance(fences.index, interfaces.FenceIndex)
    assert isinstance(FenceIndex.build(()), interfaces.FenceIndex)
    for cls in (RedisLiveState,):
        assert all(hasattr(cls, m) for m in ("open", "close", "update", "snapshot"))
    assert all(hasattr(RedisCommands, m) for m in ("publish", "listen", "close"))


def test_a_class_missing_a_member_is_not_the_seam() -> None:
    class Half:
        def process(self, batch: object) -> list[object]:
            return []

    assert not isinstance(Half(), interfaces.RulesEngine)
