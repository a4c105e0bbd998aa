"""Accounts on PostgreSQL live in ``[store] postgres_schema`` like every other table: two
deployments on one database have their own users. (Before the fix they shared
``public.web_users``: a password changed, or a name locked out, in one test's deployment broke
another's login — "wrong user name or password" in the suite.)"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.web.conftest import PASSWORD, Clock, web_config
from web.accounts import Accounts

pytestmark = pytest.mark.services

DSN = "postgresql://postgres@127.0.0.1:5432/test"


async def test_two_schemas_two_sets_of_users(tmp_path: Path, postgres: object, unique: str) -> None:
    schemas = [f"t_acc_a_{unique}", f"t_acc_b_{unique}"]
    accounts = [
        Accounts(
            web_config(
                tmp_path,
                store={"kind": "postgres", "postgres_dsn": DSN, "postgres_schema": s},
            ),
            Clock(),
        )
        for s in schemas
    ]
    try:
        for a in accounts:
            await a.open()
        assert await accounts[0].update_user("admin", password="a-new-password-0001")
        assert await accounts[0].check_password("admin", "a-new-password-0001") is not None
        assert await accounts[1].check_password("admin", PASSWORD) is not None
        assert await accounts[1].check_password("admin", "a-new-password-0001") is None
        with psycopg.connect(DSN) as c:
            for s in schemas:
                assert c.execute("SELECT to_regclass(%s)", (f"{s}.web_users",)).fetchone() != (
                    None,
                )
    finally:
        for a in accounts:
            await a.close()
        with psycopg.connect(DSN, autocommit=True) as c:
            for s in schemas:
                c.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
