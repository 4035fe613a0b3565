#!/usr/bin/env python3
"""Proves the loopback Cloud KMS fake (tests/gcp_kms/fake.py) honest by driving it with Google's
official Python client only: PyPI `google-cloud-kms` (the generated KeyManagementServiceClient,
REST transport) with google-auth's service account credentials, pinned in
scripts/gcp-clients-requirements.lock. Every API call goes through the client (its
authentication, its URLs, its JSON); google-auth's AuthorizedSession (the client's own HTTP
session) sends the few raw requests that check JSON encodings the client never sends (enum
names, proto field names, unknown fields), and plain urllib is used only for the fake's own
/__fake__/ endpoints, which Google's API lacks.

    sdk_proof.py --section auth|import|lifecycle|deny --url URL --ca CA.pem
                 --key-file SA.json --key-ring projects/P/locations/L/keyRings/K
                 [--untrusted-key-file SA.json] [--job-delay SECONDS]

The key wrapping follows Google's "Importing a key" / "Wrapping a key" documents and its Python
sample (kms/snippets/import_manually_wrapped_key.py): RSA-OAEP of an ephemeral AES-256 key with
the import job's public key (SHA-1 or SHA-256 as the import method says, MGF1 with the same
hash, no label), then AES-KWP (RFC 5649, `aes_key_wrap_with_padding`) of the key material
under it; symmetric material as raw bytes, private keys as PKCS#8 DER.

TLS: the client's requests session (google.auth.transport.requests.AuthorizedSession, a
requests.Session) honours REQUESTS_CA_BUNDLE, and so does google-auth's token request; the
proof sets it to --ca before it makes a client. The api_endpoint is the fake's https URL.

It prints `ok N ...` per check and `PROOF OK section=... checks=N` at the end, and exits 1 with
`PROOF FAILED: ...` at the first mismatch. It never prints key material or a credential.
"""

import argparse
import hashlib
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import requests
from cryptography.hazmat.primitives import cmac, hashes, serialization
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.auth import jwt
from google.auth.transport.requests import AuthorizedSession
from google.cloud import kms_v1
from google.cloud.kms_v1.services.key_management_service.transports.rest import (
    KeyManagementServiceRestTransport,
)
from google.oauth2 import service_account

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
State = kms_v1.CryptoKeyVersion.CryptoKeyVersionState
Alg = kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm
Purpose = kms_v1.CryptoKey.CryptoKeyPurpose
JobState = kms_v1.ImportJob.ImportJobState
Method = kms_v1.ImportJob.ImportMethod
HSM = kms_v1.ProtectionLevel.HSM
SOFTWARE = kms_v1.ProtectionLevel.SOFTWARE
MSG_UNWRAP = "The key material in the import request couldn't be unwrapped or wasn't formatted correctly"
MSG_MALFORMED = "An argument to the import operation was malformed"
MSG_401 = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login "
           "cookie or other valid authentication credential. See "
           "https://developers.google.com/identity/sign-in/web/devconsole-project.")
# The permissions keyorch's google_cloud_kms keystore relies on.
RELIED = [
    "cloudkms.keyRings.get", "cloudkms.cryptoKeys.create", "cloudkms.cryptoKeys.get",
    "cloudkms.cryptoKeys.list", "cloudkms.cryptoKeys.update", "cloudkms.cryptoKeyVersions.create",
    "cloudkms.cryptoKeyVersions.get", "cloudkms.cryptoKeyVersions.list",
    "cloudkms.cryptoKeyVersions.update", "cloudkms.cryptoKeyVersions.destroy",
    "cloudkms.cryptoKeyVersions.restore", "cloudkms.cryptoKeyVersions.viewPublicKey",
    "cloudkms.importJobs.create", "cloudkms.importJobs.get", "cloudkms.importJobs.list",
    "cloudkms.importJobs.useToImport",
]


class ProofFailed(Exception):
    pass


def crc32c(data):
    """CRC-32C (Castagnoli, reflected 0x82F63B78), as Cloud KMS's *_crc32c fields use."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def pkcs8(key):
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def spki_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def kcv_secret(kind, material):
    """keyorch's check value (src/hsm/ops.rs kcv_of_secret): AES-CMAC over 16 zero bytes, or
    HMAC-SHA256 over 32 zero bytes; first 8 bytes, lowercase hex."""
    if kind == "aes":
        mac = cmac.CMAC(algorithms.AES(material))
        mac.update(bytes(16))
    else:
        mac = crypto_hmac.HMAC(material, hashes.SHA256())
        mac.update(bytes(32))
    return mac.finalize()[:8].hex()


def kcv_pair(key):
    """keyorch's check value of a key pair (kcv_of_public): SHA-256 over the DER SPKI."""
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()[:8].hex()


def wrap(job, target, oaep_hash=None, tamper=False):
    """wrappedKey for `job` (a kms_v1.ImportJob) as Google documents it: RSA-OAEP of an
    ephemeral AES-256 key, then AES-KWP of the target under it; or, for RSA_OAEP_*_SHA256,
    RSA-OAEP-SHA-256 of the target itself. `oaep_hash` overrides the method's hash; `tamper`
    flips a bit of the RSA part."""
    method = job.import_method.name
    public = serialization.load_pem_public_key(job.public_key.pem.encode())
    digest = oaep_hash or (hashes.SHA1 if "_SHA1_" in method else hashes.SHA256)
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=digest()), algorithm=digest(), label=None)
    if not method.endswith("_AES_256"):
        return public.encrypt(target, oaep)
    ephemeral = os.urandom(32)
    head = bytearray(public.encrypt(ephemeral, oaep))
    if tamper:
        head[len(head) // 2] ^= 0x01
    return bytes(head) + aes_key_wrap_with_padding(ephemeral, target)


class Proof:
    def __init__(self, args):
        self.args = args
        self.url = args.url
        self.kr = args.key_ring
        self.checks = 0
        self.ssl = ssl.create_default_context(cafile=args.ca) if args.ca else None
        if args.ca:
            os.environ["REQUESTS_CA_BUNDLE"] = args.ca
        self.info = json.load(open(args.key_file, encoding="utf-8"))
        self.creds = service_account.Credentials.from_service_account_info(self.info)
        self.c = self.client(self.creds)
        self.serial = 0

    # ----- plumbing ------------------------------------------------------------------------

    def client(self, creds, jwt_access=True):
        """The KMS client on the REST transport at the fake. jwt_access=False builds the
        transport itself with always_use_jwt_access=False, so that service account credentials
        go through the OAuth token endpoint (token_uri) instead of a self-signed JWT."""
        if jwt_access:
            return kms_v1.KeyManagementServiceClient(
                transport="rest", credentials=creds,
                client_options=ClientOptions(api_endpoint=self.url))
        transport = KeyManagementServiceRestTransport(host=self.url, credentials=creds,
                                                      always_use_jwt_access=False)
        return kms_v1.KeyManagementServiceClient(transport=transport)

    def ok(self, what):
        self.checks += 1
        print(f"ok {self.checks} {what}", flush=True)

    def check(self, cond, what, detail=""):
        if not cond:
            raise ProofFailed(f"{what}{': ' + str(detail) if detail else ''}")
        self.ok(what)

    def refused(self, what, call, http, status, message=None, reason=None):
        """`call` must fail with HTTP `http` and Google's error body of canonical `status`
        (and `message`, and an ErrorInfo `reason`, when given). Returns the error body."""
        try:
            call()
        except gexc.GoogleAPICallError as e:
            body = e.response.json() if e.response is not None else {}
            err = body.get("error", {})
            if e.code != http or err.get("code") != http or err.get("status") != status:
                raise ProofFailed(f"{what}: HTTP {e.code} {err.get('status')} instead of "
                                  f"{http} {status}: {json.dumps(body)}") from None
            if message is not None and err.get("message") != message:
                raise ProofFailed(f"{what}: message {err.get('message')!r}, not {message!r}")
            if reason is not None and e.reason != reason:
                raise ProofFailed(f"{what}: ErrorInfo reason {e.reason!r}, not {reason!r}: "
                                  f"{json.dumps(body)}")
            self.ok(f"{what} -> {http} {status}{' ' + reason if reason else ''}")
            return body
        raise ProofFailed(f"{what}: succeeded, expected HTTP {http} {status}")

    def fake(self, path, method="GET", body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def fake_check(self, name):
        return self.fake(f"/__fake__/versions/{urllib.parse.quote(name, safe='')}/check")

    def fake_state(self, name, state):
        status, body = self.fake(f"/__fake__/versions/{urllib.parse.quote(name, safe='')}/state",
                                 "POST", {"state": state})
        if status != 200:
            raise ProofFailed(f"fake state {state} of {name}: {status} {body}")

    def jwts(self):
        return self.fake("/__fake__/jwts")[1]["jwts"]

    def fresh(self, prefix):
        self.serial += 1
        return f"{prefix}-{self.serial}"

    def wait_job(self, name, timeout=60):
        deadline = time.time() + timeout
        while True:
            job = self.c.get_import_job(name=name)
            if job.state != JobState.PENDING_GENERATION or time.time() > deadline:
                return job
            time.sleep(0.05)

    def wait_version(self, name, timeout=30, client=None):
        deadline = time.time() + timeout
        while True:
            v = (client or self.c).get_crypto_key_version(name=name)
            if v.state not in (State.PENDING_IMPORT, State.PENDING_GENERATION) \
                    or time.time() > deadline:
                return v
            time.sleep(0.05)

    def job(self, job_id, method, level=HSM):
        return self.c.create_import_job(parent=self.kr, import_job_id=job_id, import_job={
            "import_method": method, "protection_level": level})

    def key(self, key_id, purpose, algorithm, level=HSM, import_only=True, skip=True, **extra):
        return self.c.create_crypto_key(request={
            "parent": self.kr, "crypto_key_id": key_id, "skip_initial_version_creation": skip,
            "crypto_key": dict({"purpose": purpose, "import_only": import_only,
                                "version_template": {"algorithm": algorithm,
                                                     "protection_level": level}}, **extra)})

    def import_(self, key, job, algorithm, wrapped, version=None, client=None):
        req = {"parent": key.name, "algorithm": algorithm, "import_job": job.name,
               "wrapped_key": wrapped}
        if version:
            req["crypto_key_version"] = version
        return (client or self.c).import_crypto_key_version(request=req)

    def imported(self, what, key, job, algorithm, target, expected_kcv):
        """Imports `target` and proves it arrived: PENDING_IMPORT, then ENABLED, and the fake's
        check value of the unwrapped material is keyorch's of `target`."""
        v = self.import_(key, job, algorithm, wrap(job, target))
        self.check(v.state == State.PENDING_IMPORT and v.import_job == job.name
                   and v.algorithm == algorithm and v.name.startswith(key.name + "/cryptoKeyVersions/"),
                   f"{what}: import_crypto_key_version answers PENDING_IMPORT", v)
        v = self.wait_version(v.name)
        self.check(v.state == State.ENABLED and v.reimport_eligible and v.import_time
                   and v.protection_level == key.version_template.protection_level,
                   f"{what}: the version becomes ENABLED (reimport_eligible, import_time)", v)
        status, body = self.fake_check(v.name)
        self.check(status == 200 and body["keyorch_kcv"] == expected_kcv,
                   f"{what}: the fake unwrapped exactly the material sent (keyorch kcv "
                   f"{expected_kcv})", body)
        return v

    def failed_import(self, what, key, job, algorithm, wrapped, reason):
        """The import is taken (PENDING_IMPORT) and then fails with `reason`, material gone."""
        v = self.import_(key, job, algorithm, wrapped)
        self.check(v.state == State.PENDING_IMPORT, f"{what}: taken as PENDING_IMPORT", v)
        v = self.wait_version(v.name)
        status, _ = self.fake_check(v.name)
        self.check(v.state == State.IMPORT_FAILED and v.import_failure_reason == reason
                   and status == 404, f"{what}: IMPORT_FAILED, {reason!r}, nothing kept", v)
        return v

    # ----- sections ------------------------------------------------------------------------

    def auth(self):
        a, kr = self.args, self.kr
        got = self.c.get_key_ring(name=kr)
        self.check(got.name == kr and got.create_time, "get_key_ring with the key file's "
                   "credentials (the client's self-signed JWT)")
        last = self.jwts()[-1]
        h, cl = last["header"], last["claims"]
        self.check(last["via"] == "api" and last["accepted"] and h == {
            "typ": "JWT", "alg": "RS256", "kid": self.info["private_key_id"]}
            and cl["iss"] == cl["sub"] == self.info["client_email"]
            and cl["aud"] == "https://cloudkms.googleapis.com/" and "scope" not in cl
            and cl["exp"] - cl["iat"] == 3600,
            "the Python client's self-signed JWT: RS256, kid = private_key_id, iss = sub = "
            "client_email, aud https://cloudkms.googleapis.com/, 1 h", last)

        scoped = self.client(self.creds.with_scopes([CLOUD_PLATFORM]))
        scoped.get_key_ring(name=kr)
        cl = self.jwts()[-1]["claims"]
        self.check(cl.get("scope") == CLOUD_PLATFORM and "aud" not in cl,
                   "with scopes, the self-signed JWT carries scope (cloud-platform), no aud", cl)

        via_token = self.client(self.creds.with_scopes([CLOUD_PLATFORM]), jwt_access=False)
        got = via_token.get_key_ring(name=kr)
        seen = [j for j in self.jwts() if j["via"] == "token"]
        self.check(got.name == kr and seen and seen[-1]["accepted"]
                   and seen[-1]["claims"]["aud"] == "https://oauth2.googleapis.com/token"
                   and seen[-1]["claims"]["scope"] == CLOUD_PLATFORM,
                   "always_use_jwt_access=False: the JWT-bearer grant at token_uri, then the "
                   "access token on the API", seen[-1] if seen else None)

        untrusted_info = json.load(open(a.untrusted_key_file, encoding="utf-8"))
        self.check(untrusted_info["private_key_id"] == self.info["private_key_id"]
                   and untrusted_info["private_key"] != self.info["private_key"],
                   "the untrusted key file has the trusted kid and e-mail but another key")
        untrusted = service_account.Credentials.from_service_account_info(untrusted_info)
        body = self.refused("a wrong key file (signature)", lambda: self.client(untrusted)
                            .get_key_ring(name=kr), 401, "UNAUTHENTICATED", MSG_401,
                            "ACCESS_TOKEN_TYPE_UNSUPPORTED")
        self.check(body["error"]["details"][0]["metadata"] == {
            "service": "cloudkms.googleapis.com",
            "method": "google.cloud.kms.v1.KeyManagementService.GetKeyRing"},
            "401 ErrorInfo names the service and method", body)
        try:
            self.client(untrusted.with_scopes([CLOUD_PLATFORM]), jwt_access=False) \
                .get_key_ring(name=kr)
            raise ProofFailed("the token endpoint took a wrong key's assertion")
        except auth_exceptions.RefreshError as e:
            self.check("invalid_grant" in str(e) and "Invalid JWT Signature." in str(e),
                       "a wrong key file at the token endpoint: invalid_grant, Invalid JWT "
                       "Signature.", e)

        other_kid = dict(self.info, private_key_id="0" * 40)
        self.refused("an unknown private_key_id (kid)", lambda: self.client(
            service_account.Credentials.from_service_account_info(other_kid))
            .get_key_ring(name=kr), 401, "UNAUTHENTICATED", MSG_401)
        other_email = dict(self.info, client_email="someone-else@" + self.info["project_id"]
                           + ".iam.gserviceaccount.com")
        self.refused("another issuer (client_email)", lambda: self.client(
            service_account.Credentials.from_service_account_info(other_email))
            .get_key_ring(name=kr), 401, "UNAUTHENTICATED", MSG_401)
        long_lived = jwt.Credentials.from_service_account_info(
            self.info, audience="https://cloudkms.googleapis.com/", token_lifetime=7200)
        self.refused("a 2-hour JWT", lambda: self.client(long_lived).get_key_ring(name=kr), 401,
                     "UNAUTHENTICATED", MSG_401)
        other_aud = jwt.Credentials.from_service_account_info(
            self.info, audience="https://storage.googleapis.com/")
        self.refused("a JWT for another service (aud)", lambda: self.client(other_aud)
                     .get_key_ring(name=kr), 401, "UNAUTHENTICATED", MSG_401)
        narrow = jwt.Credentials.from_service_account_info(
            self.info, audience=None,
            additional_claims={"scope": "https://www.googleapis.com/auth/devstorage.read_only"})
        self.refused("a JWT whose scope is not cloud-platform / cloudkms", lambda: self.client(
            narrow).get_key_ring(name=kr), 403, "PERMISSION_DENIED",
            "Request had insufficient authentication scopes.", "ACCESS_TOKEN_SCOPE_INSUFFICIENT")
        # No credentials: the client cannot send none (its session refreshes on 401), so
        # plain requests, the client's HTTP library.
        r = requests.get(f"{self.url}/v1/{kr}", timeout=30)
        err = r.json()["error"]
        self.check(r.status_code == 401 and err["status"] == "UNAUTHENTICATED"
                   and err["message"].startswith("Request is missing required authentication "
                                                 "credential.")
                   and err["details"][0]["reason"] == "CREDENTIALS_MISSING",
                   "no credentials at all: 401 UNAUTHENTICATED, CREDENTIALS_MISSING", err)
        r = requests.get(f"{self.url}/v1/{kr}", headers={"Authorization": "Bearer ya29.bogus"},
                         timeout=30)
        self.check(r.status_code == 401 and r.headers.get("WWW-Authenticate", "").startswith(
            'Bearer realm="https://accounts.google.com/"'),
            "an unknown access token: 401 with WWW-Authenticate: Bearer realm=...", r.headers)

        other = kr.replace(f"projects/{self.info['project_id']}/", "projects/another-project-1/")
        self.refused("a key ring of another project", lambda: self.c.get_key_ring(name=other),
                     403, "PERMISSION_DENIED",
                     f"Permission 'cloudkms.keyRings.get' denied on resource '{other}' (or it "
                     f"may not exist).", "IAM_PERMISSION_DENIED")
        missing = kr + "-missing"
        self.refused("a key ring that does not exist", lambda: self.c.get_key_ring(name=missing),
                     404, "NOT_FOUND", f"KeyRing {missing} not found.")

    def import_section(self):
        c, kr = self.c, self.kr
        # All import jobs at once (the fake runs with a long --import-job-delay), then poll.
        methods = {"sha1": Method.RSA_OAEP_3072_SHA1_AES_256,
                   "sha256": Method.RSA_OAEP_4096_SHA256_AES_256,
                   "sha256-3072": Method.RSA_OAEP_3072_SHA256_AES_256,
                   "direct": Method.RSA_OAEP_3072_SHA256}
        created = {n: self.job(f"job-{n}", m) for n, m in methods.items()}
        soft = self.job("job-software", Method.RSA_OAEP_3072_SHA1_AES_256, SOFTWARE)
        first = created["sha1"]
        self.check(first.state == JobState.PENDING_GENERATION and not first.public_key.pem
                   and first.protection_level == HSM
                   and first.import_method == Method.RSA_OAEP_3072_SHA1_AES_256
                   and (first.expire_time - first.create_time).total_seconds() == 3 * 24 * 3600,
                   "create_import_job: PENDING_GENERATION, no public key yet, expires in 3 days",
                   first)
        self.refused("importing with a job still PENDING_GENERATION", lambda: c.import_crypto_key_version(
            request={"parent": self.key("early", Purpose.ENCRYPT_DECRYPT,
                                        Alg.GOOGLE_SYMMETRIC_ENCRYPTION).name,
                     "algorithm": Alg.GOOGLE_SYMMETRIC_ENCRYPTION, "import_job": first.name,
                     "wrapped_key": os.urandom(384 + 40)}), 400, "FAILED_PRECONDITION")
        self.refused("a duplicate importJobId", lambda: self.job(
            "job-sha1", Method.RSA_OAEP_3072_SHA1_AES_256), 409, "ALREADY_EXISTS",
            f"ImportJob {first.name} already exists.")
        jobs = {n: self.wait_job(j.name) for n, j in created.items()}
        soft = self.wait_job(soft.name)
        for n, j in jobs.items():
            public = serialization.load_pem_public_key(j.public_key.pem.encode())
            bits = 4096 if "4096" in j.import_method.name else 3072
            waited = (j.generate_time - j.create_time).total_seconds()
            self.check(j.state == JobState.ACTIVE and isinstance(public, rsa.RSAPublicKey)
                       and public.key_size == bits and waited >= self.args.job_delay,
                       f"import job {n} ({j.import_method.name}): polled to ACTIVE after "
                       f"{waited:.1f} s, an RSA-{bits} wrapping key (SPKI PEM)", j)

        # Keys for import: import-only, created without an initial version.
        aes = self.key("aes", Purpose.ENCRYPT_DECRYPT, Alg.GOOGLE_SYMMETRIC_ENCRYPTION)
        self.check(aes.import_only and aes.purpose == Purpose.ENCRYPT_DECRYPT
                   and aes.version_template.protection_level == HSM and not aes.primary.name
                   and aes.destroy_scheduled_duration.total_seconds() == 30 * 24 * 3600,
                   "create_crypto_key: import-only AES-256, HSM, no version, 30-day destroy "
                   "schedule", aes)
        hm = self.key("hmac", Purpose.MAC, Alg.HMAC_SHA256)
        rs = self.key("rsa", Purpose.ASYMMETRIC_SIGN, Alg.RSA_SIGN_PKCS1_2048_SHA256)
        rd = self.key("rsa-decrypt", Purpose.ASYMMETRIC_DECRYPT, Alg.RSA_DECRYPT_OAEP_2048_SHA256)
        e256 = self.key("ec-p256", Purpose.ASYMMETRIC_SIGN, Alg.EC_SIGN_P256_SHA256)
        e384 = self.key("ec-p384", Purpose.ASYMMETRIC_SIGN, Alg.EC_SIGN_P384_SHA384)

        material = os.urandom(32)
        v = self.imported("AES-256 with RSA_OAEP_3072_SHA1_AES_256", aes, jobs["sha1"],
                          Alg.GOOGLE_SYMMETRIC_ENCRYPTION, material, kcv_secret("aes", material))
        self.check(c.get_crypto_key(name=aes.name).primary.name == "",
                   "an imported version does not become primary by itself")
        material = os.urandom(32)
        self.imported("AES-256 with RSA_OAEP_4096_SHA256_AES_256 (a second version)", aes,
                      jobs["sha256"], Alg.GOOGLE_SYMMETRIC_ENCRYPTION, material,
                      kcv_secret("aes", material))
        material = os.urandom(32)
        self.imported("AES-256 wrapped directly with RSA_OAEP_3072_SHA256", aes, jobs["direct"],
                      Alg.GOOGLE_SYMMETRIC_ENCRYPTION, material, kcv_secret("aes", material))
        material = os.urandom(32)
        self.imported("HMAC-SHA256 (32 raw bytes) with RSA_OAEP_3072_SHA256_AES_256", hm,
                      jobs["sha256-3072"], Alg.HMAC_SHA256, material, kcv_secret("hmac", material))

        pairs = [("RSA-2048 PKCS#8 with RSA_OAEP_3072_SHA1_AES_256", rs, jobs["sha1"],
                  Alg.RSA_SIGN_PKCS1_2048_SHA256,
                  rsa.generate_private_key(public_exponent=65537, key_size=2048)),
                 ("RSA-2048 decrypt key with RSA_OAEP_4096_SHA256_AES_256", rd, jobs["sha256"],
                  Alg.RSA_DECRYPT_OAEP_2048_SHA256,
                  rsa.generate_private_key(public_exponent=65537, key_size=2048)),
                 ("EC P-256 PKCS#8 with RSA_OAEP_3072_SHA256_AES_256", e256, jobs["sha256-3072"],
                  Alg.EC_SIGN_P256_SHA256, ec.generate_private_key(ec.SECP256R1())),
                 ("EC P-384 PKCS#8 with RSA_OAEP_3072_SHA1_AES_256", e384, jobs["sha1"],
                  Alg.EC_SIGN_P384_SHA384, ec.generate_private_key(ec.SECP384R1()))]
        for what, key, job, alg, private in pairs:
            v = self.imported(what, key, job, alg, pkcs8(private), kcv_pair(private))
            pub = c.get_public_key(name=v.name)
            self.check(pub.pem == spki_pem(private) and pub.algorithm == alg
                       and pub.name == v.name and pub.protection_level == HSM
                       and pub.pem_crc32c == crc32c(pub.pem.encode()),
                       f"{what}: get_public_key is the key's SPKI PEM, pem_crc32c its CRC32C", pub)

        # What is refused in the call, before any unwrapping.
        def imp(key, job, alg, wrapped):
            return lambda: self.import_(key, job, alg, wrapped)

        short = wrap(jobs["sha1"], os.urandom(32))
        self.refused("a KWP part that is not whole 64-bit blocks", imp(
            aes, jobs["sha1"], Alg.GOOGLE_SYMMETRIC_ENCRYPTION, short[:-3]), 400,
            "INVALID_ARGUMENT", "Wrapped key does not consist of 64-bit blocks")
        self.refused("only the RSA part", imp(aes, jobs["sha1"], Alg.GOOGLE_SYMMETRIC_ENCRYPTION,
                                              short[:384]), 400, "INVALID_ARGUMENT",
                     "Wrapped key is too short")
        self.refused("16 bytes of material for GOOGLE_SYMMETRIC_ENCRYPTION", imp(
            aes, jobs["sha1"], Alg.GOOGLE_SYMMETRIC_ENCRYPTION, wrap(jobs["sha1"], os.urandom(16))),
            400, "INVALID_ARGUMENT", "Wrapped key has invalid length")
        big = pkcs8(ec.generate_private_key(ec.SECP384R1()))
        wrapped = wrap(jobs["sha1"], big)
        self.refused("a P-384 key as EC_SIGN_P256_SHA256", imp(
            e256, jobs["sha1"], Alg.EC_SIGN_P256_SHA256, wrapped), 400, "INVALID_ARGUMENT",
            f"Wrapped ECDSA key has invalid length of {len(wrapped)}.")
        self.refused("an RSA key through RSA_OAEP_3072_SHA256 (direct)", imp(
            rs, jobs["direct"], Alg.RSA_SIGN_PKCS1_2048_SHA256, os.urandom(384)), 400,
            "INVALID_ARGUMENT")
        self.refused("an HMAC algorithm into an ENCRYPT_DECRYPT key", imp(
            aes, jobs["sha1"], Alg.HMAC_SHA256, wrap(jobs["sha1"], os.urandom(32))), 400,
            "INVALID_ARGUMENT")
        self.refused("an HSM key with a SOFTWARE import job", imp(
            aes, soft, Alg.GOOGLE_SYMMETRIC_ENCRYPTION, wrap(soft, os.urandom(32))), 400,
            "INVALID_ARGUMENT")
        self.refused("no wrapped key", lambda: c.import_crypto_key_version(request={
            "parent": aes.name, "algorithm": Alg.GOOGLE_SYMMETRIC_ENCRYPTION,
            "import_job": jobs["sha1"].name}), 400, "INVALID_ARGUMENT")
        missing = f"{kr}/importJobs/no-such-job"
        self.refused("an import job that does not exist", imp(
            aes, kms_v1.ImportJob(name=missing), Alg.GOOGLE_SYMMETRIC_ENCRYPTION, short), 404,
            "NOT_FOUND", f"ImportJob {missing} not found.")

        # What fails in the unwrap: taken, then IMPORT_FAILED.
        m = os.urandom(32)
        self.failed_import("a flipped bit in the RSA-OAEP part", aes, jobs["sha1"],
                           Alg.GOOGLE_SYMMETRIC_ENCRYPTION, wrap(jobs["sha1"], m, tamper=True),
                           MSG_UNWRAP)
        self.failed_import("OAEP with SHA-256 for a SHA-1 job", aes, jobs["sha1"],
                           Alg.GOOGLE_SYMMETRIC_ENCRYPTION,
                           wrap(jobs["sha1"], m, oaep_hash=hashes.SHA256), MSG_UNWRAP)
        self.failed_import("wrapped for another job's key", aes, jobs["sha1"],
                           Alg.GOOGLE_SYMMETRIC_ENCRYPTION, wrap(jobs["sha256-3072"], m),
                           MSG_UNWRAP)
        good = bytearray(wrap(jobs["sha1"], m))
        good[-1] ^= 0x01
        self.failed_import("a flipped bit in the AES-KWP part", aes, jobs["sha1"],
                           Alg.GOOGLE_SYMMETRIC_ENCRYPTION, bytes(good), MSG_UNWRAP)
        self.failed_import("an RSA-3072 key as RSA_SIGN_PKCS1_2048_SHA256", rs, jobs["sha1"],
                           Alg.RSA_SIGN_PKCS1_2048_SHA256, wrap(jobs["sha1"], pkcs8(
                               rsa.generate_private_key(public_exponent=65537, key_size=3072))),
                           MSG_MALFORMED)
        self.failed_import("a secp256k1 key as EC_SIGN_P256_SHA256", e256, jobs["sha1"],
                           Alg.EC_SIGN_P256_SHA256, wrap(jobs["sha1"], pkcs8(
                               ec.generate_private_key(ec.SECP256K1()))), MSG_MALFORMED)
        self.failed_import("40 random bytes, no PKCS#8", rs, jobs["sha1"],
                           Alg.RSA_SIGN_PKCS1_2048_SHA256, wrap(jobs["sha1"], os.urandom(40)),
                           MSG_UNWRAP)

        # Keys and ids.
        self.refused("create_crypto_key_version on an import-only key", lambda: c
                     .create_crypto_key_version(parent=aes.name, crypto_key_version={}), 400,
                     "FAILED_PRECONDITION")
        self.refused("an import-only key without skip_initial_version_creation", lambda: self.key(
            "io-with-version", Purpose.ENCRYPT_DECRYPT, Alg.GOOGLE_SYMMETRIC_ENCRYPTION, skip=False),
            400, "INVALID_ARGUMENT")
        self.refused("a duplicate cryptoKeyId", lambda: self.key(
            "aes", Purpose.ENCRYPT_DECRYPT, Alg.GOOGLE_SYMMETRIC_ENCRYPTION), 409, "ALREADY_EXISTS",
            f"CryptoKey {aes.name} already exists.")
        for bad in ("has space", "x" * 64, "dot.ted", ""):
            self.refused(f"cryptoKeyId {bad[:12]!r}", lambda bad=bad: self.key(
                bad, Purpose.ENCRYPT_DECRYPT, Alg.GOOGLE_SYMMETRIC_ENCRYPTION), 400,
                "INVALID_ARGUMENT")
        ok_id = "A-z_0-9" + "x" * 56
        self.check(self.key(ok_id, Purpose.ENCRYPT_DECRYPT, Alg.GOOGLE_SYMMETRIC_ENCRYPTION)
                   .name == f"{kr}/cryptoKeys/{ok_id}", "a 63-character [a-zA-Z0-9_-] id")
        self.refused("an EC algorithm for an ENCRYPT_DECRYPT key", lambda: self.key(
            "mismatch", Purpose.ENCRYPT_DECRYPT, Alg.EC_SIGN_P256_SHA256), 400, "INVALID_ARGUMENT")
        self.refused("get_crypto_key of a key that does not exist", lambda: c.get_crypto_key(
            name=f"{kr}/cryptoKeys/nope"), 404, "NOT_FOUND",
            f"CryptoKey {kr}/cryptoKeys/nope not found.")

    def lifecycle(self):
        c, kr = self.c, self.kr
        job = self.wait_job(self.job("job", Method.RSA_OAEP_3072_SHA1_AES_256).name)
        key = self.key("life", Purpose.ENCRYPT_DECRYPT, Alg.GOOGLE_SYMMETRIC_ENCRYPTION,
                       destroy_scheduled_duration={"seconds": 86400})
        self.check(key.destroy_scheduled_duration.total_seconds() == 86400,
                   "destroy_scheduled_duration 86400s is kept")
        m1 = os.urandom(32)
        v1 = self.imported("version 1", key, job, Alg.GOOGLE_SYMMETRIC_ENCRYPTION, m1,
                           kcv_secret("aes", m1))

        def set_state(v, state):
            return c.update_crypto_key_version(crypto_key_version={"name": v.name, "state": state},
                                               update_mask={"paths": ["state"]})

        self.check(set_state(v1, State.DISABLED).state == State.DISABLED
                   and c.get_crypto_key_version(name=v1.name).state == State.DISABLED,
                   "update_crypto_key_version state=DISABLED")
        self.check(set_state(v1, State.ENABLED).state == State.ENABLED, "... and ENABLED again")
        self.refused("update_crypto_key_version state=DESTROYED", lambda: set_state(
            v1, State.DESTROYED), 400, "INVALID_ARGUMENT")
        t = time.time()
        d = c.destroy_crypto_key_version(name=v1.name)
        self.check(d.state == State.DESTROY_SCHEDULED
                   and abs(d.destroy_time.timestamp() - (t + 86400)) < 60,
                   "destroy_crypto_key_version: DESTROY_SCHEDULED, destroy_time = now + 24 h", d)
        body = self.refused("destroying it again", lambda: c.destroy_crypto_key_version(
            name=v1.name), 400, "FAILED_PRECONDITION")
        viol = body["error"]["details"][0]
        self.check(viol["@type"] == "type.googleapis.com/google.rpc.PreconditionFailure"
                   and viol["violations"] == [{"type": "KEY_DESTROY_SCHEDULED",
                                               "subject": v1.name}],
                   "its PreconditionFailure names the state and the version", body)
        self.refused("enabling a version scheduled for destruction", lambda: set_state(
            v1, State.ENABLED), 400, "FAILED_PRECONDITION")
        r = c.restore_crypto_key_version(name=v1.name)
        self.check(r.state == State.DISABLED and not r.destroy_time,
                   "restore_crypto_key_version: DISABLED, no destroy_time", r)
        self.refused("restoring a version that is not scheduled", lambda: c
                     .restore_crypto_key_version(name=v1.name), 400, "FAILED_PRECONDITION")
        set_state(v1, State.ENABLED)

        m2 = os.urandom(32)
        v2 = self.imported("a new version imported into the same key", key, job,
                           Alg.GOOGLE_SYMMETRIC_ENCRYPTION, m2, kcv_secret("aes", m2))
        self.check(v2.name == key.name + "/cryptoKeyVersions/2", "it is version 2", v2.name)
        k = c.update_crypto_key_primary_version(name=key.name, crypto_key_version_id="2")
        self.check(k.primary.name == v2.name and k.primary.state == State.ENABLED,
                   "update_crypto_key_primary_version makes version 2 primary", k.primary)
        self.check(c.get_crypto_key(name=key.name).primary.name == v2.name, "get shows it")

        # Re-import into an existing version: only once it is DESTROYED or IMPORT_FAILED, and
        # only its own material.
        self.refused("re-import into an ENABLED version", lambda: self.import_(
            key, job, Alg.GOOGLE_SYMMETRIC_ENCRYPTION, wrap(job, m1), v1.name), 400,
            "FAILED_PRECONDITION")
        self.fake_state(v1.name, "DESTROYED")
        gone = c.get_crypto_key_version(name=v1.name)
        self.check(gone.state == State.DESTROYED and gone.destroy_event_time
                   and self.fake_check(v1.name)[0] == 404,
                   "fake: version 1 DESTROYED (the schedule ran out), material gone", gone)
        self.refused("re-import with another algorithm", lambda: self.import_(
            key, job, Alg.AES_256_GCM, wrap(job, m1), v1.name), 400, "INVALID_ARGUMENT")
        back = self.import_(key, job, Alg.GOOGLE_SYMMETRIC_ENCRYPTION, wrap(job, m1), v1.name)
        self.check(back.name == v1.name and back.state == State.PENDING_IMPORT,
                   "re-import of version 1's own material: PENDING_IMPORT", back)
        back = self.wait_version(v1.name)
        self.check(back.state == State.ENABLED and self.fake_check(v1.name)[1]["keyorch_kcv"]
                   == kcv_secret("aes", m1), "... ENABLED again with the same material", back)
        self.fake_state(v1.name, "DESTROYED")
        self.import_(key, job, Alg.GOOGLE_SYMMETRIC_ENCRYPTION, wrap(job, os.urandom(32)),
                     v1.name)
        back = self.wait_version(v1.name)
        self.check(back.state == State.IMPORT_FAILED and "does not match" in
                   back.import_failure_reason, "re-import of other material: IMPORT_FAILED",
                   back)

        # Behind the client's back.
        status, _ = self.fake(f"/__fake__/versions/{urllib.parse.quote(v2.name, safe='')}/destroy",
                              "POST")
        got = c.get_crypto_key_version(name=v2.name)
        self.check(status == 200 and got.state == State.DESTROY_SCHEDULED and got.destroy_time,
                   "fake: a console destroy shows as DESTROY_SCHEDULED", got)
        status, _ = self.fake(f"/__fake__/importJobs/{urllib.parse.quote(job.name, safe='')}/expire",
                              "POST")
        j = c.get_import_job(name=job.name)
        self.check(status == 200 and j.state == JobState.EXPIRED and j.expire_event_time
                   and not j.public_key.pem, "fake: the import job expires (EXPIRED, no key)", j)
        self.refused("importing with an expired job", lambda: self.import_(
            key, job, Alg.GOOGLE_SYMMETRIC_ENCRYPTION, wrap(job, m2)), 400, "FAILED_PRECONDITION")

        # Generated keys (no import): versions made by the service.
        gen = self.key("gen-aes", Purpose.ENCRYPT_DECRYPT, Alg.GOOGLE_SYMMETRIC_ENCRYPTION,
                       level=SOFTWARE, import_only=False, skip=False)
        self.check(gen.primary.name == gen.name + "/cryptoKeyVersions/1"
                   and gen.primary.state == State.ENABLED,
                   "a key created with its initial version has it as primary", gen.primary)
        nv = c.create_crypto_key_version(parent=gen.name, crypto_key_version={})
        self.check(nv.name.endswith("/cryptoKeyVersions/2") and nv.state == State.ENABLED
                   and not nv.reimport_eligible, "create_crypto_key_version: version 2", nv)
        ecg = self.key("gen-ec", Purpose.ASYMMETRIC_SIGN, Alg.EC_SIGN_P256_SHA256,
                       level=SOFTWARE, import_only=False, skip=False)
        v = ecg.name + "/cryptoKeyVersions/1"
        first = c.get_crypto_key_version(name=v)
        if first.state == State.PENDING_GENERATION:
            self.refused("get_public_key while PENDING_GENERATION", lambda: c.get_public_key(
                name=v), 400, "FAILED_PRECONDITION",
                f"{v} is not enabled, current state is: PENDING_GENERATION.")
        done = self.wait_version(v)
        pub = c.get_public_key(name=v)
        loaded = serialization.load_pem_public_key(pub.pem.encode())
        self.check(done.state == State.ENABLED and isinstance(loaded, ec.EllipticCurvePublicKey)
                   and self.fake_check(v)[1]["keyorch_kcv"] == hashlib.sha256(
                       loaded.public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo))
                   .digest()[:8].hex(), "a generated EC key: ENABLED, its public key, its kcv")
        self.refused("get_public_key of a symmetric key", lambda: c.get_public_key(
            name=gen.primary.name), 400, "FAILED_PRECONDITION")

        # Labels, lists, paging, filters.
        upd = c.update_crypto_key(crypto_key={"name": gen.name, "labels": {"owner": "keyorch",
                                                                          "kid": "k-1"}},
                                  update_mask={"paths": ["labels"]})
        self.check(dict(upd.labels) == {"owner": "keyorch", "kid": "k-1"}
                   and dict(c.get_crypto_key(name=gen.name).labels) == dict(upd.labels),
                   "update_crypto_key labels (update_mask labels)", upd.labels)
        self.refused("update_crypto_key of purpose (not updatable)", lambda: c.update_crypto_key(
            crypto_key={"name": gen.name, "purpose": Purpose.MAC},
            update_mask={"paths": ["purpose"]}), 400, "INVALID_ARGUMENT")
        self.refused("an upper-case label key", lambda: c.update_crypto_key(
            crypto_key={"name": gen.name, "labels": {"Owner": "x"}},
            update_mask={"paths": ["labels"]}), 400, "INVALID_ARGUMENT")
        for i in range(3):
            self.key(f"page-{i}", Purpose.ENCRYPT_DECRYPT, Alg.GOOGLE_SYMMETRIC_ENCRYPTION)
        everything = sorted(k.name for k in c.list_crypto_keys(parent=kr))
        pager = c.list_crypto_keys(request={"parent": kr, "page_size": 2})
        pages = list(pager.pages)
        names = [k.name for p in pages for k in p.crypto_keys]
        self.check(len(everything) == 6 and names == everything and len(pages) == 3
                   and all(len(p.crypto_keys) == 2 for p in pages)
                   and all(p.next_page_token for p in pages[:-1]) and not pages[-1].next_page_token
                   and all(p.total_size == 6 for p in pages),
                   "list_crypto_keys page_size=2: 3 pages, tokens, total_size 6, name order",
                   [len(p.crypto_keys) for p in pages])
        only = [k.name for k in c.list_crypto_keys(request={"parent": kr,
                                                             "filter": "labels.owner=keyorch"})]
        self.check(only == [gen.name], "list_crypto_keys filter labels.owner=keyorch", only)
        vpages = list(c.list_crypto_key_versions(request={"parent": key.name,
                                                           "page_size": 1}).pages)
        self.check([v.name for p in vpages for v in p.crypto_key_versions]
                   == [key.name + "/cryptoKeyVersions/1", key.name + "/cryptoKeyVersions/2"]
                   and len(vpages) == 2 and vpages[0].total_size == 2,
                   "list_crypto_key_versions page_size=1: versions in number order")
        enabled = list(c.list_crypto_key_versions(request={"parent": gen.name,
                                                            "filter": "state=ENABLED"}))
        self.check(len(enabled) == 2, "list_crypto_key_versions filter state=ENABLED")
        jobs = [j.name for j in c.list_import_jobs(parent=kr)]
        self.check(jobs == [job.name], "list_import_jobs", jobs)
        self.refused("a page token of another list", lambda: c.list_crypto_key_versions(request={
            "parent": gen.name, "page_token": pages[0].next_page_token}), 400, "INVALID_ARGUMENT")

        # The JSON mapping: the client sends numbers for enums and lowerCamelCase names; Google
        # also takes enum names and proto field names, and answers names without $alt.
        s = AuthorizedSession(self.creds.with_scopes([CLOUD_PLATFORM]))
        r = s.post(f"{self.url}/v1/{kr}/cryptoKeys?crypto_key_id=by-names&"
                   f"skip_initial_version_creation=true",
                   json={"purpose": "ASYMMETRIC_SIGN", "import_only": True,
                         "version_template": {"algorithm": "EC_SIGN_P256_SHA256",
                                              "protection_level": "HSM"}})
        body = r.json()
        self.check(r.status_code == 200 and body["purpose"] == "ASYMMETRIC_SIGN"
                   and body["versionTemplate"] == {"protectionLevel": "HSM",
                                                   "algorithm": "EC_SIGN_P256_SHA256"}
                   and body["importOnly"] is True,
                   "enum names and proto field names in, enum names out (no $alt)", body)
        r = s.get(f"{self.url}/v1/{kr}/cryptoKeys/by-names", params={
            "$alt": "json;enum-encoding=int"})
        self.check(r.json()["purpose"] == 5 and r.json()["versionTemplate"]["algorithm"] == 12,
                   "$alt=json;enum-encoding=int: enum numbers out", r.json())
        r = s.post(f"{self.url}/v1/{kr}/cryptoKeys?cryptoKeyId=unknown-field",
                   json={"purpose": 1, "colour": "blue"})
        err = r.json()["error"]
        self.check(r.status_code == 400 and err["status"] == "INVALID_ARGUMENT"
                   and err["message"] == 'Invalid JSON payload received. Unknown name "colour" '
                   "at 'crypto_key': Cannot find field.", "an unknown JSON field", err)
        r = s.get(f"{self.url}/v1/{kr}/cryptoKeys", params={"colour": "blue"})
        self.check(r.status_code == 400 and "Cannot bind query parameter" in
                   r.json()["error"]["message"], "an unknown query parameter", r.json())
        r = s.post(f"{self.url}/v1/{kr}/cryptoKeys?cryptoKeyId=bad-enum",
                   json={"purpose": "ENCRYPT_DECRYPT_PLEASE"})
        self.check(r.status_code == 400 and r.json()["error"]["message"].startswith(
            "Invalid value at 'crypto_key.purpose' "
            "(type.googleapis.com/google.cloud.kms.v1.CryptoKey.CryptoKeyPurpose)"),
            "an unknown enum name", r.json())

    def deny(self):
        c, kr = self.c, self.kr
        # The fake was started with --deny cloudkms.importJobs.create,
        # cloudkms.cryptoKeyVersions.viewPublicKey.
        body = self.refused("--deny cloudkms.importJobs.create: create_import_job", lambda:
                            self.job("nope", Method.RSA_OAEP_3072_SHA1_AES_256), 403,
                            "PERMISSION_DENIED",
                            f"Permission 'cloudkms.importJobs.create' denied on resource '{kr}' "
                            f"(or it may not exist).", "IAM_PERMISSION_DENIED")
        info = body["error"]["details"][0]
        self.check(info == {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "IAM_PERMISSION_DENIED", "domain": "cloudkms.googleapis.com",
                            "metadata": {"permission": "cloudkms.importJobs.create",
                                         "resource": kr}}, "its ErrorInfo", info)
        granted = list(c.test_iam_permissions(request={"resource": kr, "permissions": RELIED})
                       .permissions)
        self.check(granted == [p for p in RELIED if p not in (
            "cloudkms.importJobs.create", "cloudkms.cryptoKeyVersions.viewPublicKey")],
            "test_iam_permissions leaves out exactly the two denied", granted)
        self.check(self.fake("/__fake__/deny")[1]["permissions"] == [
            "cloudkms.cryptoKeyVersions.viewPublicKey", "cloudkms.importJobs.create"],
            "fake: GET /__fake__/deny")
        self.refused("test_iam_permissions of a name that is no KMS permission", lambda: c
                     .test_iam_permissions(request={"resource": kr, "permissions": [
                         "storage.objects.get"]}), 400, "INVALID_ARGUMENT")
        self.check(not c.test_iam_permissions(request={"resource": kr, "permissions": [
            "cloudkms.importJobs.create"]}).permissions,
            "test_iam_permissions of only denied ones: none ({})")

        # Everything else at once, then one permission denied at a time: exactly the calls
        # that need it answer 403, and test_iam_permissions leaves it out.
        self.fake("/__fake__/deny", "POST", {"permissions": []})
        job = self.wait_job(self.job("job", Method.RSA_OAEP_3072_SHA1_AES_256).name)
        imp = self.key("imp", Purpose.ENCRYPT_DECRYPT, Alg.GOOGLE_SYMMETRIC_ENCRYPTION)
        m = os.urandom(32)
        vx = self.imported("setup", imp, job, Alg.GOOGLE_SYMMETRIC_ENCRYPTION, m,
                           kcv_secret("aes", m))
        ecs = self.key("ec", Purpose.ASYMMETRIC_SIGN, Alg.EC_SIGN_P256_SHA256)
        private = ec.generate_private_key(ec.SECP256R1())
        vec = self.imported("setup EC", ecs, job, Alg.EC_SIGN_P256_SHA256, pkcs8(private),
                            kcv_pair(private))
        gen = self.key("gen", Purpose.ENCRYPT_DECRYPT, Alg.GOOGLE_SYMMETRIC_ENCRYPTION,
                       import_only=False, skip=False)
        v1 = gen.name + "/cryptoKeyVersions/1"
        vd = c.create_crypto_key_version(parent=gen.name, crypto_key_version={}).name
        vr = c.create_crypto_key_version(parent=gen.name, crypto_key_version={}).name

        probes = [
            ("get_key_ring", {"cloudkms.keyRings.get"}, None,
             lambda: c.get_key_ring(name=kr)),
            ("list_crypto_keys", {"cloudkms.cryptoKeys.list"}, None,
             lambda: c.list_crypto_keys(parent=kr)),
            ("get_crypto_key", {"cloudkms.cryptoKeys.get"}, None,
             lambda: c.get_crypto_key(name=gen.name)),
            ("create_crypto_key", {"cloudkms.cryptoKeys.create"}, None,
             lambda: self.key(self.fresh("new"), Purpose.ENCRYPT_DECRYPT,
                              Alg.GOOGLE_SYMMETRIC_ENCRYPTION)),
            ("update_crypto_key", {"cloudkms.cryptoKeys.update"}, None,
             lambda: c.update_crypto_key(crypto_key={"name": gen.name, "labels": {"a": "b"}},
                                         update_mask={"paths": ["labels"]})),
            ("update_crypto_key_primary_version", {"cloudkms.cryptoKeys.update"}, None,
             lambda: c.update_crypto_key_primary_version(name=gen.name,
                                                         crypto_key_version_id="1")),
            ("list_crypto_key_versions", {"cloudkms.cryptoKeyVersions.list"}, None,
             lambda: c.list_crypto_key_versions(parent=gen.name)),
            ("get_crypto_key_version", {"cloudkms.cryptoKeyVersions.get"}, None,
             lambda: c.get_crypto_key_version(name=v1)),
            ("create_crypto_key_version", {"cloudkms.cryptoKeyVersions.create"}, None,
             lambda: c.create_crypto_key_version(parent=gen.name, crypto_key_version={})),
            ("update_crypto_key_version", {"cloudkms.cryptoKeyVersions.update"}, None,
             lambda: c.update_crypto_key_version(
                 crypto_key_version={"name": v1, "state": State.ENABLED},
                 update_mask={"paths": ["state"]})),
            ("destroy_crypto_key_version", {"cloudkms.cryptoKeyVersions.destroy"},
             (vd, "ENABLED"), lambda: c.destroy_crypto_key_version(name=vd)),
            ("restore_crypto_key_version", {"cloudkms.cryptoKeyVersions.restore"},
             (vr, "DESTROY_SCHEDULED"), lambda: c.restore_crypto_key_version(name=vr)),
            ("get_public_key", {"cloudkms.cryptoKeyVersions.viewPublicKey"}, None,
             lambda: c.get_public_key(name=vec.name)),
            ("create_import_job", {"cloudkms.importJobs.create"}, None,
             lambda: self.job(self.fresh("job"), Method.RSA_OAEP_3072_SHA1_AES_256)),
            ("get_import_job", {"cloudkms.importJobs.get"}, None,
             lambda: c.get_import_job(name=job.name)),
            ("list_import_jobs", {"cloudkms.importJobs.list"}, None,
             lambda: c.list_import_jobs(parent=kr)),
            ("import_crypto_key_version (new version)",
             {"cloudkms.cryptoKeyVersions.create", "cloudkms.importJobs.useToImport"}, None,
             lambda: self.import_(imp, job, Alg.GOOGLE_SYMMETRIC_ENCRYPTION, wrap(
                 job, os.urandom(32)))),
            ("import_crypto_key_version (into a destroyed version)",
             {"cloudkms.cryptoKeyVersions.update", "cloudkms.importJobs.useToImport"},
             (vx.name, "DESTROYED"), lambda: self.import_(
                 imp, job, Alg.GOOGLE_SYMMETRIC_ENCRYPTION, wrap(job, m), vx.name)),
            ("test_iam_permissions", set(), None, lambda: c.test_iam_permissions(
                request={"resource": kr, "permissions": RELIED})),
        ]
        for denied in RELIED + [None]:
            self.fake("/__fake__/deny", "POST", {"permissions": [denied] if denied else []})
            outcome = []
            for what, needs, prep, call in probes:
                if prep:
                    self.fake_state(*prep)
                try:
                    call()
                    outcome.append((what, "ok"))
                except gexc.Forbidden as e:
                    err = e.response.json()["error"]
                    if f"Permission '{denied}' denied on resource" not in err["message"] \
                            or e.reason != "IAM_PERMISSION_DENIED":
                        raise ProofFailed(f"deny {denied}: {what}: {err}") from None
                    outcome.append((what, "403"))
            expected = [(what, "403" if denied in needs else "ok") for what, needs, _, _ in probes]
            self.check(outcome == expected,
                       f"deny {denied or 'nothing'}: 403 on exactly "
                       f"{[w for w, r in expected if r == '403'] or 'no call'}",
                       [o for o, e in zip(outcome, expected) if o != e])
            granted = list(c.test_iam_permissions(request={"resource": kr, "permissions": RELIED})
                           .permissions)
            self.check(granted == [p for p in RELIED if p != denied],
                       f"deny {denied or 'nothing'}: test_iam_permissions leaves out exactly it",
                       granted)
        self.fake("/__fake__/deny", "POST", {"permissions": ["cloudkms.cryptoKeys.get"]})
        missing = f"{kr}/cryptoKeys/does-not-exist"
        self.refused("a denied get of a key that does not exist: 403, not 404", lambda: c
                     .get_crypto_key(name=missing), 403, "PERMISSION_DENIED",
                     f"Permission 'cloudkms.cryptoKeys.get' denied on resource '{missing}' (or "
                     f"it may not exist).", "IAM_PERMISSION_DENIED")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--section", choices=("auth", "import", "lifecycle", "deny"), required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--ca")
    p.add_argument("--key-file", required=True)
    p.add_argument("--key-ring", required=True)
    p.add_argument("--untrusted-key-file")
    p.add_argument("--job-delay", type=float, default=0.0,
                   help="the fake's --import-job-delay: an import job must take that long")
    args = p.parse_args()
    proof = Proof(args)
    run = {"auth": proof.auth, "import": proof.import_section, "lifecycle": proof.lifecycle,
           "deny": proof.deny}[args.section]
    try:
        run()
    except ProofFailed as e:
        print(f"PROOF FAILED: {e}", flush=True)
        sys.exit(1)
    except gexc.GoogleAPICallError as e:
        text = e.response.text if e.response is not None else ""
        print(f"PROOF FAILED: unexpected HTTP {e.code}: {text}", flush=True)
        sys.exit(1)
    print(f"PROOF OK section={args.section} checks={proof.checks}", flush=True)


if __name__ == "__main__":
    main()
