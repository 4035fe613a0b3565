#!/usr/bin/env python3
"""Proves the loopback Azure Key Vault / Microsoft Entra ID fake (tests/azure_kv/fake.py) honest
by driving it with Microsoft's official Python SDKs: PyPI azure-keyvault-keys (KeyClient) and
azure-identity (ClientSecretCredential, on MSAL), pinned in
scripts/azure-clients-requirements.lock. Every Key Vault operation goes through KeyClient (its
challenge authentication, its request bodies, its parsing of the answers) and every token
through ClientSecretCredential; plain urllib is used only to look at raw answers (exact JSON
shapes, headers, the bodies of refusals) and for the fake's own /__fake__/ endpoints (check
values, drift, the denied permissions), which Azure's API lacks.

    sdk_proof.py --section NAME --url URL --ca CA.pem --tenant-id T --client-id C
                 --client-secret S [--vault-name V] [--location L]

URL is a fake started with that tenant, client and secret (for --section deny: with
`--deny get`); --ca the CA that signed its certificate. Sections: entra, create, byok,
byok_refusals, deny, lifecycle, paging, update, backup. It prints `ok N ...` per check and
`PROOF OK section=... checks=N` at the end, and exits 1 with `PROOF FAILED: ...` at the first
mismatch. It never prints key material, a token or the client secret.

What the SDK needs to talk to a vault on https://127.0.0.1:PORT:
  * ClientSecretCredential(tenant, client, secret, authority=URL,
    disable_instance_discovery=True, connection_verify=CA): `authority` is the Entra ID host
    (MSAL then reads URL/<tenant>/v2.0/.well-known/openid-configuration and posts to its
    token_endpoint); disable_instance_discovery because MSAL would otherwise validate the
    authority against Microsoft's list of clouds (GET /common/discovery/instance);
    connection_verify because the fake's certificate is issued by a test CA (it reaches MSAL's
    HTTP client through azure-identity's pipeline).
  * KeyClient(vault_url=URL, credential, verify_challenge_resource=False, connection_verify=CA):
    the SDK sends its first request without a token and takes the scope from the 401's
    WWW-Authenticate challenge (resource="https://vault.azure.net" -> scope
    https://vault.azure.net/.default, tenant from authorization="URL/<tenant>");
    verify_challenge_resource=False because by default it insists that the vault's host ends
    with ".vault.azure.net" (the challenge resource's host), which 127.0.0.1 does not.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError,
                                   ResourceExistsError, ResourceNotFoundError)
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import JsonWebKey, KeyClient, KeyCurveName, KeyType
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

SCOPE = "https://vault.azure.net/.default"
KEK_NAME = "EKMF-BYOK-KEK-FOR-IMPORT"
PERMS = ("create", "import", "update", "list", "delete", "get", "recover", "purge", "backup",
         "restore")
RSA_DEFAULT_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
EC_DEFAULT_OPS = ["sign", "verify"]
SHA1 = hashes.SHA1()


class ProofFailed(Exception):
    pass


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def spki_kcv(public):
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()[:8].hex()


def pkcs8(private):
    return private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def byok_blob(kek_kid, kek_public, der, aes=None, kwp_aes=None, oaep_hash=SHA1,
              enc="CKM_RSA_AES_KEY_WRAP", tamper=None, truncate=False, schema="1.0.0"):
    """A .byok transfer blob (Azure's BYOK specification): RSA-OAEP(SHA-1) of an ephemeral
    AES-256 key || AES-KWP (RFC 5649) of the PKCS#8 key, in the JSON envelope. The optional
    arguments break one thing each."""
    aes = aes or os.urandom(32)
    wrapped_aes = kek_public.encrypt(aes, padding.OAEP(mgf=padding.MGF1(oaep_hash),
                                                       algorithm=oaep_hash, label=None))
    ciphertext = bytearray(wrapped_aes + aes_key_wrap_with_padding(kwp_aes or aes, der))
    if tamper is not None:
        ciphertext[tamper] ^= 0x01
    if truncate:
        ciphertext = ciphertext[:len(wrapped_aes)]
    return json.dumps({
        "schema_version": schema,
        "header": {"kid": kek_kid, "alg": "dir", "enc": enc},
        "ciphertext": b64url(bytes(ciphertext)),
        "generator": "keyorch tests/azure_kv/sdk_proof.py; cryptography",
    }).encode()


class Proof:
    def __init__(self, args):
        self.a = args
        self.url = args.url
        self.checks = 0
        self.ssl = ssl.create_default_context(cafile=args.ca)
        self.cred = self.credential()
        self.kc = self.client(self.cred)
        self._token = None

    # ----- plumbing ----------------------------------------------------------------------

    def credential(self, tenant=None, client=None, secret=None):
        return ClientSecretCredential(tenant or self.a.tenant_id, client or self.a.client_id,
                                      secret or self.a.client_secret, authority=self.url,
                                      disable_instance_discovery=True,
                                      connection_verify=self.a.ca)

    def client(self, credential):
        return KeyClient(vault_url=self.url, credential=credential,
                         verify_challenge_resource=False, connection_verify=self.a.ca)

    def ok(self, what):
        self.checks += 1
        print(f"ok {self.checks} {what}", flush=True)

    def check(self, cond, what, detail=""):
        if not cond:
            raise ProofFailed(f"{what}{': ' + str(detail) if detail else ''}")
        self.ok(what)

    def token(self):
        if self._token is None:
            self._token = self.cred.get_token(SCOPE).token
        return self._token

    def http(self, method, path, body=None, headers=None, form=None):
        """(status, headers, parsed JSON or None) of one raw request."""
        data = None
        headers = dict(headers or {})
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=30) as resp:
                raw = resp.read()
                return resp.status, resp.headers, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, e.headers, (json.loads(raw) if raw else None)

    def kv(self, method, path, body=None, token=None, api="7.5"):
        """A raw Key Vault request with a bearer token (api-version unless api is None)."""
        sep = "&" if "?" in path else "?"
        if api is not None:
            path = f"{path}{sep}api-version={api}"
        auth = {"Authorization": f"Bearer {token or self.token()}"} if token != "" else {}
        return self.http(method, path, body, auth)

    def fake(self, method, path, body=None):
        return self.http(method, path, body)

    def set_deny(self, perms):
        status, _, body = self.fake("POST", "/__fake__/deny", {"deny": list(perms)})
        if status != 200 or body["deny"] != sorted(perms):
            raise ProofFailed(f"/__fake__/deny {perms}: {status} {body}")

    def kcv(self, name, version=None):
        path = f"/__fake__/keys/{name}/check" + (f"?version={version}" if version else "")
        status, _, body = self.fake("GET", path)
        if status != 200:
            raise ProofFailed(f"/__fake__ check of {name}: {status} {body}")
        return body["keyorch_kcv"]

    def refused(self, what, call, status, code=None, exc=HttpResponseError, message=None):
        """`call` must raise `exc` with HTTP `status`, Key Vault error `code` and, if given, a
        message matching the regex `message`. Returns the error."""
        try:
            call()
        except exc as e:
            got = getattr(e, "status_code", None)
            err = getattr(e, "error", None)
            got_code = getattr(err, "code", None)
            got_message = getattr(err, "message", None) or str(e)
            if got != status:
                raise ProofFailed(
                    f"{what}: HTTP {got} instead of {status}: {got_message}") from None
            if code is not None and got_code != code:
                raise ProofFailed(f"{what}: code {got_code} instead of {code}: {got_message}")
            if message is not None and not re.search(message, got_message):
                raise ProofFailed(f"{what}: message {got_message!r} does not match {message!r}")
            self.ok(f"{what} -> {status} {code or ''}".rstrip())
            return e
        except HttpResponseError as e:
            raise ProofFailed(f"{what}: {type(e).__name__} (HTTP {e.status_code}) instead of "
                              f"{exc.__name__}: {e.message}") from None
        raise ProofFailed(f"{what}: succeeded, expected HTTP {status}")

    def kek(self, name=KEK_NAME, size=3072, ops=("import",), hsm=True):
        k = self.kc.create_rsa_key(name, size=size, hardware_protected=hsm,
                                   key_operations=list(ops))
        return k

    def byok_import(self, name, kek, private, kty=None, crv=None, ops=None, **blob_args):
        """Imports `private` with a BYOK blob under `kek` through the SDK."""
        der = blob_args.pop("der", None) or pkcs8(private)
        blob = byok_blob(kek.id, kek_public(kek), der, **blob_args)
        if kty is None:
            kty = KeyType.rsa_hsm if isinstance(private, rsa.RSAPrivateKey) else KeyType.ec_hsm
        jwk = JsonWebKey(kty=kty, t=blob, crv=crv, key_ops=ops)
        return self.kc.import_key(name, jwk, hardware_protected=True)

    def same_public(self, key, private):
        pub = private.public_key().public_numbers()
        if isinstance(private, rsa.RSAPrivateKey):
            return (int.from_bytes(key.key.n, "big"), int.from_bytes(key.key.e, "big")) == (
                pub.n, pub.e)
        return (int.from_bytes(key.key.x, "big"), int.from_bytes(key.key.y, "big")) == (
            pub.x, pub.y)

    def names(self):
        return sorted(p.name for p in self.kc.list_properties_of_keys())

    # ----- sections ----------------------------------------------------------------------

    def entra(self):
        a = self.a
        t = a.tenant_id
        # The SDK's own flow, first thing in this process (azure-keyvault-keys caches a
        # vault's challenge per process): no token, 401 challenge, openid-configuration, token,
        # the request again with the token.
        self.check(list(self.kc.list_properties_of_keys()) == [], "KeyClient lists an empty vault")
        flow = [(r["method"], r["path"], r["status"])
                for r in self.fake("GET", "/__fake__/requests")[2]["requests"]]
        self.check(flow == [("GET", "/keys", 401),
                            ("GET", f"/{t}/v2.0/.well-known/openid-configuration", 200),
                            ("POST", f"/{t}/oauth2/v2.0/token", 200),
                            ("GET", "/keys", 200)],
                   "KeyClient: 401 challenge, openid-configuration, token, retry", flow)

        # Through the SDK: each refusal of Entra ID is a ClientAuthenticationError carrying
        # Entra's AADSTS code.
        for what, cred, aadsts in (
                ("wrong client secret", self.credential(secret="not-" + a.client_secret),
                 "AADSTS7000215"),
                ("unknown client id", self.credential(client="0d1e2f3a-0000-4000-8000-"
                                                             "000000000000"), "AADSTS700016"),
                # MSAL reads the tenant's openid-configuration first; Entra answers it (like
                # the token endpoint) 400 AADSTS90002 for an unknown tenant, and MSAL reports
                # that as it does for the real service.
                ("unknown tenant", self.credential(tenant="9a8b7c6d-0000-4000-8000-000000000000"),
                 "Unable to get authority configuration")):
            try:
                cred.get_token(SCOPE)
            except ClientAuthenticationError as e:
                self.check(aadsts in str(e) and a.client_secret not in str(e),
                           f"{what}: ClientAuthenticationError with {aadsts}", str(e)[:300])
            else:
                raise ProofFailed(f"{what}: got a token")
        bad = self.client(self.credential(secret="not-" + a.client_secret))
        try:
            bad.get_key("never-existed")
        except ClientAuthenticationError as e:
            self.check("AADSTS7000215" in str(e),
                       "wrong client secret through KeyClient: ClientAuthenticationError")
        else:
            raise ProofFailed("KeyClient with a wrong secret got a key")

        # The raw token endpoint: Entra's exact shapes.
        form = {"grant_type": "client_credentials", "client_id": a.client_id,
                "client_secret": a.client_secret, "scope": SCOPE}
        status, _, body = self.http("POST", f"/{t}/oauth2/v2.0/token", form=form)
        self.check(status == 200 and set(body) == {"token_type", "expires_in", "ext_expires_in",
                                                   "access_token"}
                   and body["token_type"] == "Bearer" and body["expires_in"] == 3599
                   and body["ext_expires_in"] == 3599 and body["access_token"].count(".") == 2,
                   "token endpoint: 200 {token_type Bearer, expires_in 3599, ext_expires_in, "
                   "access_token JWT}", status)
        claims = json.loads(b64url_decode(body["access_token"].split(".")[1]))
        self.check(claims["aud"] == "https://vault.azure.net"
                   and claims["iss"] == f"https://sts.windows.net/{t}/"
                   and claims["tid"] == t and claims["appid"] == a.client_id,
                   "access token claims aud, iss, tid, appid")

        def entra_refusal(what, form_over, status, error, code, path=None):
            f = dict(form, **form_over)
            got, _, body = self.http("POST", path or f"/{t}/oauth2/v2.0/token", form=f)
            self.check(got == status and body["error"] == error and body["error_codes"] == [code]
                       and body["error_description"].startswith(f"AADSTS{code}: ")
                       and "Trace ID: " in body["error_description"]
                       and {"timestamp", "trace_id", "correlation_id", "error_uri"} <= set(body),
                       f"token endpoint, {what}: {status} {error} AADSTS{code}",
                       f"{got} {body}")

        entra_refusal("wrong secret", {"client_secret": "nope"}, 401, "invalid_client", 7000215)
        entra_refusal("no secret", {"client_secret": ""}, 401, "invalid_client", 7000216)
        entra_refusal("unknown client", {"client_id": "0d1e2f3a-0000-4000-8000-000000000000"},
                      400, "unauthorized_client", 700016)
        entra_refusal("unknown tenant", {}, 400, "invalid_request", 90002,
                      path="/9a8b7c6d-0000-4000-8000-000000000000/oauth2/v2.0/token")
        entra_refusal("another grant", {"grant_type": "password"}, 400, "unsupported_grant_type",
                      70003)
        entra_refusal("scope without /.default", {"scope": "https://vault.azure.net"}, 400,
                      "invalid_scope", 1002012)
        entra_refusal("another resource", {"scope": "https://management.azure.com/.default"},
                      400, "invalid_resource", 500011)
        status, _, body = self.http(
            "GET", "/9a8b7c6d-0000-4000-8000-000000000000/v2.0/.well-known/openid-configuration")
        self.check(status == 400 and body["error"] == "invalid_tenant"
                   and body["error_codes"] == [90002],
                   "openid-configuration of an unknown tenant: 400 invalid_tenant AADSTS90002")
        status, _, body = self.http("GET", f"/{t}/v2.0/.well-known/openid-configuration")
        self.check(status == 200
                   and body["token_endpoint"] == f"{self.url}/{t}/oauth2/v2.0/token"
                   and body["issuer"] == f"{self.url}/{t}/v2.0",
                   "openid-configuration: token_endpoint on the fake")

        # Key Vault's challenge: no token -> 401 with the challenge and AKV10000.
        status, headers, body = self.kv("GET", "/keys", token="")
        expected = f'Bearer authorization="{self.url}/{t}", resource="https://vault.azure.net"'
        self.check(status == 401 and headers.get("WWW-Authenticate") == expected
                   and body == {"error": {"code": "Unauthorized", "message":
                                          "AKV10000: Request is missing a Bearer or PoP token."}},
                   "no token: 401, WWW-Authenticate challenge, AKV10000",
                   f"{status} {headers.get('WWW-Authenticate')} {body}")
        forged = self.token()[:-4] + ("AAAA" if not self.token().endswith("AAAA") else "BBBB")
        status, headers, body = self.kv("GET", "/keys", token=forged)
        self.check(status == 401 and headers.get("WWW-Authenticate") == expected
                   and body["error"]["code"] == "Unauthorized",
                   "a token with a wrong signature: 401 with the challenge", f"{status} {body}")
        status, _, body = self.kv("GET", "/keys", api=None)
        self.check(status == 400 and body["error"]["code"] == "BadParameter",
                   "no api-version: 400 BadParameter", f"{status} {body}")
        for api in ("7.4", "7.6", "2025-07-01"):
            status, _, body = self.kv("GET", "/keys", api=api)
            self.check(status == 200 and body == {"value": [], "nextLink": None},
                       f"api-version={api}: 200 empty list", f"{status} {body}")

        # Revoked tokens are refused as expired; a new credential gets a new one.
        old = self.token()
        self.check(self.fake("POST", "/__fake__/tokens/revoke")[0] == 204, "fake: revoke tokens")
        status, headers, body = self.kv("GET", "/keys", token=old)
        self.check(status == 401 and "TokenExpired" in body["error"]["message"]
                   and headers.get("WWW-Authenticate") == expected,
                   "a revoked token: 401 TokenExpired with the challenge", f"{status} {body}")
        self.check(list(self.client(self.credential()).list_properties_of_keys()) == [],
                   "a new credential works after the revocation")

    def create(self):
        url = self.url
        kid_re = re.compile(re.escape(url) + r"/keys/([0-9A-Za-z-]+)/([0-9a-f]{32})")
        started = int(time.time())
        for name, call, kty, size_or_crv, ops in (
                ("rsa-default", lambda n: self.kc.create_rsa_key(n), "RSA", 2048, RSA_DEFAULT_OPS),
                ("rsa-3072", lambda n: self.kc.create_rsa_key(n, size=3072), "RSA", 3072,
                 RSA_DEFAULT_OPS),
                ("rsa-hsm-4096", lambda n: self.kc.create_rsa_key(n, size=4096,
                                                                  hardware_protected=True),
                 "RSA-HSM", 4096, RSA_DEFAULT_OPS),
                ("ec-default", lambda n: self.kc.create_ec_key(n), "EC", "P-256", EC_DEFAULT_OPS),
                ("ec-hsm-p384", lambda n: self.kc.create_ec_key(n, curve=KeyCurveName.p_384,
                                                                hardware_protected=True),
                 "EC-HSM", "P-384", EC_DEFAULT_OPS),
                ("ec-hsm-p521", lambda n: self.kc.create_ec_key(n, curve=KeyCurveName.p_521,
                                                                hardware_protected=True),
                 "EC-HSM", "P-521", EC_DEFAULT_OPS),
                ("ec-p256k", lambda n: self.kc.create_ec_key(n, curve=KeyCurveName.p_256_k),
                 "EC", "P-256K", EC_DEFAULT_OPS)):
            k = call(name)
            m = kid_re.fullmatch(k.id)
            p = k.properties
            shape = (k.key_type == kty and k.key_operations == ops and m is not None
                     and m.group(1) == name and p.enabled is True
                     and p.recovery_level == "Recoverable+Purgeable" and p.recoverable_days == 90
                     and p.exportable is False and p.created_on == p.updated_on
                     and abs(p.created_on.timestamp() - started) < 120)
            if kty.startswith("RSA"):
                shape = shape and len(k.key.n) == size_or_crv // 8 and k.key.e == b"\x01\x00\x01"
            else:
                size = {"P-256": 32, "P-256K": 32, "P-384": 48, "P-521": 66}[size_or_crv]
                shape = shape and k.key.crv == size_or_crv and len(k.key.x) == len(k.key.y) == size
            self.check(shape, f"create {name}: {kty} {size_or_crv}, default key_ops, kid, "
                       "attributes", f"{k.id} {k.key_type} {k.key_operations}")

        # The raw JSON: exactly Key Vault's field names and types.
        status, headers, body = self.kv("GET", "/keys/rsa-default/")
        key, attrs = body["key"], body["attributes"]
        self.check(status == 200 and headers.get("Content-Type") == "application/json; "
                   "charset=utf-8" and set(body) == {"key", "attributes"}
                   and set(key) == {"kid", "kty", "key_ops", "n", "e"}
                   and set(attrs) == {"enabled", "created", "updated", "recoveryLevel",
                                      "recoverableDays", "exportable"}
                   and all(type(attrs[f]) is int for f in ("created", "updated",
                                                           "recoverableDays"))
                   and "=" not in key["n"] and key["e"] == "AQAB",
                   "raw KeyBundle: field names, unixtime integers, unpadded base64url",
                   json.dumps(body)[:400])
        status, _, body = self.kv("GET", "/keys/ec-default")
        self.check(status == 200 and set(body["key"]) == {"kid", "kty", "key_ops", "crv", "x",
                                                          "y"},
                   "raw EC KeyBundle (no trailing slash): kid, kty, key_ops, crv, x, y")

        # Tags, attributes, new versions, names.
        k = self.kc.create_rsa_key("tagged", tags={"owner": "keyorch", "purpose": "test"},
                                   enabled=False)
        self.check(k.properties.tags == {"owner": "keyorch", "purpose": "test"}
                   and k.properties.enabled is False, "create with tags and enabled=false")
        k2 = self.kc.create_rsa_key("tagged")
        versions = [p.version for p in self.kc.list_properties_of_key_versions("tagged")]
        self.check(k2.properties.version != k.properties.version
                   and versions == [k.properties.version, k2.properties.version]
                   and self.kc.get_key("tagged").id == k2.id
                   and self.kc.get_key("tagged", k.properties.version).id == k.id,
                   "create on an existing name adds a version; get gives the latest or the one "
                   "asked")
        got = self.kc.get_key("TAGGED")
        self.check(got.id == k2.id and got.name == "tagged",
                   "names are case-insensitive; the kid keeps the first spelling")

        self.refused("RSA key_size 1024", lambda: self.kc.create_rsa_key("bad", size=1024), 400,
                     "BadParameter")
        self.refused("kty oct in a vault", lambda: self.kc.create_key("bad", KeyType.oct), 400,
                     "BadParameter", message="Managed HSM")
        self.refused("EC key with wrapKey", lambda: self.kc.create_ec_key(
            "bad", key_operations=["sign", "wrapKey", "unwrapKey"]), 400, "BadParameter",
            message=re.escape('Unsupported key operation(s): "wrapKey", "unwrapKey". Supported '
                              'values are "sign", "verify".'))
        self.refused("invalid name bad_name", lambda: self.kc.create_rsa_key("bad_name"), 400,
                     "BadParameter",
                     message=re.escape("The request URI contains an invalid name: bad_name"))
        self.refused("a 128-character name", lambda: self.kc.create_ec_key("n" * 128), 400,
                     "BadParameter")
        self.check(self.kc.create_ec_key("n" * 127).name == "n" * 127, "a 127-character name")
        status, _, body = self.kv("POST", "/keys/raw/create", {})
        self.check(status == 400 and body["error"]["code"] == "BadParameter",
                   "create without kty: 400 BadParameter", body)
        self.check("bad" not in self.names(), "no refused create left a key")

    def byok(self):
        kek = self.kek()
        self.check(kek.key_type == KeyType.rsa_hsm and kek.key_operations == ["import"]
                   and len(kek.key.n) == 384 and kek.name == KEK_NAME,
                   f"create {KEK_NAME}: RSA-HSM 3072, key_ops [import]")
        self.check(self.kcv(KEK_NAME) == spki_kcv(kek_public(kek)),
                   "the KEK's check value is SHA-256(SPKI)[:8] of its public key")

        rsa_target = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        k = self.byok_import("byok-rsa-2048", kek, rsa_target)
        self.check(k.key_type == KeyType.rsa_hsm and self.same_public(k, rsa_target)
                   and k.key_operations == RSA_DEFAULT_OPS and k.properties.enabled,
                   "BYOK import RSA-2048: RSA-HSM, the original public key, default key_ops")
        self.check(self.kcv("byok-rsa-2048") == spki_kcv(rsa_target.public_key()),
                   "BYOK RSA-2048: the fake holds exactly the key sent (check value)")

        ec_target = ec.generate_private_key(ec.SECP256R1())
        k = self.byok_import("byok-ec-p256", kek, ec_target, crv=KeyCurveName.p_256)
        self.check(k.key_type == KeyType.ec_hsm and k.key.crv == "P-256"
                   and self.same_public(k, ec_target) and k.key_operations == EC_DEFAULT_OPS,
                   "BYOK import EC P-256: EC-HSM, the original public point, key_ops sign, verify")
        self.check(self.kcv("byok-ec-p256") == spki_kcv(ec_target.public_key()),
                   "BYOK EC P-256: the fake holds exactly the key sent (check value)")

        p384 = ec.generate_private_key(ec.SECP384R1())
        k = self.byok_import("byok-ec-p384", kek, p384)
        self.check(k.key.crv == "P-384" and self.same_public(k, p384)
                   and self.kcv("byok-ec-p384") == spki_kcv(p384.public_key()),
                   "BYOK import EC P-384 without crv: the curve comes from the key")

        # key_ops, attributes and tags of the import request; a second version.
        rsa2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = pkcs8(rsa2)
        blob = byok_blob(kek.id, kek_public(kek), der)
        k2 = self.kc.import_key("byok-rsa-2048", JsonWebKey(kty=KeyType.rsa_hsm, t=blob,
                                                            key_ops=["wrapKey", "unwrapKey"]),
                                hardware_protected=True, enabled=False, tags={"src": "ekmf"})
        self.check(k2.key_operations == ["wrapKey", "unwrapKey"]
                   and k2.properties.enabled is False and k2.properties.tags == {"src": "ekmf"}
                   and self.same_public(k2, rsa2),
                   "BYOK import with key_ops, enabled=false and tags")
        versions = [p.version for p in
                    self.kc.list_properties_of_key_versions("byok-rsa-2048")]
        first = self.kc.get_key("byok-rsa-2048", versions[0])
        self.check(len(versions) == 2 and versions[1] == k2.properties.version
                   and self.same_public(first, rsa_target)
                   and self.kcv("byok-rsa-2048") == spki_kcv(rsa2.public_key())
                   and self.kcv("byok-rsa-2048", versions[0]) == spki_kcv(
                       rsa_target.public_key()),
                   "a second import adds a version; both versions keep their own material")

        # The raw request: what the SDK sent is what the BYOK spec describes.
        status, _, body = self.kv("PUT", "/keys/byok-raw", {
            "key": {"kty": "RSA-HSM", "key_hsm": b64url(byok_blob(kek.id, kek_public(kek),
                                                                  pkcs8(rsa_target)))},
            "Hsm": True})
        self.check(status == 200 and body["key"]["kty"] == "RSA-HSM"
                   and b64url_decode(body["key"]["n"]) == int_bytes(
                       rsa_target.public_key().public_numbers().n)
                   and "key_hsm" not in body["key"] and "d" not in body["key"],
                   "raw PUT /keys/{name} with key_hsm and Hsm: the public JWK comes back, no "
                   "private part", status)

        # A plain (non-BYOK) JWK import of an EC key works too.
        plain = ec.generate_private_key(ec.SECP256R1())
        n = plain.private_numbers()
        jwk = JsonWebKey(kty=KeyType.ec, crv=KeyCurveName.p_256,
                         x=int_bytes(n.public_numbers.x, 32), y=int_bytes(n.public_numbers.y, 32),
                         d=int_bytes(n.private_value, 32))
        k = self.kc.import_key("plain-ec", jwk)
        self.check(k.key_type == KeyType.ec and self.same_public(k, plain)
                   and self.kcv("plain-ec") == spki_kcv(plain.public_key()),
                   "plain JWK import (EC, software)")

    def byok_refusals(self):
        kek = self.kek()
        target = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ec_target = ec.generate_private_key(ec.SECP256R1())
        n = len(kek.key.n)

        def refused(what, name="refused", private=target, message=None, **kw):
            self.refused(f"BYOK {what}", lambda: self.byok_import(name, kek, private, **kw), 400,
                         "BadParameter", message=message)

        refused("wrong AES layer (key wrapped under another AES key)", kwp_aes=os.urandom(32),
                message="could not be unwrapped")
        refused("RSA-OAEP with SHA-256 instead of SHA-1", oaep_hash=hashes.SHA256(),
                message="could not be unwrapped")
        refused("tampered RSA part", tamper=n // 2, message="could not be unwrapped")
        refused("tampered AES-KWP part", tamper=n + 9, message="could not be unwrapped")
        refused("ciphertext without the wrapped key", truncate=True)
        refused("enc other than CKM_RSA_AES_KEY_WRAP", enc="RSA-OAEP")
        refused("schema_version 2.0.0", schema="2.0.0")
        refused("an RSA key labelled EC-HSM", kty=KeyType.ec_hsm, message="does not match")
        refused("an EC key labelled RSA-HSM", private=ec_target, kty=KeyType.rsa_hsm,
                message="does not match")
        refused("an EC P-256 key labelled crv P-384", private=ec_target, crv=KeyCurveName.p_384,
                message="does not match")
        refused("kty RSA (software) with key_hsm", kty=KeyType.rsa)
        refused("a PKCS#1 RSAPrivateKey instead of PKCS#8", der=target.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()), message="PKCS#8")
        refused("an RSA-1024 target", private=rsa.generate_private_key(
            public_exponent=65537, key_size=1024), message="1024")

        # The KEK itself.
        def with_kek(what, other_kek, message):
            self.refused(f"BYOK {what}", lambda: self.byok_import("refused", other_kek, target),
                         400, "BadParameter", message=message)

        default_ops = self.kek("kek-default-ops", size=2048, ops=RSA_DEFAULT_OPS)
        with_kek("under an RSA-HSM KEK with the default key_ops", default_ops, "only")
        mixed = self.kek("kek-import-wrap", size=2048, ops=("import", "wrapKey"))
        with_kek("under a KEK with key_ops [import, wrapKey]", mixed, "only")
        software = self.kek("kek-software", size=2048, hsm=False)
        self.check(software.key_type == KeyType.rsa and software.key_operations == ["import"],
                   "a software RSA key with key_ops [import] can be created")
        with_kek("under a software RSA KEK", software, "RSA-HSM")
        disabled = self.kek("kek-disabled", size=2048)
        self.kc.update_key_properties("kek-disabled", enabled=False)
        with_kek("under a disabled KEK", disabled, "disabled")
        deleted = self.kek("kek-deleted", size=2048)
        self.kc.begin_delete_key("kek-deleted").result()
        with_kek("under a soft-deleted KEK", deleted, "not found")

        class Foreign:
            id = "https://other-vault.vault.azure.net/keys/" + KEK_NAME + "/" + "0" * 32
            key = kek.key

        with_kek("naming a KEK of another vault", Foreign, "not found")

        status, _, body = self.kv("PUT", "/keys/refused", {
            "key": {"kty": "RSA-HSM", "key_hsm": b64url(b"not json")}, "Hsm": True})
        self.check(status == 400 and body["error"]["code"] == "BadParameter",
                   "BYOK key_hsm that is not a transfer blob: 400 BadParameter", body)
        status, _, body = self.kv("PUT", "/keys/refused", {"key": "nope"})
        self.check(status == 400 and body == {"error": {
            "code": "BadParameter", "message": 'The property "key" must be a valid JsonWebKey '
                                               'object.'}},
                   "import with a key that is no JsonWebKey: 400, Azure's text", body)

        self.refused("get of a refused import", lambda: self.kc.get_key("refused"), 404,
                     "KeyNotFound", exc=ResourceNotFoundError)
        self.check(self.names() == sorted([KEK_NAME, "kek-default-ops", "kek-import-wrap",
                                           "kek-software", "kek-disabled"]),
                   "no refused import left a key", self.names())
        k = self.byok_import("accepted", kek, target)
        self.check(self.same_public(k, target), "the same target under the right KEK imports")

    def deny(self):
        a = self.a
        never = "never-existed-7f3a"
        # The fake was started with --deny get.
        e = self.refused("--deny get: get_key of a never-existing name", lambda: self.kc.get_key(
            never), 403, "Forbidden")
        status, _, body = self.kv("GET", f"/keys/{never}/")
        expected = (f"The user, group or application 'appid={a.client_id};oid=")
        msg = body["error"]["message"]
        self.check(status == 403 and msg.startswith(expected)
                   and f";iss=https://sts.windows.net/{a.tenant_id}/' does not have keys get "
                       f"permission on key vault '{a.vault_name};location={a.location}'. For help "
                       "resolving this issue, please see "
                       "https://go.microsoft.com/fwlink/?linkid=2125287" in msg
                   and body["error"]["innererror"] == {"code": "AccessDenied"}
                   and e.error.innererror == {"code": "AccessDenied"},
                   "403 body: Azure's Forbidden text and innererror AccessDenied", body)
        self.check(self.names() == [], "--deny get: list still works")

        def probes():
            """(permission, what, call) of operations on names that never existed (or a
            garbage backup): none of them changes anything whether allowed or not."""
            return [
                ("create", "create_key with kty 'nope'", lambda: self.kc.create_key(never,
                                                                                    "nope")),
                ("import", "import_key of an empty JsonWebKey", lambda: self.kc.import_key(
                    never, JsonWebKey())),
                ("update", "update_key_properties", lambda: self.kc.update_key_properties(
                    never, enabled=True)),
                ("list", "list_properties_of_keys", lambda: list(
                    self.kc.list_properties_of_keys())),
                ("list", "list_properties_of_key_versions", lambda: list(
                    self.kc.list_properties_of_key_versions(never))),
                ("list", "list_deleted_keys", lambda: list(self.kc.list_deleted_keys())),
                ("delete", "begin_delete_key", lambda: self.kc.begin_delete_key(never)),
                ("get", "get_key", lambda: self.kc.get_key(never)),
                ("get", "get_deleted_key", lambda: self.kc.get_deleted_key(never)),
                ("recover", "begin_recover_deleted_key", lambda: self.kc.begin_recover_deleted_key(
                    never)),
                ("purge", "purge_deleted_key", lambda: self.kc.purge_deleted_key(never)),
                ("backup", "backup_key", lambda: self.kc.backup_key(never)),
                ("restore", "restore_key_backup of garbage", lambda: self.kc.restore_key_backup(
                    b"garbage")),
            ]

        def outcome(call):
            try:
                call()
                return 200, None
            except HttpResponseError as e:
                return e.status_code, e.error.message if e.error else str(e)

        expected_allowed = {"create": 400, "import": 400, "update": 404, "list": 200,
                            "delete": 404, "get": 404, "recover": 404, "purge": 404,
                            "backup": 404, "restore": 400}
        for perm in PERMS:
            self.set_deny([perm])
            for p, what, call in probes():
                status, message = outcome(call)
                if p == perm:
                    good = status == 403 and f"does not have keys {perm} permission" in message
                else:
                    good = status == expected_allowed[p]
                if not good:
                    raise ProofFailed(f"deny [{perm}]: {what} ({p}) answered {status}: {message}")
            self.ok(f"deny [{perm}]: 403 on exactly its operations, the others as allowed")
        self.set_deny([])
        for p, what, call in probes():
            status, message = outcome(call)
            if status != expected_allowed[p]:
                raise ProofFailed(f"deny []: {what} answered {status}: {message}")
        self.ok("deny []: every probe answers as allowed (404/400/200), nothing was created")
        self.check(self.names() == [] and list(self.kc.list_deleted_keys()) == [],
                   "the probes changed nothing")

        # Denials with real keys: the denied operation is refused and changes nothing, the
        # others work.
        self.kc.create_ec_key("real")
        self.set_deny(["delete"])
        self.refused("deny [delete]: delete of an existing key", lambda: self.kc.begin_delete_key(
            "real"), 403, "Forbidden")
        self.check(self.kc.get_key("real").name == "real"
                   and self.kc.update_key_properties("real", tags={"a": "b"}).properties.tags
                   == {"a": "b"} and len(self.kc.backup_key("real")) > 0
                   and self.kc.create_ec_key("real").name == "real",
                   "deny [delete]: the key is still there; get, update, backup, create work")
        self.set_deny(["purge"])
        self.kc.begin_delete_key("real").result()
        self.refused("deny [purge]: purge of a deleted key", lambda: self.kc.purge_deleted_key(
            "real"), 403, "Forbidden")
        self.check(self.kc.get_deleted_key("real").name == "real",
                   "deny [purge]: the deleted key is still recoverable")
        self.set_deny(["get"])
        self.kc.begin_recover_deleted_key("real").result()
        self.set_deny([])
        self.check(self.kc.get_key("real").name == "real",
                   "deny [get]: recover works (the SDK's poller stops at 403), the key is back")
        kek = self.kek(size=2048)
        target = ec.generate_private_key(ec.SECP256R1())
        self.set_deny(["import"])
        self.refused("deny [import]: a valid BYOK import", lambda: self.byok_import(
            "denied-import", kek, target), 403, "Forbidden")
        self.set_deny(["create"])
        self.check(self.byok_import("denied-import", kek, target).name == "denied-import",
                   "deny [create]: the same BYOK import works (import is not create)")
        self.set_deny([])

    def lifecycle(self):
        kek = self.kek(size=2048)
        target = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.byok_import("target", kek, target)
        poller = self.kc.begin_delete_key("target")
        d = poller.result()
        self.check(d.recovery_id == f"{self.url}/deletedkeys/target"
                   and d.scheduled_purge_date - d.deleted_date == datetime.timedelta(days=90)
                   and self.same_public(d, target),
                   "soft delete: DeletedKey with recoveryId, deletedDate, scheduledPurgeDate +90d")
        status, _, body = self.kv("GET", "/keys/target/")
        self.check(status == 404 and body["error"]["code"] == "KeyNotFound"
                   and body["error"]["message"].startswith(
                       "A key with (name/id) target was not found in this key vault. If you "
                       "recently deleted this key you may be able to recover it"),
                   "get of a soft-deleted key: 404 KeyNotFound, Azure's text", body)
        conflict = re.escape("Key target is currently in a deleted but recoverable state, and "
                             "its name cannot be reused; in this state, the key can only be "
                             "recovered or purged.")
        e = self.refused("re-import of a soft-deleted name", lambda: self.byok_import(
            "target", kek, target), 409, "Conflict", exc=ResourceExistsError, message=conflict)
        self.check(e.error.innererror == {"code": "ObjectIsDeletedButRecoverable"},
                   "409 innererror ObjectIsDeletedButRecoverable")
        self.refused("create on a soft-deleted name", lambda: self.kc.create_rsa_key("target"),
                     409, "Conflict", exc=ResourceExistsError, message=conflict)
        status, _, body = self.kv("GET", "/deletedkeys/target")
        self.check(status == 200 and set(body) == {"recoveryId", "deletedDate",
                                                   "scheduledPurgeDate", "key", "attributes"}
                   and type(body["deletedDate"]) is int,
                   "raw DeletedKeyBundle: recoveryId, deletedDate, scheduledPurgeDate, key, "
                   "attributes", body)
        self.check([k.name for k in self.kc.list_deleted_keys()] == ["target"],
                   "list_deleted_keys shows it")
        self.check(self.names() == [KEK_NAME], "list_properties_of_keys does not")

        self.kc.purge_deleted_key("target")
        self.refused("get_deleted_key after purge", lambda: self.kc.get_deleted_key("target"),
                     404, "KeyNotFound", exc=ResourceNotFoundError,
                     message=re.escape("Deleted Key not found: target"))
        again = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        k = self.byok_import("target", kek, again)
        self.check(self.same_public(k, again)
                   and self.kcv("target") == spki_kcv(again.public_key())
                   and len(list(self.kc.list_properties_of_key_versions("target"))) == 1,
                   "after purge the name imports again: one version, the new material")

        version = k.properties.version
        self.kc.begin_delete_key("target").result()
        r = self.kc.begin_recover_deleted_key("target").result()
        self.check(r.properties.version == version and self.same_public(r, again)
                   and self.kcv("target") == spki_kcv(again.public_key())
                   and self.kc.get_key("target").id == k.id,
                   "recover: the same version and material are back")

        # Drift behind the client's back.
        self.check(self.fake("POST", "/__fake__/keys/target/delete")[0] == 204,
                   "fake: soft delete behind the client's back")
        self.refused("get after the drift delete", lambda: self.kc.get_key("target"), 404,
                     "KeyNotFound", exc=ResourceNotFoundError)
        self.check(self.kc.get_deleted_key("target").name == "target"
                   and self.fake("GET", "/__fake__/keys/target/check")[2]["deleted"] is True,
                   "the drift-deleted key is in deleted keys")
        self.check(self.fake("POST", "/__fake__/keys/target/purge")[0] == 204,
                   "fake: purge behind the client's back")
        self.refused("get_deleted_key after the drift purge", lambda: self.kc.get_deleted_key(
            "target"), 404, "KeyNotFound", exc=ResourceNotFoundError)

        self.refused("delete of a never-existing key", lambda: self.kc.begin_delete_key(
            "never-existed"), 404, "KeyNotFound", exc=ResourceNotFoundError)
        self.refused("purge of a key that is not deleted", lambda: self.kc.purge_deleted_key(
            KEK_NAME), 404, "KeyNotFound", exc=ResourceNotFoundError)
        self.refused("recover of a key that is not deleted",
                     lambda: self.kc.begin_recover_deleted_key(KEK_NAME), 404, "KeyNotFound",
                     exc=ResourceNotFoundError)
        status, _, body = self.kv("DELETE", f"/deletedkeys/{KEK_NAME}")
        self.check(status == 404 and body == {"error": {
            "code": "KeyNotFound", "message": f"Deleted Key not found: {KEK_NAME}"}},
            "raw purge of a live key: 404 Deleted Key not found", body)
        status, _, body = self.kv("DELETE", f"/keys/{KEK_NAME}")
        status2, _, body2 = self.kv("DELETE", f"/deletedkeys/{KEK_NAME}")
        self.check(status == 200 and status2 == 204 and body2 is None,
                   "raw delete 200, purge 204 without a body")

    def paging(self):
        names = [f"page-{i:02d}" for i in range(7)]
        for n in names:
            self.kc.create_ec_key(n)
        for _ in range(2):
            self.kc.create_ec_key("page-03")
        pages = [[p.name for p in page]
                 for page in self.kc.list_properties_of_keys(max_page_size=3).by_page()]
        self.check(pages == [names[0:3], names[3:6], names[6:7]],
                   "list_properties_of_keys(max_page_size=3): pages of 3, 3, 1 in name order",
                   pages)
        status, _, body = self.kv("GET", "/keys?maxresults=3")
        link = body["nextLink"]
        self.check(status == 200 and len(body["value"]) == 3 and link.startswith(
            f"{self.url}/keys?api-version=7.5&$skiptoken=") and link.endswith("&maxresults=3")
                   and all(set(i) == {"kid", "attributes"} and i["kid"] == f"{self.url}/keys/"
                           f"{n}" for i, n in zip(body["value"], names)),
                   "raw list: KeyItems with version-less kids, nextLink with $skiptoken", body)
        path = link[len(self.url):]
        status, _, body = self.http("GET", path, headers={"Authorization":
                                                          f"Bearer {self.token()}"})
        self.check(status == 200 and [i["kid"].rsplit("/", 1)[1] for i in body["value"]]
                   == names[3:6], "following nextLink gives the next page")
        status, _, body = self.kv("GET", "/keys")
        self.check(body["nextLink"] is None and len(body["value"]) == 7,
                   "no maxresults: up to 25, nextLink null at the end")
        for bad in ("26", "0", "x"):
            status, _, body = self.kv("GET", f"/keys?maxresults={bad}")
            self.check(status == 400 and body["error"]["code"] == "BadParameter",
                       f"maxresults={bad}: 400 BadParameter")
        versions = [[p.version for p in page] for page in
                    self.kc.list_properties_of_key_versions("page-03", max_page_size=2).by_page()]
        self.check([len(p) for p in versions] == [2, 1]
                   and versions[1][0] == self.kc.get_key("page-03").properties.version,
                   "list_properties_of_key_versions(max_page_size=2): 2, 1, newest last")
        status, _, body = self.kv("GET", "/keys/page-03/versions")
        self.check(all(re.fullmatch(re.escape(self.url) + r"/keys/page-03/[0-9a-f]{32}", i["kid"])
                       for i in body["value"]), "versions' KeyItems have versioned kids")
        self.check(list(self.kc.list_properties_of_key_versions("never-existed")) == [],
                   "versions of an unknown name: empty")
        for n in names[:5]:
            self.kc.begin_delete_key(n).result()
        pages = [[d.name for d in page] for page in
                 self.kc.list_deleted_keys(max_page_size=2).by_page()]
        self.check(pages == [names[0:2], names[2:4], names[4:5]],
                   "list_deleted_keys(max_page_size=2): 2, 2, 1", pages)
        deleted = next(iter(self.kc.list_deleted_keys()))
        self.check(deleted.recovery_id == f"{self.url}/deletedkeys/{names[0]}"
                   and deleted.deleted_date is not None and deleted.scheduled_purge_date,
                   "DeletedKeyItems carry recoveryId, deletedDate, scheduledPurgeDate")
        self.check(self.names() == names[5:], "the list leaves deleted keys out")

    def update(self):
        k = self.kc.create_rsa_key("upd", hardware_protected=True)
        time.sleep(1.05)
        u = self.kc.update_key_properties("upd", enabled=False)
        g = self.kc.get_key("upd")
        self.check(u.properties.enabled is False and g.properties.enabled is False
                   and g.properties.updated_on > g.properties.created_on
                   and g.properties.version == k.properties.version,
                   "update enabled=False: reflected in get, updated moves on, same version")
        exp = datetime.datetime(2031, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        nbf = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        u = self.kc.update_key_properties("upd", enabled=True, tags={"env": "test"},
                                          key_operations=["sign", "verify"], expires_on=exp,
                                          not_before=nbf)
        g = self.kc.get_key("upd")
        self.check(g.properties.enabled is True and g.properties.tags == {"env": "test"}
                   and g.key_operations == ["sign", "verify"] and g.properties.expires_on == exp
                   and g.properties.not_before == nbf,
                   "update enabled, tags, key_ops, exp, nbf: reflected in get")
        status, _, body = self.kv("GET", "/keys/upd/")
        self.check(body["attributes"]["exp"] == int(exp.timestamp())
                   and body["attributes"]["nbf"] == int(nbf.timestamp()),
                   "raw attributes exp and nbf: unixtime integers")
        k2 = self.kc.create_rsa_key("upd")
        self.kc.update_key_properties("upd", k.properties.version, enabled=False)
        self.check(self.kc.get_key("upd").properties.enabled is True
                   and self.kc.get_key("upd", k.properties.version).properties.enabled is False
                   and self.kc.get_key("upd").id == k2.id,
                   "update of one version leaves the latest alone")
        self.refused("update of a never-existing key", lambda: self.kc.update_key_properties(
            "never-existed", enabled=False), 404, "KeyNotFound", exc=ResourceNotFoundError)
        self.refused("update of an unknown version", lambda: self.kc.update_key_properties(
            "upd", "0" * 32, enabled=False), 404, "KeyNotFound", exc=ResourceNotFoundError,
            message=re.escape(f"A key with (name/id) upd/{'0' * 32} was not found"))
        self.kc.create_ec_key("upd-ec")
        self.refused("update of an EC key with wrapKey", lambda: self.kc.update_key_properties(
            "upd-ec", key_operations=["wrapKey"]), 400, "BadParameter",
            message="Unsupported key operation")
        status, _, body = self.kv("PATCH", "/keys/upd/", {"attributes": {"enabled": "yes"}})
        self.check(status == 400 and body["error"]["code"] == "BadParameter",
                   "update with enabled not a boolean: 400")
        self.check(self.kc.get_key("upd").properties.enabled is True,
                   "a refused update changes nothing")

    def backup(self):
        kek = self.kek(size=2048)
        first = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        second = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        v1 = self.byok_import("bk", kek, first)
        v2 = self.byok_import("bk", kek, second)
        self.kc.update_key_properties("bk", tags={"keep": "me"})
        blob = self.kc.backup_key("bk")
        status, _, body = self.kv("POST", "/keys/bk/backup")
        self.check(isinstance(blob, bytes) and len(blob) > 64 and status == 200
                   and set(body) == {"value"} and "=" not in body["value"],
                   "backup_key: {value: base64url blob}")
        self.check(first.private_bytes(serialization.Encoding.DER,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()) not in blob,
                   "the backup blob does not carry the key in the clear")
        self.refused("restore while the key exists", lambda: self.kc.restore_key_backup(blob),
                     409, "Conflict", exc=ResourceExistsError)
        self.kc.begin_delete_key("bk").result()
        self.refused("restore while the key is soft-deleted", lambda: self.kc.restore_key_backup(
            blob), 409, "Conflict", exc=ResourceExistsError,
            message="deleted but recoverable state")
        self.kc.purge_deleted_key("bk")
        r = self.kc.restore_key_backup(blob)
        versions = [p.version for p in self.kc.list_properties_of_key_versions("bk")]
        self.check(r.id == v2.id and versions == [v1.properties.version, v2.properties.version]
                   and r.properties.tags == {"keep": "me"}
                   and self.kcv("bk") == spki_kcv(second.public_key())
                   and self.kcv("bk", v1.properties.version) == spki_kcv(first.public_key()),
                   "restore after purge: every version, its id, tags and material come back")
        self.refused("restore of garbage", lambda: self.kc.restore_key_backup(b"garbage"), 400,
                     "BadParameter")
        broken = bytearray(blob)
        broken[len(broken) // 2] ^= 0x01
        self.kc.begin_delete_key("bk").result()
        self.kc.purge_deleted_key("bk")
        self.refused("restore of a blob with one bit flipped", lambda: self.kc.restore_key_backup(
            bytes(broken)), 400, "BadParameter")
        self.check("bk" not in self.names(), "a refused restore creates nothing")

    def run(self, section):
        getattr(self, section)()
        print(f"PROOF OK section={section} checks={self.checks}", flush=True)


def kek_public(kek):
    return rsa.RSAPublicNumbers(int.from_bytes(kek.key.e, "big"),
                                int.from_bytes(kek.key.n, "big")).public_key()


def int_bytes(value, length=None):
    length = length or max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(length, "big")


SECTIONS = ("entra", "create", "byok", "byok_refusals", "deny", "lifecycle", "paging", "update",
            "backup")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--section", choices=SECTIONS, required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--tenant-id", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret", required=True)
    p.add_argument("--vault-name", default="keyorch-fake-vault")
    p.add_argument("--location", default="westeurope")
    args = p.parse_args()
    try:
        Proof(args).run(args.section)
    except ProofFailed as e:
        print(f"PROOF FAILED: {e}", flush=True)
        sys.exit(1)
    except HttpResponseError as e:
        print(f"PROOF FAILED: unexpected {type(e).__name__} (HTTP {e.status_code}): {e.message}",
              flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
