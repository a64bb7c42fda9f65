"""The ``[links]`` section: which dynamic links are enabled, where they point, their secret."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from comms_pipeline.core.dynamic_links import DEFAULT_TEXT, DYNAMIC_LINK_NAMES


class LinkSettings(BaseModel):
    """The ``[links]`` section: which dynamic links are enabled and where they point."""

    model_config = ConfigDict(extra="forbid")

    enabled: list[str] = Field(default_factory=lambda: [
        "opt_in_direct_marketing", "opt_out_direct_marketing", "opt_in_affiliate_marketing",
        "opt_out_affiliate_marketing", "service_request_response_acceptance"])
    endpoint: str = "http://127.0.0.1:8000"
    custom_url: str | None = None
    redirection_url: str | None = None
    link_text: dict[str, dict[str, str]] = Field(default_factory=dict)
    secret: SecretStr | None = None
    max_age_days: float = Field(30.0, gt=0)

    @field_validator("enabled")
    @classmethod
    def _known_names(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(DYNAMIC_LINK_NAMES))
        if unknown:
            raise ValueError(f"unknown dynamic link(s): {', '.join(unknown)}; known: "
                             f"{', '.join(DYNAMIC_LINK_NAMES)}")
        return names

    @model_validator(mode="after")
    def _address_when_enabled(self) -> LinkSettings:
        if self.enabled and not (self.endpoint or self.custom_url):
            raise ValueError("an endpoint or a custom_url is needed when links are enabled")
        return self

    @property
    def base_url(self) -> str:
        return self.custom_url or self.endpoint.rstrip("/") + "/links"

    def text(self, name: str, language: str | None) -> str:
        for lang in (language or "en", "en"):
            configured = self.link_text.get(lang, {}).get(name)
            if configured:
                return configured
            default = DEFAULT_TEXT.get(lang, {}).get(name)
            if default:
                return default
        return name.replace("_", " ")
