from pydantic import BaseModel, SecretStr

from grocerysync.core.hookspecs import hookimpl
from grocerysync.core.manager import PluginManager
from grocerysync.core.records import Destination
from grocerysync.core.results import CheckResult
from grocerysync.hub.app import create_app
from grocerysync.hub.settings import Settings


class _Cfg(BaseModel):
    host: str


class _Secrets(BaseModel):
    password: SecretStr


async def _check(config: _Cfg, secrets: _Secrets) -> CheckResult:
    return CheckResult.success()


class _Plugin:
    @hookimpl
    def grocerysync_destinations(self) -> list[Destination]:
        return [
            Destination(
                name="demo-dest",
                description="d",
                config_model=_Cfg,
                secrets_model=_Secrets,
                check=_check,
                open=None,  # type: ignore[arg-type]
            )
        ]


async def test_health_and_plugin_catalogue() -> None:
    pm = PluginManager(autoload=False)
    pm.register(_Plugin(), name="demo", distribution="grocerysync-dest-demo", version="1.0")
    app = create_app(Settings(), plugins=pm)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await (await client.get("/health")).get_json()) == {"status": "ok"}
        body = await (await client.get("/api/plugins")).get_json()
    [entry] = body["plugins"]
    assert entry["name"] == "demo-dest"
    assert entry["distribution"] == "grocerysync-dest-demo"
    assert entry["config_schema"]["required"] == ["host"]
    assert entry["secrets_schema"]["properties"]["password"]["writeOnly"] is True
