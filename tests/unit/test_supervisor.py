"""The supervisor's join: a drainer's crash is what the relay reports."""

import asyncio

import pytest

from relay.supervisor import Supervisor


class Broken(Exception):
    pass


async def crash() -> None:
    await asyncio.sleep(0)
    raise Broken("the database went away")


async def test_drainers_crashing_together_raise_their_error():
    # every drainer of the round crashes: nothing is left to wait for (this raised
    # "Set of Tasks/Futures is empty." instead, hiding the error)
    supervisor = Supervisor()
    supervisor.start_drainers("eu", [crash(), crash()])
    with pytest.raises(Broken, match="went away"):
        await supervisor.join_drainers()
    assert supervisor.stopping


async def test_one_crash_stops_the_others_then_raises():
    supervisor = Supervisor()

    async def waits_for_stop() -> None:
        await supervisor.stop.wait()

    supervisor.start_drainers("eu", [crash(), waits_for_stop()])
    with pytest.raises(Broken):
        await asyncio.wait_for(supervisor.join_drainers(), 5)
