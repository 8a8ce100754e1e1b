"""What every written image carries about where it came from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class C2paSpec(BaseModel):
    """C2PA content credentials; certificate chain and key are named, never inlined."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    cert_chain: str = Field(min_length=1, description="PEM chain URI, leaf first (a CA-issued leaf, not self-signed).")
    private_key: str = Field(min_length=1, description="PEM private key URI matching the leaf certificate.")


class ProvenanceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    watermark: bool = Field(default=True, description="Embed the 64-bit invisible watermark in every image.")
    allow_unwatermarked: bool = Field(
        default=False,
        description="Write images under 64 px on a side unwatermarked (marked so in the index) "
        "instead of rejecting them.",
    )
    c2pa: C2paSpec | None = None
