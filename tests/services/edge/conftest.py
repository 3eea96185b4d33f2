"""Edge fixtures: settings with known JWT keys, a worker, one running edge."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.settings import Settings
from tests.conftest import SettingsFactory, WorkerRunner
from tests.edge_helpers import ACCESS_SECRET, REFRESH_SECRET, RunningEdge, running_edge


@pytest.fixture
def edge_settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(
        JWT_SECRET=ACCESS_SECRET, JWT_REFRESH_SECRET=REFRESH_SECRET, ACK_TIMEOUT_MS="3000"
    )


@pytest.fixture
async def edge(edge_settings: Settings, workers: WorkerRunner) -> AsyncIterator[RunningEdge]:
    await workers.start(edge_settings)
    async with running_edge(edge_settings) as running:
        yield running
