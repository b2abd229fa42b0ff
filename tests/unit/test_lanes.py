import pytest

from zonepurge.items import Kind, Mode
from zonepurge.lanes import PRODUCTION_TARGET, EnvTarget, Lane

ZONE = "023e105f4ecef8ad9ca31a8372d0c353"


@pytest.mark.parametrize(
    "env",
    [PRODUCTION_TARGET, EnvTarget(ref="abc123"), EnvTarget(ref="we:ird/ref @production"),
     EnvTarget(ref="@production"), EnvTarget(name="Staging"), EnvTarget(name="a:b@name=c")],
)
def test_lane_ids_round_trip_whatever_the_ref(env):
    lane = Lane(ZONE, env, Kind.FILES, Mode.INVALIDATE)
    assert lane.id.count(":") == 3
    assert Lane.parse(lane.id) == lane


def test_a_ref_spelled_like_the_production_marker_is_not_production():
    assert not Lane.parse(Lane(ZONE, EnvTarget(ref="@production"), Kind.TAGS, Mode.PURGE).id).env.is_production


def test_covering_everything_lanes():
    staging = EnvTarget(ref="stg")
    soft = Lane(ZONE, staging, Kind.FILES, Mode.INVALIDATE)
    hard = soft.with_(mode=Mode.PURGE)
    assert set(hard.covering_everything_lanes()) == {
        Lane(ZONE, staging, Kind.EVERYTHING, Mode.PURGE),
        Lane(ZONE, PRODUCTION_TARGET, Kind.EVERYTHING, Mode.PURGE),
    }
    assert len(soft.covering_everything_lanes()) == 4
    prod = Lane(ZONE, PRODUCTION_TARGET, Kind.TAGS, Mode.PURGE)
    assert prod.covering_everything_lanes() == [Lane(ZONE, PRODUCTION_TARGET, Kind.EVERYTHING, Mode.PURGE)]
