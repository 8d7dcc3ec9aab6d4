"""The agent channel's shared models: validation, secrets kept out of reprs, and the wire form."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from grocerysync.core.wire import EnrollRequest, EnrollResponse


def test_enroll_request_round_trips_with_the_token_only_in_the_wire_form() -> None:
    req = EnrollRequest.model_validate(
        {
            "token": "gse_secret-token",
            "hostname": "till-01",
            "os": "Windows 11",
            "agent_version": "0.1.0",
            "plugins": [{"name": "csv", "distribution": "grocerysync-pos-csv", "version": "1.0"}],
        }
    )
    assert "gse_secret-token" not in repr(req)
    assert "gse_secret-token" not in str(req.model_dump())
    body = req.wire()
    assert body["token"] == "gse_secret-token"
    assert body["plugins"] == [{"name": "csv", "distribution": "grocerysync-pos-csv", "version": "1.0"}]
    assert EnrollRequest.model_validate(body) == req


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hostname": ""}, "hostname"),
        ({"hostname": "x" * 201}, "hostname"),
        ({"agent_version": "1" * 101}, "agent_version"),
        ({"plugins": [{"version": "1"}]}, "plugins"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_enroll_request_rejects_bad_fields(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        EnrollRequest.model_validate({"token": "t", "hostname": "h", **change})
    assert info.value.errors()[0]["loc"][0] == field


def test_enroll_request_needs_a_token() -> None:
    with pytest.raises(ValidationError) as info:
        EnrollRequest.model_validate({"hostname": "h"})
    assert info.value.errors()[0]["loc"] == ("token",)


def test_enroll_response_hides_the_credential_except_on_the_wire() -> None:
    resp = EnrollResponse(agent_id=3, credential="gsa_cred", retailer_id=1, store_id=2, store_name="Main St")  # type: ignore[arg-type]
    assert "gsa_cred" not in repr(resp)
    body = resp.wire()
    assert body == {
        "agent_id": 3,
        "credential": "gsa_cred",
        "retailer_id": 1,
        "store_id": 2,
        "store_name": "Main St",
        "hub_url": None,
    }
    again = EnrollResponse.model_validate(body)
    assert again.credential.get_secret_value() == "gsa_cred"
