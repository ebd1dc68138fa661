"""The admin fault endpoints write the KV entries every router copy watches."""

from __future__ import annotations

import httpx

from adp_common.bus import Bus
from adp_common.catalog import KV_FAULTS
from adp_common.schemas.faults import ProviderFault
from adp_gateway.server import GatewayServer
from adp_testing.gateway import new_user


async def test_faults_are_set_listed_and_cleared(gateway: GatewayServer, admin: httpx.AsyncClient, bus: Bus) -> None:
    r = await admin.put("/api/admin/faults/simulated", json={"rate_limit_rate": 0.5, "retry_after_s": 3})
    assert r.status_code == 200, r.text
    assert r.json() == {"provider": "simulated", "fault": {**ProviderFault().model_dump(), "rate_limit_rate": 0.5,
                                                            "retry_after_s": 3.0}}  # fmt: skip
    entry = await (await bus.kv(KV_FAULTS)).get("simulated")
    assert ProviderFault.model_validate_json(entry.value or b"") == ProviderFault(rate_limit_rate=0.5, retry_after_s=3)
    await admin.put("/api/admin/faults/simulated-b", json={"outage": True})
    listed = (await admin.get("/api/admin/faults")).json()["faults"]
    assert [f["provider"] for f in listed] == ["simulated", "simulated-b"]
    left = (await admin.delete("/api/admin/faults/simulated")).json()["faults"]
    assert [f["provider"] for f in left] == ["simulated-b"]
    await admin.delete("/api/admin/faults/simulated-b")
    assert (await admin.get("/api/admin/faults")).json() == {"faults": []}

    bad = await admin.put("/api/admin/faults/simulated", json={"error_rate": 2})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "VALIDATION_ERROR"
    bad = await admin.put("/api/admin/faults/bad name!", json={"outage": True})
    assert bad.status_code in (400, 404)
    _, key, _ = await new_user(admin, "not-an-operator")
    async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}) as user:
        assert (await user.put("/api/admin/faults/simulated", json={"outage": True})).status_code == 403
