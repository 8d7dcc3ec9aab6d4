"""What the hub and the agent send each other over the agent channel (``/agent/v1/...``).

Both sides import these models, so a field renamed on one side cannot silently stop matching the other. They
carry no secrets except the enrollment token and the agent credential, which are :class:`~pydantic.SecretStr`
so they never show in a repr or a log line.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

#: The path prefix of every agent channel route on the hub.
AGENT_API_PREFIX = "/agent/v1"
#: Longest host name, OS description or version string accepted (matches the hub's agent name column).
MAX_TEXT = 200
#: Longest agent version accepted (the hub's column size).
MAX_VERSION = 100


class PluginVersion(BaseModel):
    """One plugin installed on the agent's machine, as reported to the hub."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_TEXT)
    distribution: str = Field(default="", max_length=MAX_TEXT)
    version: str = Field(default="", max_length=MAX_TEXT)


class EnrollRequest(BaseModel):
    """The agent's first call: trade a one-time enrollment token for its own credential.

    ``hostname``, ``os``, ``agent_version`` and ``plugins`` tell the technician which machine enrolled.
    """

    model_config = ConfigDict(extra="forbid")

    token: SecretStr = Field(description="The one-time enrollment token the technician created for the store.")
    hostname: str = Field(min_length=1, max_length=MAX_TEXT, description="The machine's name.")
    os: str = Field(default="", max_length=MAX_TEXT, description="The operating system, e.g. 'Windows 11'.")
    agent_version: str = Field(default="", max_length=MAX_VERSION, description="The agent's version.")
    plugins: list[PluginVersion] = Field(default_factory=list, max_length=500, description="Installed plugins.")

    def wire(self) -> dict[str, object]:
        """The JSON body to send, with the token revealed (only the hub sees it)."""
        body = self.model_dump(mode="json")
        body["token"] = self.token.get_secret_value()
        return body


class EnrollResponse(BaseModel):
    """The hub's answer to a successful enrollment: who the agent is and its credential (shown this once)."""

    agent_id: int
    credential: SecretStr = Field(description="The agent's credential; the hub keeps only its hash.")
    retailer_id: int
    store_id: int
    store_name: str
    hub_url: str | None = Field(default=None, description="Where the agent should reach the hub from now on.")

    def wire(self) -> dict[str, object]:
        """The JSON body to answer with, with the credential revealed (only the agent sees it)."""
        body = self.model_dump(mode="json")
        body["credential"] = self.credential.get_secret_value()
        return body
