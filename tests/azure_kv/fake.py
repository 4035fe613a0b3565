#!/usr/bin/env python3
"""A loopback fake of Azure Key Vault's keys data plane and of Microsoft Entra ID's token
endpoint, for keyorch's Azure Key Vault keystore. Microsoft ships no emulator of either
service, so this fake stands in for them in tests; tests/azure_kv/sdk_proof.py proves it honest
by driving it with Microsoft's official Python SDKs (PyPI azure-keyvault-keys and
azure-identity on MSAL, pinned in scripts/azure-clients-requirements.lock), and
tests/azure_kv_fake.rs runs that proof.

    fake.py --port PORT --tenant-id TENANT --client-id ID --client-secret SECRET
            [--cert PEM --key PEM] [--vault-name NAME] [--location REGION]
            [--deny PERM,...] [--token-ttl SECONDS]

It serves Entra ID and the vault on one loopback port (127.0.0.1; `--port 0` picks a free one;
their paths do not clash) and prints one line `LISTENING <port>` on stdout when it accepts
connections. With --cert and --key it speaks https only, as both real services do (the SDKs'
challenge authentication refuses plain http; tests/common/azure.rs makes a CA and a leaf for
127.0.0.1). The TLS handshake runs in the connection's own thread, so a client that never
finishes one holds up nobody else. One stderr line per request, `fake azure_kv: METHOD path ->
status`: never a header, a body, a query, a token, the client secret or key material. The base
URL is `https://127.0.0.1:<port>`: it is the vault URL, the Entra ID authority host, and the
prefix of every `kid`. Private keys live in this process's memory only.

Entra ID (one tenant, one application with one client secret):
  POST /{tenant}/oauth2/v2.0/token   form grant_type=client_credentials, client_id,
      client_secret, scope=https://vault.azure.net/.default -> 200 {"token_type": "Bearer",
      "expires_in": TTL, "ext_expires_in": TTL, "access_token": JWT}. The access token is an
      RS256 JWT signed by a key of this process, with Entra's v1 claims (aud
      https://vault.azure.net, iss https://sts.windows.net/{tenant}/, appid, oid, tid, ...).
      Errors, Entra's body {error, error_description "AADSTSnnn: ... Trace ID: ...
      Correlation ID: ... Timestamp: ...", error_codes [n], timestamp, trace_id,
      correlation_id, error_uri}: unknown tenant 400 invalid_request AADSTS90002; unknown client
      id 400 unauthorized_client AADSTS700016; wrong secret 401 invalid_client AADSTS7000215;
      no secret 401 invalid_client AADSTS7000216; a missing parameter 400 invalid_request
      AADSTS900144; another grant type 400 unsupported_grant_type AADSTS70003; a scope without
      /.default 400 invalid_scope AADSTS1002012; another resource 400 invalid_resource
      AADSTS500011.
  GET /{tenant}/v2.0/.well-known/openid-configuration   Entra's OpenID configuration, every
      endpoint on this fake (what MSAL reads when instance discovery is disabled); an unknown
      tenant 400 invalid_tenant AADSTS90002.
  GET /common/discovery/instance   instance discovery (MSAL asks it unless
      disable_instance_discovery=True), pointing at the configuration above.
  GET /{tenant}/discovery/v2.0/keys   the token-signing key as a JWK set.

Key Vault (api-version required, any value; the SDKs send 7.4, 7.5, 7.6 or 2025-07-01):
  POST   /keys/{name}/create           create          create a key (or a new version)
  PUT    /keys/{name}                  import          import a key (or a new version)
  GET    /keys/{name}[/[{version}]]    get             the latest version, or one version
  PATCH  /keys/{name}[/[{version}]]    update          enabled, nbf, exp, key_ops, tags
  GET    /keys                         list            KeyItems, maxresults 1..25, nextLink
  GET    /keys/{name}/versions         list            the versions' KeyItems, likewise
  DELETE /keys/{name}                  delete          soft delete -> DeletedKeyBundle
  GET    /deletedkeys                  list            DeletedKeyItems, likewise
  GET    /deletedkeys/{name}           get             DeletedKeyBundle
  POST   /deletedkeys/{name}/recover   recover         -> KeyBundle
  DELETE /deletedkeys/{name}           purge           -> 204
  POST   /keys/{name}/backup           backup          -> {"value": opaque base64url blob}
  POST   /keys/restore                 restore         {"value": blob} -> KeyBundle
The third column is the key permission each needs (Microsoft's REST reference: "This
operation requires the keys/<perm> permission"; get deleted key needs keys/get, list deleted
keys keys/list). The order of checks is Azure's: the bearer token first (401 with the
challenge), then the api-version, then the permission (403), and only then the name, the
body and whether the key exists, so a probe of a name that never existed tells a denied
permission (403) from an allowed one (404) without changing anything.

  401  WWW-Authenticate: Bearer authorization="<base>/<tenant>", resource="https://vault.azure.net"
       {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer
       or PoP token."}}, or for a bad token "[BearerReadAccessTokenFailed] Error validating
       token: 'S2S12005'.", an expired (or revoked) one "[TokenExpired] Error validating
       token: 'S2S12086'.", another audience "AKV10022: Invalid audience. ..."
  403  {"error": {"code": "Forbidden", "message": "The user, group or application
       'appid=<client>;oid=<oid>;iss=https://sts.windows.net/<tenant>/' does not have keys
       <perm> permission on key vault '<vault>;location=<location>'. For help resolving this
       issue, please see https://go.microsoft.com/fwlink/?linkid=2125287", "innererror":
       {"code": "AccessDenied"}}}
  404  {"error": {"code": "KeyNotFound", "message": "A key with (name/id) <name>[/<version>] was
       not found in this key vault. If you recently deleted this key you may be able to
       recover it using the correct recovery command. For help resolving this issue, please
       see https://go.microsoft.com/fwlink/?linkid=2125182"}}; for the deleted-key paths
       "Deleted Key not found: <name>"
  409  {"error": {"code": "Conflict", "message": "Key <name> is currently in a deleted but
       recoverable state, and its name cannot be reused; in this state, the key can only be
       recovered or purged.", "innererror": {"code": "ObjectIsDeletedButRecoverable"}}} for
       create, import or restore of a soft-deleted name
  400  {"error": {"code": "BadParameter", "message": ...}} for everything malformed or refused

Keys: kty RSA or RSA-HSM (key_size 2048 default, 3072, 4096; public_exponent 65537) and EC or
EC-HSM (crv P-256 default, P-384, P-521, P-256K); key_ops default encrypt, decrypt, sign,
verify, wrapKey, unwrapKey for RSA (import also allowed) and sign, verify for EC; oct keys are
Managed HSM only. Names: 1..127 of [0-9A-Za-z-], case-insensitive (the first spelling stays in
kid). Versions: 32 hex digits. Attributes: enabled, created, updated (Unix seconds), nbf/exp
when set, recoveryLevel "Recoverable+Purgeable", recoverableDays 90, exportable false.
Creating or importing an existing name adds a version. A soft-deleted key is purged only by
purge (its scheduledPurgeDate is 90 days away). Backups are AES-GCM sealed under a key of this
process: they restore into this process only (as a real backup restores only within its
geography), with every version, version id, attribute and tag.

BYOK (https://learn.microsoft.com/azure/key-vault/keys/byok-specification): an import whose
key has `key_hsm` (base64url of the .byok transfer blob JSON {"schema_version": "1.0.0",
"header": {"kid": "<KEK kid>", "alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"}, "ciphertext":
base64url, "generator": ...}) is unwrapped for real: the KEK (the header's kid, a key of this
vault, latest version if the kid has none) must be RSA-HSM with key_ops exactly ["import"] and
enabled; ciphertext = RSA-OAEP (SHA-1, MGF1-SHA-1, empty label; the KEK's modulus length) of an
AES key (16, 24 or 32 bytes) || AES key wrap with padding (RFC 5649) of the target key as
PKCS#8 DER (an RSA key of 2048, 3072 or 4096 bits, or an EC key, RFC 5915 inside PKCS#8, on a
supported curve). kty must be RSA-HSM or EC-HSM and match the unwrapped key (crv too, if
given); the imported key's public JWK is the unwrapped key's. Any failure is 400 BadParameter.
A plain JWK import (RSA n, e, d[, p, q, dp, dq, qi] or EC crv, x, y, d) works too; `Hsm`: true
makes it RSA-HSM / EC-HSM.

Fake-only endpoints, outside the API's paths, no authentication (loopback test use only):
  GET  /__fake__/keys/{name}/check[?version=V]  -> {"keyorch_kcv": first 8 bytes of SHA-256
       over the DER SubjectPublicKeyInfo of the key's public key, lowercase hex (keyorch's
       check value of a key pair), "kty", "version", "enabled", "deleted"}: proves the
       material arrived intact without printing it (deleted keys too)
  POST /__fake__/keys/{name}/delete   -> 204: soft-deleted behind the client's back (a portal
       user's delete)
  POST /__fake__/keys/{name}/purge    -> 204: gone entirely, deleted or not
  POST /__fake__/deny  {"deny": [PERM, ...]}  -> 200 {"deny": [...]}: the denied permissions
       from now on (replaces --deny)
  POST /__fake__/tokens/revoke        -> 204: every access token issued so far is refused
  GET  /__fake__/requests             -> {"requests": [{"method", "path", "status"}, ...]}:
       every Entra ID and Key Vault request so far (no query, no body)

Sources followed: Microsoft's REST reference and its OpenAPI document
(Azure/azure-rest-api-specs specification/keyvault/data-plane/Microsoft.KeyVault/stable/7.6
keys.json and the 7.5 examples: paths, permissions, KeyBundle, DeletedKeyBundle, KeyItem,
DeletedKeyItem, KeyListResult with nextLink, maxresults 1..25 default 25, purge 204, Hsm,
key_hsm, unixtime attributes, JsonWebKey field names); the BYOK specification above (KEK
RSA-HSM 2048/3072/4096 with key_ops only import, in the same vault; the transfer blob;
CKM_RSA_AES_KEY_WRAP = RSA-OAEP-SHA-1 of an ephemeral AES key || AES-KWP of the PKCS#8 key);
the Azure SDK for JavaScript's recordings of the live service (the 401 body and
WWW-Authenticate challenge, `recoverableDays`, default key_ops of EC keys, "Deleted Key not
found: <name>", Entra's openid-configuration and token answers); error texts quoted in public
issues and SDK tests (403 AccessDenied text, 409 ObjectIsDeletedButRecoverable text,
'Unsupported key operation(s): "wrapKey", "unwrapKey". Supported values are "sign",
"verify".', 'The property "key" must be a valid JsonWebKey object.'); Entra ID's AADSTS error
reference (7000215, 7000216, 700016, 90002, 900144, 70003, 1002012, 500011); the azure_identity
and azure_security_keyvault_keys crates keyorch uses (they parse `error_codes` and
`error_description`, and the challenge's `resource`); azure-keyvault-keys' challenge policy.

Not confirmed by any Microsoft document (the fake's choice, kept in Azure's format): the
texts of the BYOK refusals (KEK not found, not an import-only RSA-HSM KEK, disabled, blob not
valid, unwrap failed, not PKCS#8, kty or crv mismatch, unsupported size or curve); a disabled
KEK refused with 400 like the other KEK faults; the 400 texts for a missing api-version, a
bad name ("The request URI contains an invalid name: <name>", as for secrets), a bad
maxresults or skiptoken, a bad kty, key_size or exponent, exportable keys (not supported
here), an unknown route; the restore conflict text for a name in use; listing the versions of
an unknown key answers an empty list; the order of versions (creation); tokens' claims beyond
aud, iss, tid, appid, oid, exp; the WWW-Authenticate of a 401 for a bad or expired token (the
same as for a missing one); the 401 texts for a bad, expired or foreign-audience token;
Entra's texts past the AADSTS code; unknown JSON fields are ignored.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import ssl
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding

VAULT_RESOURCE = "https://vault.azure.net"
PERMS = ("create", "import", "update", "list", "delete", "get", "recover", "purge", "backup",
         "restore")
NAME_RE = re.compile(r"[0-9A-Za-z-]{1,127}")
RECOVERABLE_DAYS = 90
RECOVERY_LEVEL = "Recoverable+Purgeable"
RSA_SIZES = (2048, 3072, 4096)
CURVES = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1,
          "P-256K": ec.SECP256K1}
CURVE_NAMES = {cls.name: crv for crv, cls in CURVES.items()}
KEY_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey", "import", "export")
RSA_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey", "import")
EC_OPS = ("sign", "verify")
DEFAULT_RSA_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
DEFAULT_EC_OPS = ["sign", "verify"]
MAX_RESULTS = 25
MAX_TAGS = 15
MAX_BODY = 1 << 20
BACKUP_MAGIC = b"keyorch-fake-kv-backup-1:"
BYOK_ENC = "CKM_RSA_AES_KEY_WRAP"
OIDC_SCOPES = {"openid", "profile", "offline_access"}
KV_JSON = "application/json; charset=utf-8"
FORBIDDEN_LINK = "https://go.microsoft.com/fwlink/?linkid=2125287"
NOT_FOUND_LINK = "https://go.microsoft.com/fwlink/?linkid=2125182"


def now():
    return int(time.time())


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    """base64url (padding optional; standard base64's + and / refused); None when it is not."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        return None
    text = text.rstrip("=")
    if len(text) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return None


def int_bytes(value, length=None):
    length = length or max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(length, "big")


def kcv(private):
    spki = private.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()[:8].hex()


def der_without_block_padding(der):
    """DER with up to 7 trailing zero bytes after its outer element removed.

    SoftHSM2 (keyorch's HSM in tests) zero-pads a private key's PKCS#8 encoding to a multiple
    of 8 bytes before it wraps it, also under CKM_AES_KEY_WRAP_PAD (RFC 5649), whose length
    indicator then counts the padding (SoftHSM2 pull request 307). Whether Key Vault takes
    such a key is not documented; this fake takes it (an accommodation, not Microsoft's
    stated behaviour: see docs/keystores.md), and anything else after the DER is still
    refused."""
    if len(der) < 2 or der[0] != 0x30:
        return der
    first = der[1]
    if first < 0x80:
        end = 2 + first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or len(der) < 2 + n:
            return der
        end = 2 + n + int.from_bytes(der[2:2 + n], "big")
    extra = der[end:]
    if 0 < len(extra) < 8 and extra == bytes(len(extra)):
        return der[:end]
    return der


def is_pkcs8(der):
    """Whether DER is a PKCS#8 PrivateKeyInfo (RFC 5208) / OneAsymmetricKey (RFC 5958):
    SEQUENCE { INTEGER 0 or 1, SEQUENCE algorithm, OCTET STRING ... }, not a bare PKCS#1
    RSAPrivateKey (SEQUENCE { INTEGER 0, INTEGER n, ... }) or SEC1 ECPrivateKey (SEQUENCE {
    INTEGER 1, OCTET STRING ... })."""

    def header(pos):
        if pos + 2 > len(der):
            return None
        tag, first = der[pos], der[pos + 1]
        pos += 2
        if first < 0x80:
            return tag, first, pos
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(der):
            return None
        return tag, int.from_bytes(der[pos:pos + n], "big"), pos + n

    outer = header(0)
    if outer is None or outer[0] != 0x30 or outer[2] + outer[1] != len(der):
        return False
    version = header(outer[2])
    if version is None or version[0] != 0x02 or version[1] != 1:
        return False
    if der[version[2]] not in (0, 1):
        return False
    algorithm = header(version[2] + 1)
    if algorithm is None or algorithm[0] != 0x30:
        return False
    key = header(algorithm[2] + algorithm[1])
    return key is not None and key[0] == 0x04


class ApiError(Exception):
    """An answer other than success: status and JSON body."""

    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def kv_error(status, code, message, inner=None, headers=None):
    err = {"code": code, "message": message}
    if inner:
        err["innererror"] = {"code": inner}
    return ApiError(status, {"error": err}, headers)


def bad(message):
    return kv_error(400, "BadParameter", message)


class Version:
    """One version of a key: the private key (memory only), its type and operations, its
    attributes and tags."""

    def __init__(self, private, kty, ops, enabled=True, nbf=None, exp=None, tags=None,
                 version=None, created=None, updated=None):
        self.version = version or uuid.uuid4().hex
        self.private = private
        self.kty = kty
        self.ops = list(ops)
        self.enabled = enabled
        self.nbf = nbf
        self.exp = exp
        self.tags = dict(tags or {})
        self.created = created if created is not None else now()
        self.updated = updated if updated is not None else self.created

    def is_rsa(self):
        return isinstance(self.private, rsa.RSAPrivateKey)


class Key:
    """A key name: its versions (oldest first) and, when soft-deleted, when."""

    def __init__(self, name):
        self.name = name
        self.versions = []
        self.deleted = None  # (deletedDate, scheduledPurgeDate)

    def latest(self):
        return self.versions[-1]

    def version(self, version):
        if not version:
            return self.latest()
        for v in self.versions:
            if v.version == version.lower():
                return v
        return None


class Fake:
    def __init__(self, args):
        self.tenant = args.tenant_id
        self.client_id = args.client_id
        self.client_secret = args.client_secret
        self.vault = args.vault_name
        self.location = args.location
        self.token_ttl = args.token_ttl
        self.deny = set(args.deny)
        self.oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.tenant}/{self.client_id}"))
        self.base = None  # set once the port is known
        self.lock = threading.Lock()
        self.keys = {}  # lower-case name -> Key
        self.issued = set()  # jti of every access token not revoked
        self.requests = []
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.signing_kid = secrets.token_hex(8)
        self.backup_key = AESGCM.generate_key(bit_length=256)

    # ----- Entra ID --------------------------------------------------------------------

    def entra_error(self, status, error, code, description):
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        return ApiError(status, {
            "error": error,
            "error_description": (f"AADSTS{code}: {description} Trace ID: {trace} "
                                  f"Correlation ID: {corr} Timestamp: {stamp}"),
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": f"{self.base}/error?code={code}",
        })

    def unknown_tenant(self, tenant, error):
        return self.entra_error(
            400, error, 90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud. Check with your subscription "
            "administrator, this may happen if there are no active subscriptions for the "
            "tenant.")

    def token(self, tenant, body):
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

        def field(name):
            return form.get(name, [""])[0]

        def missing(name):
            return self.entra_error(400, "invalid_request", 900144,
                                    f"The request body must contain the following parameter: "
                                    f"'{name}'.")

        if tenant.lower() != self.tenant.lower():
            raise self.unknown_tenant(tenant, "invalid_request")
        grant = field("grant_type")
        if not grant:
            raise missing("grant_type")
        if grant != "client_credentials":
            raise self.entra_error(400, "unsupported_grant_type", 70003,
                                   f"The app requested an unsupported grant type '{grant}'.")
        client = field("client_id")
        if not client:
            raise missing("client_id")
        if client.lower() != self.client_id.lower():
            raise self.entra_error(
                400, "unauthorized_client", 700016,
                f"Application with identifier '{client}' was not found in the directory "
                f"'{self.tenant}'. This can happen if the application has not been installed "
                "by the administrator of the tenant or consented to by any user in the tenant. "
                "You may have sent your authentication request to the wrong tenant.")
        secret = field("client_secret")
        if not secret:
            raise self.entra_error(401, "invalid_client", 7000216,
                                   "'client_assertion', 'client_secret' or 'request' is required "
                                   "for the 'client_credentials' grant type.")
        if not hmac.compare_digest(secret.encode(), self.client_secret.encode()):
            raise self.entra_error(
                401, "invalid_client", 7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                "the client secret value, not the client secret ID, for a secret added to app "
                f"'{self.client_id}'.")
        scopes = [s for s in field("scope").split() if s not in OIDC_SCOPES]
        if not scopes:
            raise missing("scope")
        for scope in scopes:
            if not scope.endswith("/.default"):
                raise self.entra_error(
                    400, "invalid_scope", 1002012,
                    f"The provided value for scope {scope} is not valid. Client credential flows "
                    "must have a scope value with /.default suffixed to the resource identifier "
                    "(application ID URI).")
            resource = scope[:-len("/.default")]
            if resource.rstrip("/").lower() != VAULT_RESOURCE:
                raise self.entra_error(
                    400, "invalid_resource", 500011,
                    f"The resource principal named {resource} was not found in the tenant named "
                    f"{self.tenant}. This can happen if the application has not been installed "
                    "by the administrator of the tenant or consented to by any user in the "
                    "tenant. You might have sent your authentication request to the wrong "
                    "tenant.")
        iat = now()
        jti = b64url(secrets.token_bytes(16))
        claims = {
            "aud": VAULT_RESOURCE,
            "iss": f"https://sts.windows.net/{self.tenant}/",
            "iat": iat,
            "nbf": iat,
            "exp": iat + self.token_ttl,
            "aio": b64url(secrets.token_bytes(24)),
            "appid": self.client_id,
            "appidacr": "1",
            "idp": f"https://sts.windows.net/{self.tenant}/",
            "idtyp": "app",
            "oid": self.oid,
            "sub": self.oid,
            "tid": self.tenant,
            "uti": jti,
            "ver": "1.0",
        }
        header = {"typ": "JWT", "alg": "RS256", "kid": self.signing_kid}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        signature = self.signing_key.sign(signing_input.encode(), padding.PKCS1v15(),
                                          hashes.SHA256())
        with self.lock:
            self.issued.add(jti)
        return 200, {
            "token_type": "Bearer",
            "expires_in": self.token_ttl,
            "ext_expires_in": self.token_ttl,
            "access_token": signing_input + "." + b64url(signature),
        }

    def openid_configuration(self, tenant):
        if tenant.lower() != self.tenant.lower():
            raise self.unknown_tenant(tenant, "invalid_tenant")
        t = f"{self.base}/{self.tenant}"
        return 200, {
            "token_endpoint": f"{t}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{t}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{t}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{t}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{t}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{t}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                                 "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat",
                                 "auth_time", "acr", "nonce", "preferred_username", "name",
                                 "tid", "ver", "at_hash", "c_hash", "email"],
            "kerberos_endpoint": f"{t}/kerberos",
            "tenant_region_scope": "WW",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def instance_discovery(self):
        host = urlsplit(self.base).netloc
        return 200, {
            "tenant_discovery_endpoint":
                f"{self.base}/{self.tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host,
                          "aliases": [host]}],
        }

    def jwks(self, tenant):
        if tenant.lower() != self.tenant.lower():
            raise self.unknown_tenant(tenant, "invalid_tenant")
        pub = self.signing_key.public_key().public_numbers()
        return 200, {"keys": [{"kty": "RSA", "use": "sig", "kid": self.signing_kid,
                               "n": b64url(int_bytes(pub.n)), "e": b64url(int_bytes(pub.e))}]}

    # ----- Key Vault: authentication and authorization ---------------------------------

    def unauthorized(self, message):
        challenge = (f'Bearer authorization="{self.base}/{self.tenant}", '
                     f'resource="{VAULT_RESOURCE}"')
        return kv_error(401, "Unauthorized", message, headers={"WWW-Authenticate": challenge})

    def authenticate(self, handler):
        auth = handler.headers.get("Authorization", "")
        scheme, _, token = auth.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise self.unauthorized("AKV10000: Request is missing a Bearer or PoP token.")
        invalid = self.unauthorized("[BearerReadAccessTokenFailed] Error validating token: "
                                    "'S2S12005'.")
        pieces = token.split(".")
        if len(pieces) != 3:
            raise invalid
        signature = b64url_decode(pieces[2])
        if signature is None:
            raise invalid
        try:
            self.signing_key.public_key().verify(signature,
                                                 (pieces[0] + "." + pieces[1]).encode(),
                                                 padding.PKCS1v15(), hashes.SHA256())
            claims = json.loads(b64url_decode(pieces[1]) or b"")
        except (InvalidSignature, ValueError):
            raise invalid from None
        if not isinstance(claims, dict):
            raise invalid
        if claims.get("aud") != VAULT_RESOURCE:
            raise self.unauthorized(f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, "
                                    f"found: {claims.get('aud')}.")
        with self.lock:
            known = claims.get("uti") in self.issued
        if not known or not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
            raise self.unauthorized("[TokenExpired] Error validating token: 'S2S12086'.")
        return claims

    def forbidden(self, perm):
        return kv_error(
            403, "Forbidden",
            f"The user, group or application 'appid={self.client_id};oid={self.oid};"
            f"iss=https://sts.windows.net/{self.tenant}/' does not have keys {perm} permission "
            f"on key vault '{self.vault};location={self.location}'. For help resolving this "
            f"issue, please see {FORBIDDEN_LINK}",
            inner="AccessDenied")

    # ----- Key Vault: JSON shapes ------------------------------------------------------

    def kid(self, key, version=None):
        return f"{self.base}/keys/{key.name}" + (f"/{version.version}" if version else "")

    def jwk(self, key, v):
        d = {"kid": self.kid(key, v), "kty": v.kty, "key_ops": list(v.ops)}
        pub = v.private.public_key().public_numbers()
        if v.is_rsa():
            d["n"] = b64url(int_bytes(pub.n))
            d["e"] = b64url(int_bytes(pub.e))
        else:
            size = (v.private.curve.key_size + 7) // 8
            d["crv"] = CURVE_NAMES[v.private.curve.name]
            d["x"] = b64url(int_bytes(pub.x, size))
            d["y"] = b64url(int_bytes(pub.y, size))
        return d

    def attributes(self, v):
        a = {"enabled": v.enabled}
        if v.nbf is not None:
            a["nbf"] = v.nbf
        if v.exp is not None:
            a["exp"] = v.exp
        a.update({"created": v.created, "updated": v.updated, "recoveryLevel": RECOVERY_LEVEL,
                  "recoverableDays": RECOVERABLE_DAYS, "exportable": False})
        return a

    def bundle(self, key, v):
        b = {"key": self.jwk(key, v), "attributes": self.attributes(v)}
        if v.tags:
            b["tags"] = dict(v.tags)
        return b

    def deletion(self, key):
        return {"recoveryId": f"{self.base}/deletedkeys/{key.name}",
                "deletedDate": key.deleted[0], "scheduledPurgeDate": key.deleted[1]}

    def deleted_bundle(self, key):
        return {**self.deletion(key), **self.bundle(key, key.latest())}

    def item(self, key, v, with_version):
        i = {"kid": self.kid(key, v if with_version else None), "attributes": self.attributes(v)}
        if v.tags:
            i["tags"] = dict(v.tags)
        return i

    # ----- Key Vault: request validation -----------------------------------------------

    def json_object(self, body):
        if not body:
            raise bad("The request body is empty: a JSON object is required.")
        try:
            req = json.loads(body)
        except ValueError as e:
            raise bad(f"The request body is not valid JSON: {e}") from None
        if not isinstance(req, dict):
            raise bad("The request body must be a JSON object.")
        return req

    def check_name(self, name):
        if not NAME_RE.fullmatch(name):
            raise bad(f"The request URI contains an invalid name: {name}")

    def not_found(self, name, version=None):
        ident = f"{name}/{version}" if version else name
        return kv_error(404, "KeyNotFound",
                        f"A key with (name/id) {ident} was not found in this key vault. If you "
                        "recently deleted this key you may be able to recover it using the "
                        f"correct recovery command. For help resolving this issue, please see "
                        f"{NOT_FOUND_LINK}")

    def deleted_not_found(self, name):
        return kv_error(404, "KeyNotFound", f"Deleted Key not found: {name}")

    def deleted_conflict(self, key):
        return kv_error(409, "Conflict",
                        f"Key {key.name} is currently in a deleted but recoverable state, and its "
                        "name cannot be reused; in this state, the key can only be recovered or "
                        "purged.", inner="ObjectIsDeletedButRecoverable")

    def active(self, name, version=None):
        """The key `name` (not soft-deleted) and its `version` (latest if empty), or 404.
        Call with the lock held."""
        key = self.keys.get(name.lower())
        if key is None or key.deleted:
            raise self.not_found(name, version)
        v = key.version(version)
        if v is None:
            raise self.not_found(name, version)
        return key, v

    def soft_deleted(self, name):
        key = self.keys.get(name.lower())
        if key is None or not key.deleted:
            raise self.deleted_not_found(name)
        return key

    def ops(self, requested, rsa_family):
        allowed = RSA_OPS if rsa_family else EC_OPS
        if requested is None:
            return list(DEFAULT_RSA_OPS if rsa_family else DEFAULT_EC_OPS)
        if not isinstance(requested, list) or not all(isinstance(o, str) for o in requested):
            raise bad('The property "key_ops" must be an array of key operations.')
        unknown = [o for o in requested if o not in KEY_OPS]
        if unknown:
            raise bad(f"Invalid key operation(s): {', '.join(json.dumps(o) for o in unknown)}.")
        unsupported = [o for o in requested if o not in allowed]
        if unsupported:
            raise bad(f"Unsupported key operation(s): "
                      f"{', '.join(json.dumps(o) for o in unsupported)}. Supported values are "
                      f"{', '.join(json.dumps(o) for o in allowed)}.")
        return list(requested)

    def attrs(self, raw):
        """(enabled or None, nbf, exp, which of them were given) of a request's attributes."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise bad('The property "attributes" must be an object.')
        out = {}
        if "enabled" in raw and raw["enabled"] is not None:
            if not isinstance(raw["enabled"], bool):
                raise bad('The property "attributes.enabled" must be a boolean.')
            out["enabled"] = raw["enabled"]
        for field in ("nbf", "exp"):
            if field in raw and raw[field] is not None:
                value = raw[field]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise bad(f'The property "attributes.{field}" must be a Unix time in '
                              "seconds.")
                out[field] = value
        if raw.get("exportable"):
            raise bad("Exportable keys need a release policy; this vault does not support them.")
        return out

    def tags(self, raw):
        if raw is None:
            return None
        if not isinstance(raw, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
            raise bad('The property "tags" must be an object of string values.')
        if len(raw) > MAX_TAGS:
            raise bad(f"A key can have at most {MAX_TAGS} tags.")
        if any(len(k) > 512 or len(v) > 256 for k, v in raw.items()):
            raise bad("Tag names are at most 512 characters, tag values at most 256.")
        return dict(raw)

    def page_size(self, query):
        raw = query.get("maxresults", [None])[0]
        if raw is None or raw == "":
            return MAX_RESULTS, False
        if not re.fullmatch(r"[0-9]+", raw) or not 1 <= int(raw) <= MAX_RESULTS:
            raise bad(f"The value of parameter 'maxresults' should be between 1 and "
                      f"{MAX_RESULTS}.")
        return int(raw), True

    def marker(self, query):
        raw = query.get("$skiptoken", [None])[0]
        if not raw:
            return None
        try:
            marker = json.loads(b64url_decode(raw) or b"")["NextMarker"]
        except (ValueError, KeyError, TypeError):
            raise bad("The value of parameter '$skiptoken' is not valid.") from None
        if not isinstance(marker, str):
            raise bad("The value of parameter '$skiptoken' is not valid.")
        return marker

    def page(self, path, query, entries):
        """One page of `entries` ((sort key, JSON) pairs) after the skiptoken's marker, and the
        nextLink of the rest (None at the end), as Key Vault pages its lists."""
        size, given = self.page_size(query)
        marker = self.marker(query)
        entries = sorted(entries, key=lambda e: e[0])
        if marker is not None:
            entries = [e for e in entries if e[0] > marker]
        page, rest = entries[:size], entries[size:]
        next_link = None
        if rest:
            token = b64url(json.dumps({"NextMarker": page[-1][0], "TargetLocation": 0},
                                      separators=(",", ":")).encode())
            api = quote(query.get("api-version", [""])[0], safe="")
            next_link = f"{self.base}{path}?api-version={api}&$skiptoken={token}"
            if given:
                next_link += f"&maxresults={size}"
        return 200, {"value": [e[1] for e in page], "nextLink": next_link}

    # ----- Key Vault: key material -----------------------------------------------------

    def generate(self, req):
        kty = req.get("kty")
        if kty is None:
            raise bad('The property "kty" is required.')
        if kty in ("oct", "oct-HSM"):
            raise bad(f"Key type {kty} is supported by Managed HSM only, not by this vault.")
        if kty in ("RSA", "RSA-HSM"):
            size = req.get("key_size", 2048)
            if size is None:
                size = 2048
            if isinstance(size, bool) or size not in RSA_SIZES:
                raise bad(f"The key size {size} is not valid for {kty}: use 2048, 3072 or 4096.")
            exponent = req.get("public_exponent", 65537)
            if exponent not in (None, 65537) or isinstance(exponent, bool):
                raise bad(f"The public exponent {exponent} is not supported: use 65537.")
            if req.get("crv") is not None:
                raise bad(f"The property \"crv\" is not valid for kty {kty}.")
            return kty, True, lambda: rsa.generate_private_key(public_exponent=65537,
                                                               key_size=size)
        if kty in ("EC", "EC-HSM"):
            crv = req.get("crv") or "P-256"
            if crv not in CURVES:
                raise bad(f"The curve {crv} is not supported: use P-256, P-384, P-521 or "
                          "P-256K.")
            if req.get("key_size") is not None:
                raise bad(f"The property \"key_size\" is not valid for kty {kty}.")
            return kty, False, lambda: ec.generate_private_key(CURVES[crv]())
        raise bad(f"The key type (kty) {kty!r} is not valid: use RSA, RSA-HSM, EC or EC-HSM.")

    def plain_import(self, jwk, hsm):
        """A private key from a plain JWK (no key_hsm)."""
        kty = jwk.get("kty")
        if kty in ("oct", "oct-HSM"):
            raise bad(f"Key type {kty} is supported by Managed HSM only, not by this vault.")
        if kty not in ("RSA", "RSA-HSM", "EC", "EC-HSM"):
            raise bad('The property "key" must be a valid JsonWebKey object.')

        def num(field, required=True):
            raw = jwk.get(field)
            if raw is None and not required:
                return None
            data = b64url_decode(raw)
            if not data:
                raise bad('The property "key" must be a valid JsonWebKey object.')
            return int.from_bytes(data, "big")

        try:
            if kty.startswith("RSA"):
                n, e, d = num("n"), num("e"), num("d")
                p, q = num("p", False), num("q", False)
                if p is None or q is None:
                    p, q = rsa.rsa_recover_prime_factors(n, e, d)
                numbers = rsa.RSAPrivateNumbers(
                    p, q, d, num("dp", False) or rsa.rsa_crt_dmp1(d, p),
                    num("dq", False) or rsa.rsa_crt_dmq1(d, q),
                    num("qi", False) or rsa.rsa_crt_iqmp(p, q),
                    rsa.RSAPublicNumbers(e, n))
                private = numbers.private_key()
                if private.key_size not in RSA_SIZES:
                    raise bad(f"RSA keys of {private.key_size} bits are not supported: use "
                              "2048, 3072 or 4096.")
            else:
                crv = jwk.get("crv")
                if crv not in CURVES:
                    raise bad(f"The curve {crv} is not supported: use P-256, P-384, P-521 or "
                              "P-256K.")
                private = ec.derive_private_key(num("d"), CURVES[crv]())
                pub = private.public_key().public_numbers()
                if (pub.x, pub.y) != (num("x"), num("y")):
                    raise bad("EC key is not valid - the public point does not match d.")
        except ValueError:
            raise bad(f"{'RSA' if kty.startswith('RSA') else 'EC'} key is not valid - cannot "
                      "instantiate crypto service") from None
        base = "RSA" if kty.startswith("RSA") else "EC"
        return private, (base + "-HSM" if hsm or kty.endswith("-HSM") else base)

    def resolve_kek(self, kid):
        """The KEK version a BYOK blob names (a key of this vault), or 400."""
        not_found = bad(f"The key encryption key (KEK) {kid} named in key_hsm was not found in "
                        "this key vault: BYOK imports need a KEK of the same vault.")
        if not isinstance(kid, str):
            raise bad("key_hsm is not a valid BYOK transfer blob: header.kid is missing.")
        url, base = urlsplit(kid), urlsplit(self.base)
        if (url.scheme.lower(), (url.netloc or "").lower()) != (base.scheme, base.netloc.lower()):
            raise not_found
        m = re.fullmatch(r"/keys/([^/]+)(?:/([^/]*))?/?", url.path)
        if not m:
            raise not_found
        with self.lock:
            key = self.keys.get(m.group(1).lower())
            if key is None or key.deleted:
                raise not_found
            v = key.version(m.group(2))
            if v is None:
                raise not_found
            return v.private, v.kty, list(v.ops), v.enabled

    def byok_import(self, jwk, kty, hsm):
        """The target key unwrapped from a BYOK transfer blob (key_hsm), or 400."""
        if kty not in ("RSA-HSM", "EC-HSM"):
            if kty == "oct-HSM":
                raise bad("Key type oct-HSM is supported by Managed HSM only, not by this vault.")
            raise bad(f"A key_hsm (BYOK) import needs kty RSA-HSM or EC-HSM, not {kty}.")
        if hsm is False:
            raise bad("A key_hsm (BYOK) import is a hardware key: Hsm must not be false.")
        raw = b64url_decode(jwk.get("key_hsm"))
        if not raw:
            raise bad("key_hsm is not a valid BYOK transfer blob: not base64url.")
        try:
            blob = json.loads(raw)
        except ValueError:
            raise bad("key_hsm is not a valid BYOK transfer blob: not JSON.") from None
        header = blob.get("header") if isinstance(blob, dict) else None
        if not isinstance(header, dict) or blob.get("schema_version") != "1.0.0":
            raise bad("key_hsm is not a valid BYOK transfer blob: schema_version 1.0.0 and a "
                      "header are required.")
        if header.get("alg") != "dir" or header.get("enc") != BYOK_ENC:
            raise bad(f"key_hsm is not a valid BYOK transfer blob: header alg must be \"dir\" "
                      f"and enc \"{BYOK_ENC}\".")
        ciphertext = b64url_decode(blob.get("ciphertext"))
        if not ciphertext:
            raise bad("key_hsm is not a valid BYOK transfer blob: ciphertext is not base64url.")
        kid = header.get("kid")
        kek, kek_kty, kek_ops, kek_enabled = self.resolve_kek(kid)
        if kek_kty != "RSA-HSM" or kek_ops != ["import"]:
            raise bad(f"The key encryption key (KEK) {kid} cannot be used for BYOK: a KEK must "
                      "be an RSA-HSM key whose key_ops are only \"import\".")
        if not kek_enabled:
            raise bad(f"The key encryption key (KEK) {kid} is disabled.")
        n = kek.key_size // 8
        unwrap_failed = bad(f"The key_hsm could not be unwrapped with the key encryption key "
                            f"(KEK) {kid} ({BYOK_ENC}: RSA-OAEP with SHA-1, then AES key wrap "
                            "with padding).")
        if len(ciphertext) <= n:
            raise unwrap_failed
        try:
            aes = kek.decrypt(ciphertext[:n], padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
                                                           algorithm=hashes.SHA1(), label=None))
        except ValueError:
            raise unwrap_failed from None
        if len(aes) not in (16, 24, 32):
            raise unwrap_failed
        try:
            der = aes_key_unwrap_with_padding(aes, ciphertext[n:])
        except (InvalidUnwrap, ValueError):
            raise unwrap_failed from None
        der = der_without_block_padding(der)
        if not is_pkcs8(der):
            raise bad("The key in key_hsm is not a PKCS#8 private key (RFC 5208).")
        try:
            private = serialization.load_der_private_key(der, password=None)
        except (ValueError, TypeError):
            raise bad("The key in key_hsm is not a valid private key.") from None
        if isinstance(private, rsa.RSAPrivateKey):
            if kty != "RSA-HSM":
                raise bad(f"The key type (kty) {kty} does not match the RSA key in key_hsm.")
            if private.key_size not in RSA_SIZES:
                raise bad(f"RSA keys of {private.key_size} bits are not supported: use 2048, "
                          "3072 or 4096.")
        elif isinstance(private, ec.EllipticCurvePrivateKey):
            if kty != "EC-HSM":
                raise bad(f"The key type (kty) {kty} does not match the EC key in key_hsm.")
            crv = CURVE_NAMES.get(private.curve.name)
            if crv is None:
                raise bad(f"The curve {private.curve.name} of the key in key_hsm is not "
                          "supported: use P-256, P-384, P-521 or P-256K.")
            if jwk.get("crv") is not None and jwk.get("crv") != crv:
                raise bad(f"The curve (crv) {jwk.get('crv')} does not match the {crv} key in "
                          "key_hsm.")
        else:
            raise bad("The key in key_hsm is neither an RSA nor an EC key.")
        return private

    def add_version(self, name, v):
        """Adds a version to `name` (a new key if there is none); 409 if soft-deleted."""
        with self.lock:
            key = self.keys.get(name.lower())
            if key is not None and key.deleted:
                raise self.deleted_conflict(key)
            if key is None:
                key = self.keys[name.lower()] = Key(name)
            key.versions.append(v)
            return 200, self.bundle(key, v)

    # ----- Key Vault: operations -------------------------------------------------------

    def create_key(self, name, body):
        req = self.json_object(body)
        kty, rsa_family, make = self.generate(req)
        ops = self.ops(req.get("key_ops"), rsa_family)
        attrs = self.attrs(req.get("attributes"))
        tags = self.tags(req.get("tags"))
        if req.get("release_policy") is not None:
            raise bad("Exportable keys need a release policy; this vault does not support them.")
        with self.lock:
            key = self.keys.get(name.lower())
            if key is not None and key.deleted:
                raise self.deleted_conflict(key)
        v = Version(make(), kty, ops, enabled=attrs.get("enabled", True), nbf=attrs.get("nbf"),
                    exp=attrs.get("exp"), tags=tags)
        return self.add_version(name, v)

    def import_key(self, name, body):
        req = self.json_object(body)
        jwk = req.get("key")
        if not isinstance(jwk, dict):
            raise bad('The property "key" must be a valid JsonWebKey object.')
        hsm = req.get("Hsm", req.get("hsm"))
        if hsm is not None and not isinstance(hsm, bool):
            raise bad('The property "Hsm" must be a boolean.')
        kty = jwk.get("kty")
        if jwk.get("key_hsm") is not None:
            private = self.byok_import(jwk, kty, hsm)
        else:
            private, kty = self.plain_import(jwk, hsm)
        ops = self.ops(jwk.get("key_ops"), isinstance(private, rsa.RSAPrivateKey))
        attrs = self.attrs(req.get("attributes"))
        tags = self.tags(req.get("tags"))
        if req.get("release_policy") is not None:
            raise bad("Exportable keys need a release policy; this vault does not support them.")
        v = Version(private, kty, ops, enabled=attrs.get("enabled", True), nbf=attrs.get("nbf"),
                    exp=attrs.get("exp"), tags=tags)
        return self.add_version(name, v)

    def get_key(self, name, version):
        with self.lock:
            key, v = self.active(name, version)
            return 200, self.bundle(key, v)

    def update_key(self, name, version, body):
        req = self.json_object(body)
        attrs = self.attrs(req.get("attributes"))
        tags = self.tags(req.get("tags"))
        with self.lock:
            key, v = self.active(name, version)
            ops = self.ops(req["key_ops"], v.is_rsa()) if req.get("key_ops") is not None else None
            if "enabled" in attrs:
                v.enabled = attrs["enabled"]
            for field in ("nbf", "exp"):
                if field in attrs:
                    setattr(v, field, attrs[field])
            if ops is not None:
                v.ops = ops
            if tags is not None:
                v.tags = tags
            v.updated = now()
            return 200, self.bundle(key, v)

    def list_keys(self, query):
        with self.lock:
            entries = [(k.name.lower(), self.item(k, k.latest(), False))
                       for k in self.keys.values() if not k.deleted]
        return self.page("/keys", query, entries)

    def list_versions(self, name, query):
        with self.lock:
            key = self.keys.get(name.lower())
            entries = []
            if key is not None and not key.deleted:
                entries = [(f"{i:08d}", self.item(key, v, True))
                           for i, v in enumerate(key.versions)]
        return self.page(f"/keys/{name}/versions", query, entries)

    def list_deleted(self, query):
        with self.lock:
            entries = [(k.name.lower(), {**self.deletion(k), **self.item(k, k.latest(), False)})
                       for k in self.keys.values() if k.deleted]
        return self.page("/deletedkeys", query, entries)

    def delete_key(self, name):
        with self.lock:
            key, _ = self.active(name)
            deleted = now()
            key.deleted = (deleted, deleted + RECOVERABLE_DAYS * 86400)
            return 200, self.deleted_bundle(key)

    def get_deleted(self, name):
        with self.lock:
            return 200, self.deleted_bundle(self.soft_deleted(name))

    def purge(self, name):
        with self.lock:
            key = self.soft_deleted(name)
            del self.keys[key.name.lower()]
        return 204, None

    def recover(self, name):
        with self.lock:
            key = self.soft_deleted(name)
            key.deleted = None
            return 200, self.bundle(key, key.latest())

    def backup(self, name):
        with self.lock:
            key, _ = self.active(name)
            record = {"name": key.name, "versions": [{
                "version": v.version, "kty": v.kty, "ops": v.ops, "enabled": v.enabled,
                "nbf": v.nbf, "exp": v.exp, "tags": v.tags, "created": v.created,
                "updated": v.updated,
                "pkcs8": b64url(v.private.private_bytes(serialization.Encoding.DER,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption())),
            } for v in key.versions]}
        nonce = os.urandom(12)
        sealed = AESGCM(self.backup_key).encrypt(nonce, json.dumps(record).encode(),
                                                 BACKUP_MAGIC)
        return 200, {"value": b64url(BACKUP_MAGIC + nonce + sealed)}

    def restore(self, body):
        req = self.json_object(body)
        blob = b64url_decode(req.get("value"))
        invalid = bad("The backup blob is not valid: it is corrupt, or it was not made by this "
                      "key vault's geography.")
        if not blob or not blob.startswith(BACKUP_MAGIC):
            raise invalid
        rest = blob[len(BACKUP_MAGIC):]
        try:
            record = json.loads(AESGCM(self.backup_key).decrypt(rest[:12], rest[12:],
                                                                BACKUP_MAGIC))
        except (InvalidTag, ValueError):
            raise invalid from None
        key = Key(record["name"])
        for r in record["versions"]:
            private = serialization.load_der_private_key(b64url_decode(r["pkcs8"]), None)
            key.versions.append(Version(private, r["kty"], r["ops"], r["enabled"], r["nbf"],
                                        r["exp"], r["tags"], r["version"], r["created"],
                                        r["updated"]))
        with self.lock:
            existing = self.keys.get(key.name.lower())
            if existing is not None and existing.deleted:
                raise self.deleted_conflict(existing)
            if existing is not None:
                raise kv_error(409, "Conflict",
                               f"There was a conflict restoring the key "
                               f"'{self.kid(existing, existing.latest())}'. Consider deleting "
                               "the existing key, or restoring into a different vault.")
            self.keys[key.name.lower()] = key
            return 200, self.bundle(key, key.latest())

    # ----- fake-only endpoints ---------------------------------------------------------

    def fake_check(self, name, query):
        version = query.get("version", [None])[0]
        with self.lock:
            key = self.keys.get(name.lower())
            v = key.version(version) if key is not None else None
            if v is None:
                raise ApiError(404, {"error": "no such key"})
            return 200, {"keyorch_kcv": kcv(v.private), "kty": v.kty, "version": v.version,
                         "enabled": v.enabled, "deleted": key.deleted is not None}

    def fake_delete(self, name):
        with self.lock:
            key = self.keys.get(name.lower())
            if key is None or key.deleted:
                raise ApiError(404, {"error": "no such key"})
            deleted = now()
            key.deleted = (deleted, deleted + RECOVERABLE_DAYS * 86400)
        return 204, None

    def fake_purge(self, name):
        with self.lock:
            if self.keys.pop(name.lower(), None) is None:
                raise ApiError(404, {"error": "no such key"})
        return 204, None

    def fake_deny(self, body):
        try:
            deny = json.loads(body)["deny"]
        except (ValueError, KeyError, TypeError):
            raise ApiError(400, {"error": 'the body must be {"deny": [PERM, ...]}'}) from None
        if not isinstance(deny, list) or not set(deny) <= set(PERMS):
            raise ApiError(400, {"error": f"deny: permissions among {', '.join(PERMS)}"})
        with self.lock:
            self.deny = set(deny)
            return 200, {"deny": sorted(self.deny)}

    def fake_revoke(self):
        with self.lock:
            self.issued.clear()
        return 204, None

    def fake_requests(self):
        with self.lock:
            return 200, {"requests": list(self.requests)}

    # ----- routing ---------------------------------------------------------------------

    def kv_route(self, method, parts):
        """(permission, operation) for a Key Vault path split at '/', or None."""
        n = len(parts)
        if parts[0] == "keys":
            if n == 1:
                return ("list", lambda q, b: self.list_keys(q)) if method == "GET" else None
            name = parts[1]
            if n == 2 and name == "restore" and method == "POST":
                return "restore", lambda q, b: self.restore(b)
            if n == 2 or (n == 3 and parts[2] == ""):
                return {
                    "PUT": ("import", lambda q, b: self.import_key(name, b)) if n == 2 else None,
                    "DELETE": ("delete", lambda q, b: self.delete_key(name)) if n == 2 else None,
                    "GET": ("get", lambda q, b: self.get_key(name, None)),
                    "PATCH": ("update", lambda q, b: self.update_key(name, None, b)),
                }.get(method)
            if n == 3:
                sub = parts[2]
                if sub == "create" and method == "POST":
                    return "create", lambda q, b: self.create_key(name, b)
                if sub == "backup" and method == "POST":
                    return "backup", lambda q, b: self.backup(name)
                if sub == "versions" and method == "GET":
                    return "list", lambda q, b: self.list_versions(name, q)
                if method == "GET":
                    return "get", lambda q, b: self.get_key(name, sub)
                if method == "PATCH":
                    return "update", lambda q, b: self.update_key(name, sub, b)
            return None
        if parts[0] == "deletedkeys":
            if n == 1:
                return ("list", lambda q, b: self.list_deleted(q)) if method == "GET" else None
            name = parts[1]
            if n == 2 and method == "GET":
                return "get", lambda q, b: self.get_deleted(name)
            if n == 2 and method == "DELETE":
                return "purge", lambda q, b: self.purge(name)
            if n == 3 and parts[2] == "recover" and method == "POST":
                return "recover", lambda q, b: self.recover(name)
        return None

    def route(self, handler, method, body):
        url = urlsplit(handler.path)
        path = url.path
        query = parse_qs(url.query, keep_blank_values=True)
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else [""]
        if path.rstrip("/") != path and len(parts) > 1:
            parts.append("")  # a trailing slash: /keys/{name}/ is the latest version

        # Entra ID
        m = re.fullmatch(r"/([^/]+)/oauth2/v2\.0/token", path)
        if m and method == "POST":
            return self.token(unquote(m.group(1)), body)
        m = re.fullmatch(r"/([^/]+)/v2\.0/\.well-known/openid-configuration", path)
        if m and method == "GET":
            return self.openid_configuration(unquote(m.group(1)))
        if re.fullmatch(r"/[^/]+/discovery/instance", path) and method == "GET":
            return self.instance_discovery()
        m = re.fullmatch(r"/([^/]+)/discovery/v2\.0/keys", path)
        if m and method == "GET":
            return self.jwks(unquote(m.group(1)))

        # fake-only
        m = re.fullmatch(r"/__fake__/keys/([^/]+)/(check|delete|purge)", path)
        if m:
            name, what = unquote(m.group(1)), m.group(2)
            if what == "check" and method == "GET":
                return self.fake_check(name, query)
            if what == "delete" and method == "POST":
                return self.fake_delete(name)
            if what == "purge" and method == "POST":
                return self.fake_purge(name)
        if path == "/__fake__/deny" and method == "POST":
            return self.fake_deny(body)
        if path == "/__fake__/tokens/revoke" and method == "POST":
            return self.fake_revoke()
        if path == "/__fake__/requests" and method == "GET":
            return self.fake_requests()
        if path.startswith("/__fake__/"):
            raise ApiError(404, {"error": "no such fake endpoint"})

        # Key Vault: token, api-version, permission, then the request itself.
        self.authenticate(handler)
        if not query.get("api-version", [""])[0]:
            raise bad("The 'api-version' query parameter is required.")
        found = self.kv_route(method, parts) if parts[0] in ("keys", "deletedkeys") else None
        if found is None:
            raise bad(f"The request {method} {path} is not a Key Vault keys operation this vault "
                      "supports.")
        perm, operation = found
        with self.lock:
            denied = perm in self.deny
        if denied:
            raise self.forbidden(perm)
        if len(parts) > 1 and parts[1] and not (parts[0] == "keys" and parts[1] == "restore"
                                                and method == "POST"):
            self.check_name(parts[1])
        return operation(query, body)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # an idle keep-alive connection is closed after this
    fake = None  # set in main

    def version_string(self):
        return "keyorch-azure-kv-fake"

    def handle_any(self, method):
        path = urlsplit(self.path).path
        headers = {}
        try:
            body = self.read_body()
            status, payload = self.fake.route(self, method, body)
        except ApiError as e:
            status, payload, headers = e.status, e.body, e.headers
        except Exception as e:  # a bug in the fake: say so, without details of the request
            print(f"fake azure_kv: internal error: {type(e).__name__}: {e}", file=sys.stderr,
                  flush=True)
            status, payload = 500, {"error": {"code": "InternalServerError",
                                              "message": "The fake failed; see its stderr."}}
        data = b"" if payload is None else json.dumps(payload).encode()
        if not path.startswith("/__fake__/"):
            with self.fake.lock:
                self.fake.requests.append({"method": method, "path": path, "status": status})
        self.send_response(status)
        entra = "/oauth2/" in path or "/v2.0/" in path or "/discovery/" in path
        self.send_header("Cache-Control", "no-store, no-cache" if entra else "no-cache")
        self.send_header("Pragma", "no-cache")
        self.send_header("Expires", "-1")
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        client_request = self.headers.get("x-ms-client-request-id")
        if client_request and re.fullmatch(r"[0-9A-Za-z-]{1,64}", client_request):
            self.send_header("x-ms-client-request-id", client_request)
        if not entra and not path.startswith("/__fake__/"):
            self.send_header("x-ms-keyvault-region", self.fake.location)
            self.send_header("x-ms-keyvault-service-version", "1.9.2164.1")
        for name, value in headers.items():
            self.send_header(name, value)
        if payload is not None:
            self.send_header("Content-Type", KV_JSON)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def read_body(self):
        """The request body, Content-Length or chunked, at most MAX_BODY bytes."""
        too_large = bad("The request body is too large.")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
                if len(body) > MAX_BODY:
                    self.close_connection = True
                    raise too_large
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise too_large
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self):  # noqa: N802
        self.handle_any("GET")

    def do_POST(self):  # noqa: N802
        self.handle_any("POST")

    def do_PUT(self):  # noqa: N802
        self.handle_any("PUT")

    def do_PATCH(self):  # noqa: N802
        self.handle_any("PATCH")

    def do_DELETE(self):  # noqa: N802
        self.handle_any("DELETE")

    def log_request(self, code="-", size="-"):
        # Only the method and path (no query, headers or body).
        path = urlsplit(self.path).path if hasattr(self, "path") else "-"
        method = getattr(self, "command", "-")
        code = getattr(code, "value", code)
        print(f"fake azure_kv: {method} {path} -> {code}", file=sys.stderr, flush=True)

    def log_error(self, format, *args):  # noqa: A002
        print(f"fake azure_kv: connection: {(format % args)[:160]}", file=sys.stderr,
              flush=True)


class Server(ThreadingHTTPServer):
    """Threaded; with TLS, the handshake runs in the connection's thread, not in accept()."""

    daemon_threads = True
    ssl_context = None

    def handle_error(self, request, client_address):
        # A client that went away mid-request: one line, no traceback.
        print(f"fake azure_kv: connection error: {sys.exc_info()[0].__name__}", file=sys.stderr,
              flush=True)

    def finish_request(self, request, client_address):
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
        # and the client's delayed ACK hold every answer back some 40 ms.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is None:
            self.RequestHandlerClass(request, client_address, self)
            return
        request.settimeout(30)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            print(f"fake azure_kv: TLS handshake failed: {type(e).__name__}", file=sys.stderr,
                  flush=True)
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            try:
                conn.close()
            except OSError:
                pass


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True, help="loopback port; 0 picks a free one")
    p.add_argument("--tenant-id", required=True, help="the one Entra ID tenant")
    p.add_argument("--client-id", required=True, help="the one application (client) id")
    p.add_argument("--client-secret", required=True, help="its one client secret")
    p.add_argument("--vault-name", default="keyorch-fake-vault", help="for messages")
    p.add_argument("--location", default="westeurope", help="for messages and headers")
    p.add_argument("--cert", help="PEM certificate: serve https")
    p.add_argument("--key", help="PEM private key of --cert")
    p.add_argument("--deny", default="",
                   help="comma-separated key permissions denied to the application: " +
                   ", ".join(PERMS))
    p.add_argument("--token-ttl", type=int, default=3599,
                   help="lifetime of access tokens in seconds (Entra's usual 3599)")
    args = p.parse_args()
    args.deny = [d for d in args.deny.split(",") if d]
    unknown = set(args.deny) - set(PERMS)
    if unknown:
        p.error(f"--deny: unknown permission(s) {', '.join(sorted(unknown))}")
    if bool(args.cert) != bool(args.key):
        p.error("--cert and --key go together")
    if args.token_ttl < 1:
        p.error("--token-ttl must be at least 1")
    if not re.fullmatch(r"[0-9A-Za-z.-]+", args.tenant_id):
        p.error("--tenant-id: letters, digits, '.' and '-' only")

    fake = Fake(args)
    Handler.fake = fake
    server = Server(("127.0.0.1", args.port), Handler)
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.cert, args.key)
        server.ssl_context = ctx
    port = server.server_address[1]
    fake.base = f"{'https' if args.cert else 'http'}://127.0.0.1:{port}"
    print(f"LISTENING {port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
