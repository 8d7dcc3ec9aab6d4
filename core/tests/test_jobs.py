import json

import pytest
from pydantic import BaseModel, ValidationError

from grocerysync.core.config import parse_config
from grocerysync.core.errors import ConfigError
from grocerysync.core.jobs import JobSpec

JOB = {
    "name": "Main St -> marketplace",
    "source": {"plugin": "csv", "config": {"path": "items.csv"}},
    "destination": {"plugin": "sftp", "config": {"host": "h"}, "secrets": {"password": "canary-s3cret"}},
}


def test_minimal_job_has_safe_defaults() -> None:
    job = JobSpec.model_validate(JOB)
    assert job.options.mode == "delta"
    assert job.options.batch_size == 1000
    assert job.mapping.is_empty


def test_secrets_never_print_unless_revealed_on_purpose() -> None:
    job = JobSpec.model_validate(JOB)
    assert "canary-s3cret" not in repr(job)
    assert "canary-s3cret" not in job.model_dump_json()
    assert "canary-s3cret" not in json.dumps(job.model_dump(mode="json"))
    revealed = job.model_dump(mode="json", context={"reveal_secrets": True})
    assert revealed["destination"]["secrets"]["password"] == "canary-s3cret"
    assert job.destination.secret_values() == {"password": "canary-s3cret"}


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"filters": [{"field": "colour", "op": "eq", "value": "red"}]}, "not an item field"),
        ({"filters": [{"field": "department", "op": "in", "value": "Dairy"}]}, "needs a list"),
        ({"filters": [{"field": "price", "op": "gt", "value": "cheap"}]}, "needs a number"),
        ({"mapping": {"overrides": {"item_id": "x"}}}, "item_id cannot be mapped"),
        ({"mapping": {"defaults": {"name.first": "x"}}}, "sub-fields"),
        ({"options": {"batch_size": 0}}, "batch_size"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_jobs_name_the_problem(patch: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        JobSpec.model_validate({**JOB, **patch})


def test_filters_accept_sub_fields() -> None:
    job = JobSpec.model_validate({**JOB, "filters": [{"field": "extras.aisle", "op": "exists"}]})
    assert job.filters[0].field == "extras.aisle"


class _Cfg(BaseModel):
    host: str
    port: int = 22


def test_parse_config_names_fields_without_echoing_values() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_Cfg, {"port": "not-a-port-secretish"}, where="destination.config")
    fields = {e["field"] for e in info.value.errors}
    assert fields == {"destination.config.host", "destination.config.port"}
    assert "secretish" not in str(info.value)
    assert parse_config(_Cfg, {"host": "x"}, where="c").port == 22
