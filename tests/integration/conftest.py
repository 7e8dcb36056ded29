"""Fixtures the flow tests share: the real Prefect and MLflow servers, and the Prefect API they point at."""

from __future__ import annotations

import pytest

from tests.e2e.servers import session_servers


@pytest.fixture(scope="module")
def servers(request, tmp_path_factory):
    return session_servers(request, tmp_path_factory)


@pytest.fixture(scope="module")
def prefect_api(servers):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: servers.prefect_api_url}):
        yield servers.prefect_api_url
