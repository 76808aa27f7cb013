from __future__ import annotations

from collections.abc import Iterator

import pytest

from rtvla.testing.openai_server import ScriptedOpenAIServer


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as srv:
        yield srv


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
