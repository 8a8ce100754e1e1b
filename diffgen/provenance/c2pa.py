"""Optional C2PA content credentials for PNGs (c2pa-python 0.38, c2pa-rs 0.91).

Each signed PNG carries one manifest with:
  - `c2pa.actions.v2`: a `c2pa.created` action whose digitalSourceType is IPTC
    `trainedAlgorithmicMedia`;
  - `org.diffgen.provenance`: the provenance record, field for field as in the PNG text chunk;
  - `c2pa.soft-binding`: the invisible watermark (algorithm `org.diffgen.cellqim-bch`, value the
    base64 of the 8-byte payload), so a copy stripped of its metadata can be matched back to
    its manifest.
The automatic thumbnail is off: at its default 1024 px long edge it turns a 12 KB PNG into ~290 KB.

Credentials are checked before any generation starts (`load_credentials`): the chain parses and
is ordered leaf first, no certificate is expired, the key matches the leaf, and a trial
signature of a tiny PNG succeeds, so c2pa-rs's own profile checks run up front too. The checked
`C2paCredentials` are plain bytes and pickle; `C2paSigner`, which holds native handles, is built
once per worker from them.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import c2pa
import numpy as np
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import diffgen
from diffgen.dataset import storage
from diffgen.provenance.png import encode_png
from diffgen.provenance.record import TRAINED_ALGORITHMIC_MEDIA, ProvenanceRecord

log = logging.getLogger(__name__)

PROVENANCE_LABEL = "org.diffgen.provenance"
SOFT_BINDING_LABEL = "c2pa.soft-binding"
SOFT_BINDING_ALG = "org.diffgen.cellqim-bch"  # watermark scheme 2 (provenance_version 2)
SOFT_BINDING_ALG_V1 = "org.diffgen.dwtDctSvd"  # scheme 1, in manifests of earlier images
_ACTIONS_LABELS = ("c2pa.actions.v2", "c2pa.actions")
_EXPIRY_WARNING = timedelta(days=7)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Signing algorithm by key type (and curve): what c2pa-rs accepts for each.
_EC_ALGORITHMS: dict[str, str] = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}

_NO_NETWORK = {"remote_manifest_fetch": False, "ocsp_fetch": False}
_SIGN_SETTINGS: dict[str, Any] = {
    "version": 1,
    "builder": {"thumbnail": {"enabled": False}},
    "verify": _NO_NETWORK,
}


class C2paConfigError(ValueError):
    """Signing credentials that cannot be used; the message lists every problem found."""


class C2paSigningError(RuntimeError):
    """One PNG could not be signed."""


@dataclass(frozen=True)
class C2paCredentials:
    """A checked certificate chain (leaf first, PEM) and its private key (PEM)."""

    chain_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    alg: str
    signer: str
    not_after: datetime
    tsa_url: str | None = None


def load_credentials(
    cert_chain_uri: str, private_key_uri: str, *, tsa_url: str | None = None, now: datetime | None = None
) -> C2paCredentials:
    """Read a PEM chain and key from any storage URI and check them (see `check_credentials`)."""
    blobs = {}
    for what, uri in (("certificate chain", cert_chain_uri), ("private key", private_key_uri)):
        try:
            blobs[what] = storage.read_bytes(uri)
        except Exception as e:  # fsspec backends raise their own types for missing or forbidden objects
            raise C2paConfigError(f"c2pa: cannot read the {what} at {uri}: {type(e).__name__}: {e}") from None
    return check_credentials(blobs["certificate chain"], blobs["private key"], tsa_url=tsa_url, now=now)


def check_credentials(
    chain_pem: bytes, key_pem: bytes, *, tsa_url: str | None = None, now: datetime | None = None
) -> C2paCredentials:
    """Credentials c2pa-rs will sign with, or a `C2paConfigError` naming every problem."""
    now = now or datetime.now(UTC)
    problems: list[str] = []
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        chain = []
        problems.append("certificate chain: no PEM certificate could be parsed")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        key = None
        problems.append("private key: it is encrypted; give an unencrypted PKCS#8 or traditional PEM key")
    except (ValueError, UnsupportedAlgorithm):
        key = None
        problems.append("private key: not a PEM private key of a supported type")
    for position, cert in enumerate(chain, start=1):
        subject = cert.subject.rfc4514_string()
        if cert.not_valid_after_utc <= now:
            problems.append(
                f"certificate {position} ({subject}) expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
            )
        if cert.not_valid_before_utc > now:
            problems.append(f"certificate {position} ({subject}) is not valid before {cert.not_valid_before_utc} UTC")
    for position, (cert, issuer) in enumerate(itertools.pairwise(chain), start=1):
        try:
            cert.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError) as e:
            problems.append(
                f"certificate {position + 1} ({issuer.subject.rfc4514_string()}) did not issue certificate "
                f"{position} ({cert.subject.rfc4514_string()}): list the signing certificate first, then each "
                f"issuer in turn ({type(e).__name__})"
            )
    if chain and chain[0].issuer == chain[0].subject:
        problems.append("certificate 1 is self-signed: C2PA needs a signing certificate issued by a CA")
    alg = None
    if key is not None:
        alg = _algorithm(key)
        if alg is None:
            size = getattr(key, "key_size", None)
            problems.append(
                f"private key: a {size}-bit {type(key).__name__} cannot sign C2PA manifests; "
                "use EC P-256/P-384/P-521, Ed25519 or RSA of 2048 bits or more"
            )
        if chain and _public_der(key.public_key()) != _public_der(chain[0].public_key()):
            problems.append("private key: does not match the public key of certificate 1 (the signing certificate)")
    if problems:
        raise C2paConfigError("c2pa credentials:\n" + "\n".join(f"  - {p}" for p in problems))
    leaf = chain[0]
    credentials = C2paCredentials(
        chain_pem=chain_pem,
        key_pem=key_pem,
        alg=alg,  # type: ignore[arg-type]
        signer=leaf.subject.rfc4514_string(),
        not_after=leaf.not_valid_after_utc,
        tsa_url=tsa_url,
    )
    _trial_sign(credentials)
    if leaf.not_valid_after_utc - now < _EXPIRY_WARNING:
        log.warning("the C2PA signing certificate expires on %s", leaf.not_valid_after_utc.isoformat())
    return credentials


class C2paSigner:
    """Native signing handles for one set of credentials, reused for every image.

    The handles cannot cross processes; pickling sends the credentials and the receiving
    worker builds its own handles.
    """

    def __init__(self, credentials: C2paCredentials):
        self.credentials = credentials
        info = c2pa.C2paSignerInfo(credentials.alg, credentials.chain_pem, credentials.key_pem, credentials.tsa_url)
        self._signer = c2pa.Signer.from_info(info)
        self._context = c2pa.Context.from_dict(_SIGN_SETTINGS)

    def __reduce__(self) -> tuple[type[C2paSigner], tuple[C2paCredentials]]:
        return (C2paSigner, (self.credentials,))


_CREATED = {
    "label": "c2pa.actions.v2",
    "data": {
        "actions": [
            {
                "action": "c2pa.created",
                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": {"name": "diffgen", "version": diffgen.__version__},
            }
        ]
    },
}


def manifest_definition(record: ProvenanceRecord) -> dict[str, Any]:
    """The manifest JSON c2pa-rs builds the claim from."""
    assertions: list[dict[str, Any]] = [_CREATED, {"label": PROVENANCE_LABEL, "data": record.to_dict()}]
    if record.watermark_payload is not None:
        value = base64.b64encode(bytes.fromhex(record.watermark_payload)).decode("ascii")
        v1 = record.provenance_version == 1
        assertions.append(
            {
                "label": SOFT_BINDING_LABEL,
                "data": {
                    "alg": SOFT_BINDING_ALG_V1 if v1 else SOFT_BINDING_ALG,
                    "name": "invisible-watermark dwtDctSvd, 64-bit payload over the whole image" if v1 else
                    "diffgen cell QIM, 64-bit payload with BCH and a 24-bit check, size-normalised grid",
                    "blocks": [{"scope": {}, "value": value}],
                    "pad": [],
                },
            }
        )
    return {
        "claim_generator_info": [{"name": "diffgen", "version": diffgen.__version__}],
        "title": f"{record.record_id}.png",
        "format": "image/png",
        "assertions": assertions,
    }


def sign_png(png_bytes: bytes, record: ProvenanceRecord, signer: C2paSigner) -> bytes:
    """The PNG with a signed C2PA manifest embedded (a `caBX` chunk); pixels and text chunks are kept."""
    out = io.BytesIO()
    try:
        builder = c2pa.Builder(manifest_definition(record), context=signer._context)
        builder.sign(signer._signer, "image/png", io.BytesIO(png_bytes), out)
    except c2pa.C2paError as e:
        raise C2paSigningError(f"c2pa_sign_failed: {e}") from None
    return out.getvalue()


@dataclass(frozen=True)
class C2paResult:
    """What a C2PA reader found in an image.

    `state` is c2pa-rs's: "Trusted" (intact, and the signer chains to a trust anchor), "Valid"
    (intact, signer not trusted), "Invalid" (tampered or malformed), or None without a manifest.
    """

    present: bool
    state: str | None = None
    failures: tuple[str, ...] = ()
    provenance: dict[str, Any] | None = None
    soft_binding: dict[str, Any] | None = None
    digital_source_type: str | None = None
    signer: str | None = None

    @property
    def valid(self) -> bool:
        """Hashes and signature check out, whoever signed."""
        return self.state in ("Valid", "Trusted")

    @property
    def trusted(self) -> bool:
        return self.state == "Trusted"


def verify_png(png_bytes: bytes, trust_anchors_pem: bytes | None = None) -> C2paResult:
    """Read and validate the C2PA manifest of a PNG.

    With `trust_anchors_pem`, those roots replace c2pa-rs's built-in trust list; without, the
    built-in list applies. Never touches the network.
    """
    settings: dict[str, Any] = {"version": 1, "verify": _NO_NETWORK}
    if trust_anchors_pem is not None:
        try:
            x509.load_pem_x509_certificates(trust_anchors_pem)
        except ValueError:
            raise C2paConfigError("c2pa trust anchors: no PEM certificate could be parsed") from None
        settings["trust"] = {"trust_anchors": trust_anchors_pem.decode("utf-8")}
    if not png_bytes.startswith(_PNG_SIGNATURE):
        return C2paResult(present=False, failures=("not a PNG file",))
    context = c2pa.Context.from_dict(settings)
    try:
        reader = c2pa.Reader("image/png", io.BytesIO(png_bytes), context=context)
    except c2pa.C2paError.ManifestNotFound:
        return C2paResult(present=False)
    except c2pa.C2paError as e:
        return C2paResult(present=True, state="Invalid", failures=(f"unreadable manifest: {e}",))
    with reader:
        store = json.loads(reader.json())
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    results = store.get("validation_results", {}).get("activeManifest", {})
    failures = tuple(f"{f.get('code')}: {f.get('explanation', '')}" for f in results.get("failure", []))
    assertions = {a.get("label"): a.get("data") for a in manifest.get("assertions", [])}
    actions = next((assertions[label] for label in _ACTIONS_LABELS if label in assertions), None) or {}
    created = next((a for a in actions.get("actions", []) if a.get("action") == "c2pa.created"), {})
    soft = assertions.get(SOFT_BINDING_LABEL)
    signature = manifest.get("signature_info", {})
    return C2paResult(
        present=True,
        state=store.get("validation_state"),
        failures=failures,
        provenance=assertions.get(PROVENANCE_LABEL),
        soft_binding=soft,
        digital_source_type=created.get("digitalSourceType"),
        signer=", ".join(v for v in (signature.get("common_name"), signature.get("issuer")) if v) or None,
    )


def soft_binding_payload(soft_binding: dict[str, Any] | None) -> bytes | None:
    """The watermark payload a diffgen soft-binding assertion names, or None if it names none."""
    if not soft_binding or soft_binding.get("alg") not in (SOFT_BINDING_ALG, SOFT_BINDING_ALG_V1):
        return None
    try:
        return base64.b64decode(soft_binding["blocks"][0]["value"], validate=True)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _algorithm(key: object) -> str | None:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _EC_ALGORITHMS.get(key.curve.name)
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256" if key.key_size >= 2048 else None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    return None


def _public_der(public_key: object) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


def _trial_sign(credentials: C2paCredentials) -> None:
    """Sign an 8x8 PNG, so whatever else c2pa-rs rejects (key usages, algorithms) fails now, not per image."""
    probe = encode_png(np.zeros((8, 8, 3), np.uint8))
    try:
        signer = C2paSigner(credentials)
        builder = c2pa.Builder(
            {"claim_generator_info": [{"name": "diffgen", "version": diffgen.__version__}], "assertions": [_CREATED]},
            context=signer._context,
        )
        builder.sign(signer._signer, "image/png", io.BytesIO(probe), io.BytesIO())
    except c2pa.C2paError as e:
        raise C2paConfigError(f"c2pa credentials: a trial signature failed: {e}") from None
