#!/usr/bin/env python3
"""A loopback fake of Google Cloud KMS's REST API (v1) and of Google's OAuth 2.0 token endpoint,
for keyorch's `google_cloud_kms` keystores. Google ships no Cloud KMS emulator, so this fake
stands in for the service in tests; tests/gcp_kms/sdk_proof.py proves it honest by driving it
with Google's official Python client (PyPI `google-cloud-kms` on google-api-core and google-auth,
pinned in scripts/gcp-clients-requirements.lock), and tests/gcp_kms_fake.rs runs that proof and
drives it with the Rust client keyorch uses (google-cloud-kms-v1 on google-cloud-auth).

    fake.py --port PORT --service-account-key FILE [--service-account-key FILE]...
            [--cert PEM --key PEM] [--key-ring projects/P/locations/L/keyRings/K]...
            [--deny PERM[,PERM]...] [--import-job-delay S] [--import-delay S]

It serves the API (base path /v1/) and the token endpoint (POST /token) on one loopback port
(127.0.0.1; `--port 0` picks a free one) and prints one line `LISTENING <port>` on stdout when it
accepts connections. With --cert and --key it speaks https only, as Google does. It logs one
line per request to stderr, `fake gcp: METHOD path -> status` (the path without its query), and
never logs a header, a body, a JWT, an access token or key material.

Identity. Each --service-account-key is a service account JSON key file (Google's format:
type, project_id, private_key_id, private_key, client_email, token_uri, ...); the fake trusts
its public half, under its private_key_id, for its client_email. That service account holds
every Cloud KMS permission on every key ring of its project (no permission anywhere else),
less those named by --deny (or /__fake__/deny).

Authentication (`Authorization: Bearer <credential>`), as Google's clients send it:
  * a self-signed JWT (AIP-4111; what google-cloud-auth's service account credentials send,
    and google-auth's with always_use_jwt_access, which the Python KMS client turns on): header
    {"alg":"RS256","typ":"JWT","kid":private_key_id}; claims iss = client_email, sub absent or
    = iss, iat, exp, and either `scope` (space separated) or `aud` =
    "https://cloudkms.googleapis.com/" (a null aud counts as absent). The fake checks the
    signature with the trusted key named by kid, the issuer, the subject, that iat is not in
    the future (60 s of clock skew allowed), that exp has not passed, and that exp - iat is at
    most one hour plus that skew (google-cloud-auth sends iat = now - 10 s, exp = now + 3610 s);
  * an access token this fake's token endpoint issued (opaque, `ya29.` prefix, 1 hour).
A credential carrying scopes must carry https://www.googleapis.com/auth/cloud-platform or
https://www.googleapis.com/auth/cloudkms. Failures answer Google's 401 UNAUTHENTICATED
("Request had invalid authentication credentials. ...", ErrorInfo reason
ACCESS_TOKEN_TYPE_UNSUPPORTED, or ACCESS_TOKEN_EXPIRED for an expired credential;
"Request is missing required authentication credential. ..." with CREDENTIALS_MISSING when
there is none) with `WWW-Authenticate: Bearer realm="https://accounts.google.com/"`, and 403
"Request had insufficient authentication scopes." (ACCESS_TOKEN_SCOPE_INSUFFICIENT).

Token endpoint, POST /token (the key file's token_uri should point here): RFC 7523's
JWT-bearer grant as google-auth sends it (form grant_type=
urn:ietf:params:oauth:grant-type:jwt-bearer, assertion=<JWT with iss, scope, aud =
https://oauth2.googleapis.com/token (google-auth's constant, whatever token_uri says) or this
fake's own /token URL, iat, exp>) -> 200 {"access_token","expires_in":3599,"token_type":
"Bearer"}; Google's OAuth errors otherwise: 400 {"error":"invalid_grant","error_description":
"Invalid JWT Signature."}, "Invalid JWT: Token must be a short-lived token (60 minutes) and in
a reasonable timeframe. Check your iat and exp values in the JWT claim.", "Invalid JWT: Failed
audience check. ...", {"error":"invalid_scope",...}, {"error":"unsupported_grant_type",...}.

Resources and methods (https://cloud.google.com/kms/docs/reference/rest, v1; JSON per the
proto3 JSON mapping: lowerCamelCase names, and proto field names are accepted too; enums as
names or numbers on input; output enums as names, or as numbers when the request asks
`$alt=json;enum-encoding=int` as both Google clients do; int64 as strings; bytes as standard
base64, url-safe accepted; unknown JSON fields and query parameters refused as Google's front
end does, "Invalid JSON payload received. Unknown name ..."):
  keyRings            list, create (?keyRingId=), get, :testIamPermissions
  cryptoKeys          list, create (?cryptoKeyId=&skipInitialVersionCreation=), get,
                      patch (?updateMask= labels | versionTemplate.algorithm | rotationPeriod |
                      nextRotationTime), :updatePrimaryVersion, :testIamPermissions
  cryptoKeyVersions   list, create, get, patch (?updateMask=state, ENABLED <-> DISABLED),
                      :import, :destroy, :restore, publicKey (getPublicKey)
  importJobs          list, create (?importJobId=), get (?publicKeyFormat= PEM only),
                      :testIamPermissions
List methods take pageSize (0 -> 100, at most 1000), pageToken (opaque; bound to the parent,
filter and order), filter (a subset of AIP-160: `labels.K=V`, `labels.K:V`, `labels.K:*`,
`state=S`, `purpose=P`, `algorithm=A`, joined by AND) and orderBy (`name` or `name desc`),
and answer {"<items>":[...],"nextPageToken":"...","totalSize":N}.

IAM: each method requires its documented permission (cloudkms.keyRings.get, .list, .create;
cloudkms.cryptoKeys.get, .list, .create, .update; cloudkms.cryptoKeyVersions.get, .list,
.create, .update, .destroy, .restore, .viewPublicKey; cloudkms.importJobs.get, .list, .create;
an import requires cloudkms.cryptoKeyVersions.create on the key (cloudkms.cryptoKeyVersions.
update on the version when it re-imports into one) and cloudkms.importJobs.useToImport on the
import job). It is checked before the resource's existence, as Google does: a denied caller
gets 403 PERMISSION_DENIED "Permission 'P' denied on resource 'R' (or it may not exist)." with
ErrorInfo {reason IAM_PERMISSION_DENIED, domain cloudkms.googleapis.com, metadata {permission,
resource}}, whether R exists or not; so does any resource of another project. testIamPermissions
needs no permission and answers the requested permissions the caller holds (`{}` for none);
a name that is not a Cloud KMS permission is INVALID_ARGUMENT.

Import jobs: importMethod RSA_OAEP_{3072,4096}_{SHA1,SHA256}_AES_256 or
RSA_OAEP_{3072,4096}_SHA256, protectionLevel SOFTWARE or HSM; created PENDING_GENERATION
(the RSA wrapping key is made in the background), ACTIVE after --import-job-delay seconds
(default 0.3) with publicKey.pem (SPKI PEM) and generateTime, so a client must poll GET;
expireTime is createTime + 3 days, after which the job is EXPIRED.

Imports (cryptoKeyVersions:import) do the real crypto. For the *_AES_256 methods wrappedKey
(or rsaAesWrappedKey) is RSA-OAEP(job key, MGF1 and hash SHA-1 or SHA-256 as the method says,
empty label) of a 32-byte AES key, followed by AES-KWP (RFC 5649) of the target key under it
(PKCS#11 CKM_RSA_AES_KEY_WRAP); for RSA_OAEP_*_SHA256 it is RSA-OAEP-SHA-256 of the target key
itself. The target key is the raw bytes for symmetric algorithms (GOOGLE_SYMMETRIC_ENCRYPTION
and AES_256_*: 32 bytes, AES_128_*: 16, HMAC_SHA256: 32, HMAC_SHA1: 20, HMAC_SHA224: 28,
HMAC_SHA384: 48, HMAC_SHA512: 64) and PKCS#8 DER (RFC 5208 PrivateKeyInfo) for RSA_SIGN_*,
RSA_DECRYPT_* (the modulus size the algorithm names) and EC_SIGN_P256_SHA256 /
EC_SIGN_P384_SHA384 / EC_SIGN_SECP256K1_SHA256 (that curve). What can be seen without the job's
private key is refused at once with 400 INVALID_ARGUMENT (the documented length errors "Wrapped
key is too short", "Wrapped key does not consist of 64-bit blocks", "Wrapped key has invalid
length", "Wrapped ECDSA key has invalid length of N."; an algorithm the key's purpose does not
take; an RSA key for an RSA_OAEP_*_SHA256 job; a job whose protection level is not the key's;
both or neither wrapped key fields), as is a job that is not ACTIVE (400 FAILED_PRECONDITION).
Otherwise the call answers the version in PENDING_IMPORT; the unwrap happens then, and after
--import-delay seconds (default 0.2) the version is ENABLED, or IMPORT_FAILED with
importFailureReason "The key material in the import request couldn't be unwrapped or wasn't
formatted correctly" (RSA-OAEP or KWP integrity failure, a PKCS#8 that does not parse) or "An
argument to the import operation was malformed" (the wrong key type, size or curve, or raw
bytes of the wrong length), and the material discarded. Re-importing into an existing version
(cryptoKeyVersion) needs a version made by an import and now DESTROYED or IMPORT_FAILED (400
FAILED_PRECONDITION otherwise), the same algorithm (400 INVALID_ARGUMENT) and, if the version
ever held material, the same material (else IMPORT_FAILED). An importOnly key refuses
cryptoKeyVersions.create (400 FAILED_PRECONDITION); creating one needs
skipInitialVersionCreation=true (400 INVALID_ARGUMENT). Imported versions are reimportEligible.

Versions: ENABLED <-> DISABLED by patch; :destroy (from ENABLED or DISABLED) -> DESTROY_SCHEDULED
with destroyTime = now + the key's destroyScheduledDuration (default 30 days, 24 h .. 120 days),
and DESTROYED (material discarded, destroyEventTime) when that passes; :restore ->
DISABLED. Other transitions answer 400 FAILED_PRECONDITION "<name> is not <what>, current state
is: <STATE>." with a google.rpc.PreconditionFailure violation {type KEY_<STATE>, subject name},
the form Cloud KMS uses for "is not enabled" (getPublicKey of a version that is not ENABLED).
getPublicKey (ASYMMETRIC_SIGN / ASYMMETRIC_DECRYPT keys) answers {pem, algorithm, pemCrc32c
(CRC32C of pem, int64 as a string), name, protectionLevel}. Resource ids (keyRingId,
cryptoKeyId, importJobId) match [a-zA-Z0-9_-]{1,63} (400 INVALID_ARGUMENT); a duplicate is 409
ALREADY_EXISTS "<Kind> <name> already exists."; a missing resource 404 NOT_FOUND "<Kind> <name>
not found.". Key versions never get a primary by themselves: an ENCRYPT_DECRYPT key has one only
after cryptoKeys.updatePrimaryVersion or as the initial version of a key created without
skipInitialVersionCreation (see "Not confirmed"). Versions of keys created without
skipInitialVersionCreation are generated here (AES, HMAC, RSA or EC) and asymmetric ones pass
through PENDING_GENERATION for --import-delay seconds.

Fake-only endpoints under /__fake__/ (no authentication; loopback test use only; NAME is a full
resource name, URL-encoded or not):
  GET  /__fake__/versions/NAME/check   -> {"keyorch_kcv", "algorithm", "state", "sha256"} from
          the UNWRAPPED material, as keyorch computes check values (src/hsm/ops.rs
          kcv_of_secret / kcv_of_public, first 8 bytes, lowercase hex): AES keys
          AES-CMAC over 16 zero bytes; HMAC keys HMAC-SHA256 over 32 zero bytes; key pairs
          SHA-256 over the DER SubjectPublicKeyInfo. sha256 is the SHA-256 of the material
          (raw bytes, or the PKCS#8 DER as imported). 404 when the version holds none.
  POST /__fake__/versions/NAME/destroy -> 200 version: DESTROY_SCHEDULED behind the client's
          back, as a console user's destroy does
  POST /__fake__/versions/NAME/state   {"state": ENABLED|DISABLED|DESTROY_SCHEDULED|DESTROYED}
          -> 200 version: forced, as a console user (or the passing of the schedule) would
  POST /__fake__/importJobs/NAME/expire -> 200 job: EXPIRED now
  GET  /__fake__/deny                  -> {"permissions": [the denied ones]}
  POST /__fake__/deny {"permissions": [...]} -> 200: replaces the denied permissions
  GET  /__fake__/jwts                  -> {"jwts": [{via, header, claims, accepted, why}]}: the
          decoded header and claims (never the signature) of the JWTs seen lately, so a test
          can tell what a client sends

Not confirmed by any Google document (the fake's choice, kept in Google's format): the exact
messages of INVALID_ARGUMENT and FAILED_PRECONDITION answers other than those quoted above
(and the PreconditionFailure types other than KEY_PENDING_GENERATION); the 60 s clock-skew
allowance; the default and maximum pageSize and the order of lists (by name, versions by
number); that a version never becomes primary by being imported (so a client must call
updatePrimaryVersion, which works whether or not Google does this for it); that the unwrap
itself happens after the call (PENDING_IMPORT) while length errors are refused in the call
(Google's troubleshooting page says length errors are found "before it attempts to unwrap";
gcloud users report them as INVALID_ARGUMENT); the IMPORT_FAILED reason of a re-import with
other material; the allowed EC wrapped-key lengths; attestations (HSM versions and import jobs
have none here: a fake cannot make a real HSM's); error 404 bodies for unknown paths (Google
answers an HTML page); which algorithms this fake implements (others: 501 UNIMPLEMENTED).
"""

import argparse
import base64
import hashlib
import json
import re
import secrets
import ssl
import sys
import threading
import time
from collections import deque
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import cmac, hashes, serialization
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding

MAX_BODY = 1 << 20
JWT_MAX_LIFETIME = 3600
CLOCK_SKEW = 60
ACCESS_TOKEN_LIFETIME = 3600
IMPORT_JOB_LIFETIME = 3 * 24 * 3600
DEFAULT_DESTROY_SCHEDULED = 30 * 24 * 3600
MIN_DESTROY_SCHEDULED = 24 * 3600
MAX_DESTROY_SCHEDULED = 120 * 24 * 3600
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
CLOUDKMS_SCOPE = "https://www.googleapis.com/auth/cloudkms"
KMS_AUDIENCES = ("https://cloudkms.googleapis.com/", "https://cloudkms.googleapis.com")
OAUTH_AUDIENCES = ("https://oauth2.googleapis.com/token", "https://www.googleapis.com/oauth2/v4/token")
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_RE = re.compile(r"[a-zA-Z0-9_-]{1,63}")
LABEL_KEY_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE_RE = re.compile(r"[a-z0-9_-]{0,63}")
MSG_INVALID_CREDENTIALS = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project.")
MSG_MISSING_CREDENTIALS = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project.")
def der_without_block_padding(der):
    """DER with up to 7 trailing zero bytes after its outer element removed.

    SoftHSM2 (keyorch's HSM in tests) zero-pads a private key's PKCS#8 encoding to a multiple
    of 8 bytes before it wraps it, also under CKM_AES_KEY_WRAP_PAD (RFC 5649), whose length
    indicator then counts the padding (SoftHSM2 pull request 307). Whether Cloud KMS takes
    such a key is not documented; this fake takes it (an accommodation, not Google's stated
    behaviour: see docs/keystores.md), and anything else after the DER is still refused."""
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


MSG_UNWRAP = "The key material in the import request couldn't be unwrapped or wasn't formatted correctly"
MSG_MALFORMED = "An argument to the import operation was malformed"
MSG_SHORT_JWT = ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                 "timeframe. Check your iat and exp values in the JWT claim.")
SERVICE = "cloudkms.googleapis.com"
RPC_PREFIX = "google.cloud.kms.v1.KeyManagementService."

HTTP_OF = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
    "ABORTED": 409, "RESOURCE_EXHAUSTED": 429, "INTERNAL": 500, "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
}

# ----- enums (google/cloud/kms/v1/resources.proto; names and numbers) ------------------------

PROTECTION_LEVEL = {"PROTECTION_LEVEL_UNSPECIFIED": 0, "SOFTWARE": 1, "HSM": 2, "EXTERNAL": 3,
                    "EXTERNAL_VPC": 4, "HSM_SINGLE_TENANT": 5}
PURPOSE = {"CRYPTO_KEY_PURPOSE_UNSPECIFIED": 0, "ENCRYPT_DECRYPT": 1, "ASYMMETRIC_SIGN": 5,
           "ASYMMETRIC_DECRYPT": 6, "RAW_ENCRYPT_DECRYPT": 7, "MAC": 9, "KEY_ENCAPSULATION": 10,
           "AES_WRAPPING": 11}
ALGORITHM = {
    "CRYPTO_KEY_VERSION_ALGORITHM_UNSPECIFIED": 0, "GOOGLE_SYMMETRIC_ENCRYPTION": 1,
    "AES_128_GCM": 41, "AES_256_GCM": 19, "AES_128_CBC": 42, "AES_256_CBC": 43, "AES_128_CTR": 44,
    "AES_256_CTR": 45, "RSA_SIGN_PSS_2048_SHA256": 2, "RSA_SIGN_PSS_3072_SHA256": 3,
    "RSA_SIGN_PSS_4096_SHA256": 4, "RSA_SIGN_PSS_4096_SHA512": 15,
    "RSA_SIGN_PKCS1_2048_SHA256": 5, "RSA_SIGN_PKCS1_3072_SHA256": 6,
    "RSA_SIGN_PKCS1_4096_SHA256": 7, "RSA_SIGN_PKCS1_4096_SHA512": 16,
    "RSA_SIGN_RAW_PKCS1_2048": 28, "RSA_SIGN_RAW_PKCS1_3072": 29, "RSA_SIGN_RAW_PKCS1_4096": 30,
    "RSA_DECRYPT_OAEP_2048_SHA256": 8, "RSA_DECRYPT_OAEP_3072_SHA256": 9,
    "RSA_DECRYPT_OAEP_4096_SHA256": 10, "RSA_DECRYPT_OAEP_4096_SHA512": 17,
    "RSA_DECRYPT_OAEP_2048_SHA1": 37, "RSA_DECRYPT_OAEP_3072_SHA1": 38,
    "RSA_DECRYPT_OAEP_4096_SHA1": 39, "EC_SIGN_P256_SHA256": 12, "EC_SIGN_P384_SHA384": 13,
    "EC_SIGN_SECP256K1_SHA256": 31, "EC_SIGN_ED25519": 40, "HMAC_SHA256": 32, "HMAC_SHA1": 33,
    "HMAC_SHA384": 34, "HMAC_SHA512": 35, "HMAC_SHA224": 36, "EXTERNAL_SYMMETRIC_ENCRYPTION": 18,
    "ML_KEM_768": 47, "ML_KEM_1024": 48, "KEM_XWING": 63, "PQ_SIGN_ML_DSA_44": 68,
    "PQ_SIGN_ML_DSA_65": 56, "PQ_SIGN_ML_DSA_87": 69, "PQ_SIGN_SLH_DSA_SHA2_128S": 57,
    "PQ_SIGN_HASH_SLH_DSA_SHA2_128S_SHA256": 60, "PQ_SIGN_ML_DSA_44_EXTERNAL_MU": 70,
    "PQ_SIGN_ML_DSA_65_EXTERNAL_MU": 67, "PQ_SIGN_ML_DSA_87_EXTERNAL_MU": 71, "AES_256_KWP": 73,
}
VERSION_STATE = {"CRYPTO_KEY_VERSION_STATE_UNSPECIFIED": 0, "PENDING_GENERATION": 5,
                 "ENABLED": 1, "DISABLED": 2, "DESTROYED": 3, "DESTROY_SCHEDULED": 4,
                 "PENDING_IMPORT": 6, "IMPORT_FAILED": 7, "GENERATION_FAILED": 8,
                 "PENDING_EXTERNAL_DESTRUCTION": 9, "EXTERNAL_DESTRUCTION_FAILED": 10}
IMPORT_METHOD = {"IMPORT_METHOD_UNSPECIFIED": 0, "RSA_OAEP_3072_SHA1_AES_256": 1,
                 "RSA_OAEP_4096_SHA1_AES_256": 2, "RSA_OAEP_3072_SHA256_AES_256": 3,
                 "RSA_OAEP_4096_SHA256_AES_256": 4, "RSA_OAEP_3072_SHA256": 5,
                 "RSA_OAEP_4096_SHA256": 6, "HPKE_KEM_ML_KEM_768_HKDF_SHA256_AES_256_GCM": 8,
                 "HPKE_KEM_ML_KEM_1024_HKDF_SHA256_AES_256_GCM": 9,
                 "HPKE_KEM_XWING_HKDF_SHA256_AES_256_GCM": 10}
IMPORT_JOB_STATE = {"IMPORT_JOB_STATE_UNSPECIFIED": 0, "PENDING_GENERATION": 1, "ACTIVE": 2,
                    "EXPIRED": 3}
VERSION_VIEW = {"CRYPTO_KEY_VERSION_VIEW_UNSPECIFIED": 0, "FULL": 1}
PUBLIC_KEY_FORMAT = {"PUBLIC_KEY_FORMAT_UNSPECIFIED": 0, "PEM": 1, "DER": 2, "NIST_PQC": 3,
                     "XWING_RAW_BYTES": 4}
ACCESS_REASON = {"REASON_UNSPECIFIED": 0, "CUSTOMER_INITIATED_SUPPORT": 1,
                 "GOOGLE_INITIATED_SERVICE": 2, "THIRD_PARTY_DATA_REQUEST": 3,
                 "GOOGLE_INITIATED_REVIEW": 4, "CUSTOMER_INITIATED_ACCESS": 5,
                 "GOOGLE_INITIATED_SYSTEM_OPERATION": 6, "REASON_NOT_EXPECTED": 7,
                 "MODIFIED_CUSTOMER_INITIATED_ACCESS": 8,
                 "MODIFIED_GOOGLE_INITIATED_SYSTEM_OPERATION": 9,
                 "GOOGLE_RESPONSE_TO_PRODUCTION_ALERT": 10,
                 "CUSTOMER_AUTHORIZED_WORKFLOW_SERVICING": 11}

# Import methods: (RSA modulus bits, OAEP hash, with an ephemeral AES-256 key and KWP).
METHODS = {
    "RSA_OAEP_3072_SHA1_AES_256": (3072, hashes.SHA1, True),
    "RSA_OAEP_4096_SHA1_AES_256": (4096, hashes.SHA1, True),
    "RSA_OAEP_3072_SHA256_AES_256": (3072, hashes.SHA256, True),
    "RSA_OAEP_4096_SHA256_AES_256": (4096, hashes.SHA256, True),
    "RSA_OAEP_3072_SHA256": (3072, hashes.SHA256, False),
    "RSA_OAEP_4096_SHA256": (4096, hashes.SHA256, False),
}


def _algorithms():
    """Algorithm name -> (purpose, kind, parameter) for the algorithms this fake implements."""
    t = {"GOOGLE_SYMMETRIC_ENCRYPTION": ("ENCRYPT_DECRYPT", "aes", 32)}
    for bits in (128, 256):
        for mode in ("GCM", "CBC", "CTR"):
            t[f"AES_{bits}_{mode}"] = ("RAW_ENCRYPT_DECRYPT", "aes", bits // 8)
    for name, n in (("HMAC_SHA256", 32), ("HMAC_SHA1", 20), ("HMAC_SHA224", 28),
                    ("HMAC_SHA384", 48), ("HMAC_SHA512", 64)):
        t[name] = ("MAC", "hmac", n)
    for name in ALGORITHM:
        m = re.fullmatch(r"RSA_(SIGN|DECRYPT)_(?:PSS|PKCS1|RAW_PKCS1|OAEP)_(\d{4})(?:_SHA\d+)?", name)
        if m:
            purpose = "ASYMMETRIC_SIGN" if m.group(1) == "SIGN" else "ASYMMETRIC_DECRYPT"
            t[name] = (purpose, "rsa", int(m.group(2)))
    t["EC_SIGN_P256_SHA256"] = ("ASYMMETRIC_SIGN", "ec", ec.SECP256R1)
    t["EC_SIGN_P384_SHA384"] = ("ASYMMETRIC_SIGN", "ec", ec.SECP384R1)
    t["EC_SIGN_SECP256K1_SHA256"] = ("ASYMMETRIC_SIGN", "ec", ec.SECP256K1)
    return t


ALGORITHMS = _algorithms()

# The Cloud KMS permissions that apply to a key ring and what it holds (what testIamPermissions
# knows; anything else is not a permission of these resources).
PERMISSIONS = sorted({
    "cloudkms.keyRings.get", "cloudkms.keyRings.list", "cloudkms.keyRings.create",
    "cloudkms.keyRings.getIamPolicy", "cloudkms.keyRings.setIamPolicy",
    "cloudkms.cryptoKeys.get", "cloudkms.cryptoKeys.list", "cloudkms.cryptoKeys.create",
    "cloudkms.cryptoKeys.update", "cloudkms.cryptoKeys.getIamPolicy",
    "cloudkms.cryptoKeys.setIamPolicy", "cloudkms.cryptoKeyVersions.get",
    "cloudkms.cryptoKeyVersions.list", "cloudkms.cryptoKeyVersions.create",
    "cloudkms.cryptoKeyVersions.update", "cloudkms.cryptoKeyVersions.destroy",
    "cloudkms.cryptoKeyVersions.restore", "cloudkms.cryptoKeyVersions.viewPublicKey",
    "cloudkms.cryptoKeyVersions.useToEncrypt", "cloudkms.cryptoKeyVersions.useToDecrypt",
    "cloudkms.cryptoKeyVersions.useToSign", "cloudkms.cryptoKeyVersions.useToVerify",
    "cloudkms.cryptoKeyVersions.useToEncryptViaDelegation",
    "cloudkms.cryptoKeyVersions.useToDecryptViaDelegation",
    "cloudkms.importJobs.get", "cloudkms.importJobs.list", "cloudkms.importJobs.create",
    "cloudkms.importJobs.useToImport", "cloudkms.importJobs.getIamPolicy",
    "cloudkms.importJobs.setIamPolicy", "cloudkms.locations.get", "cloudkms.locations.list",
})
PERMISSION_RE = re.compile(r"[a-z][a-zA-Z0-9]*\.[a-zA-Z0-9]+\.[a-zA-Z0-9]+")

# ----- JSON schemas of the request messages (proto3 JSON mapping) -----------------------------

STR, BOOL, INT32, INT64, BYTES, TS, DUR, MAP, ANY = (
    "string", "bool", "int32", "int64", "bytes", "timestamp", "duration", "map", "any")


def enum(table, type_name):
    return ("enum", table, type_name)


def message(schema):
    return ("message", schema)


def repeated(spec):
    return ("repeated", spec)


VERSION_TEMPLATE = {"protectionLevel": enum(PROTECTION_LEVEL, "google.cloud.kms.v1.ProtectionLevel"),
                    "algorithm": enum(ALGORITHM, "google.cloud.kms.v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm")}
EXTERNAL_OPTIONS = {"externalKeyUri": STR, "ekmConnectionKeyPath": STR,
                    "ekmConnectionBackendOverride": STR}
CRYPTO_KEY_VERSION = {
    "name": STR, "state": enum(VERSION_STATE, "google.cloud.kms.v1.CryptoKeyVersion.CryptoKeyVersionState"),
    "protectionLevel": enum(PROTECTION_LEVEL, "google.cloud.kms.v1.ProtectionLevel"),
    "algorithm": enum(ALGORITHM, "google.cloud.kms.v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm"),
    "attestation": ANY, "createTime": TS, "generateTime": TS, "destroyTime": TS,
    "destroyEventTime": TS, "importJob": STR, "importTime": TS, "importFailureReason": STR,
    "generationFailureReason": STR, "externalDestructionFailureReason": STR,
    "externalProtectionLevelOptions": message(EXTERNAL_OPTIONS), "reimportEligible": BOOL,
    "trustedWrappingEnabled": BOOL, "hsmTrusted": BOOL,
}
CRYPTO_KEY = {
    "name": STR, "primary": message(CRYPTO_KEY_VERSION),
    "purpose": enum(PURPOSE, "google.cloud.kms.v1.CryptoKey.CryptoKeyPurpose"),
    "createTime": TS, "nextRotationTime": TS, "rotationPeriod": DUR,
    "versionTemplate": message(VERSION_TEMPLATE), "labels": MAP, "importOnly": BOOL,
    "destroyScheduledDuration": DUR, "cryptoKeyBackend": STR,
    "keyAccessJustificationsPolicy": message({"allowedAccessReasons": repeated(
        enum(ACCESS_REASON, "google.cloud.kms.v1.AccessReason"))}),
}
IMPORT_JOB = {
    "name": STR, "importMethod": enum(IMPORT_METHOD, "google.cloud.kms.v1.ImportJob.ImportMethod"),
    "protectionLevel": enum(PROTECTION_LEVEL, "google.cloud.kms.v1.ProtectionLevel"),
    "createTime": TS, "generateTime": TS, "expireTime": TS, "expireEventTime": TS,
    "state": enum(IMPORT_JOB_STATE, "google.cloud.kms.v1.ImportJob.ImportJobState"),
    "publicKey": message({"pem": STR, "data": BYTES}),
    "publicKeyFormat": enum(PUBLIC_KEY_FORMAT, "google.cloud.kms.v1.PublicKey.PublicKeyFormat"),
    "attestation": ANY, "cryptoKeyBackend": STR,
}
KEY_RING = {"name": STR, "createTime": TS}
IMPORT_REQUEST = {
    "parent": STR, "cryptoKeyVersion": STR,
    "algorithm": enum(ALGORITHM, "google.cloud.kms.v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm"),
    "importJob": STR, "wrappedKey": BYTES, "rsaAesWrappedKey": BYTES,
    "trustedWrappingEnabled": BOOL,
}
TEST_IAM_REQUEST = {"resource": STR, "permissions": repeated(STR)}
PRIMARY_REQUEST = {"name": STR, "cryptoKeyVersionId": STR}
NAME_ONLY = {"name": STR}

SYSTEM_PARAMS = {"$alt", "alt", "key", "prettyPrint", "fields", "quotaUser", "$.xgafv", "$xgafv",
                 "callback", "upload_protocol", "uploadType", "$callback", "$prettyPrint",
                 "$fields"}


def snake(name):
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def camel(name):
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)


def clock():
    """Now, in seconds, to the millisecond: the times the fake keeps (and adds durations to)
    stay exact to the microsecond in a float."""
    return round(time.time(), 3)


def now_ts(t):
    """RFC 3339 with nine fraction digits, UTC, as Google's JSON timestamps are."""
    us = int(round(t * 1e6))
    s, u = divmod(us, 10 ** 6)
    return datetime.fromtimestamp(s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{u:06d}000Z"


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64_any(text):
    """proto3 JSON bytes: standard or URL-safe base64, padded or not; None if neither."""
    if not isinstance(text, str):
        return None
    t = text.strip().rstrip("=")
    alphabet = b"-_" if ("-" in t or "_" in t) else b"+/"
    try:
        return base64.b64decode(t + "=" * (-len(t) % 4), altchars=alphabet, validate=True)
    except (ValueError, TypeError):
        return None


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC32C_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def kwp_len(n):
    """Length of RFC 5649 AES-KWP output for an n-byte key."""
    return (n + 7) // 8 * 8 + 8


class ApiError(Exception):
    """A Google error answer: canonical status, message, details."""

    def __init__(self, status, message, details=None, headers=None, http=None):
        super().__init__(message)
        self.http = http or HTTP_OF[status]
        self.body = {"error": {"code": self.http, "message": message, "status": status}}
        if details:
            self.body["error"]["details"] = details
        self.headers = headers or {}


class RawError(Exception):
    """An answer in another format (OAuth's token endpoint, fake-only endpoints)."""

    def __init__(self, http, body):
        super().__init__(http)
        self.http = http
        self.body = body


def invalid(message, field=None):
    details = None
    if field:
        details = [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": field, "description": message}]}]
    return ApiError("INVALID_ARGUMENT", message, details)


def precondition(name, what, state):
    return ApiError("FAILED_PRECONDITION", f"{name} is not {what}, current state is: {state}.", [
        {"@type": "type.googleapis.com/google.rpc.PreconditionFailure",
         "violations": [{"type": f"KEY_{state}", "subject": name}]}])


def not_found(kind, name):
    return ApiError("NOT_FOUND", f"{kind} {name} not found.")


# ----- request parsing -------------------------------------------------------------------------

def parse_value(value, spec, path):
    """A proto3 JSON value of `spec` at field `path` (proto names), in canonical form: enums as
    names (an unknown number stays an int), bytes as bytes, durations as seconds."""
    def bad(type_text, shown):
        msg = f"Invalid value at '{path}' ({type_text}), {shown}"
        return invalid(msg, path)

    if isinstance(spec, tuple):
        kind = spec[0]
        if kind == "enum":
            table, type_name = spec[1], spec[2]
            if isinstance(value, bool):
                raise bad(f"type.googleapis.com/{type_name}", json.dumps(value))
            if isinstance(value, int):
                for name, number in table.items():
                    if number == value:
                        return name
                return value
            if isinstance(value, str) and value in table:
                return value
            raise bad(f"type.googleapis.com/{type_name}", json.dumps(value))
        if kind == "message":
            if not isinstance(value, dict):
                raise invalid(f"Invalid value at '{path}': Starting an object on a scalar field",
                              path)
            return parse_message(value, spec[1], path)
        if kind == "repeated":
            if not isinstance(value, list):
                raise invalid(f"Invalid value at '{path}': Proto field is not repeating, cannot "
                              f"start list.", path)
            return [parse_value(v, spec[1], f"{path}[{i}]") for i, v in enumerate(value)]
    if spec == STR:
        if not isinstance(value, str):
            raise bad("TYPE_STRING", json.dumps(value))
        return value
    if spec == BOOL:
        if not isinstance(value, bool):
            raise bad("TYPE_BOOL", json.dumps(value))
        return value
    if spec in (INT32, INT64):
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad("TYPE_INT32" if spec == INT32 else "TYPE_INT64", json.dumps(value))
    if spec == BYTES:
        data = b64_any(value)
        if data is None:
            raise bad("TYPE_BYTES", "Base64 decoding failed")
        return data
    if spec == TS:
        if not isinstance(value, str):
            raise bad("type.googleapis.com/google.protobuf.Timestamp", json.dumps(value))
        try:
            t = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00"))
        except ValueError:
            raise bad("type.googleapis.com/google.protobuf.Timestamp",
                      f"Field '{path}', Invalid time format") from None
        return t.timestamp()
    if spec == DUR:
        if not isinstance(value, str) or not re.fullmatch(r"-?\d+(\.\d{1,9})?s", value):
            raise bad("type.googleapis.com/google.protobuf.Duration",
                      f"Field '{path}', Illegal duration format; duration must end with 's'")
        return float(value[:-1])
    if spec == MAP:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise bad("TYPE_STRING", json.dumps(value))
        return dict(value)
    if spec == ANY:
        return value
    raise AssertionError(spec)


def parse_message(obj, schema, path):
    out = {}
    for key, value in obj.items():
        name = camel(key)
        if name not in schema:
            where = f" at '{path}'" if path else ""
            msg = f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.'
            raise invalid(msg, path or None)
        if value is None:
            continue
        out[name] = parse_value(value, schema[name], (path + "." if path else "") + snake(name))
    return out


def parse_body(body, schema, path):
    if not body.strip():
        return {}
    try:
        obj = json.loads(body)
    except ValueError:
        raise invalid("Invalid JSON payload received. Unexpected token.") from None
    if not isinstance(obj, dict):
        raise invalid("Invalid JSON payload received. Expected an object.")
    return parse_message(obj, schema, path)


# ----- the service -----------------------------------------------------------------------------

class Fake:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.import_job_delay = args.import_job_delay
        self.import_delay = args.import_delay
        self.deny = set(args.deny)
        self.accounts = {}  # private_key_id -> {email, project, public}
        for path in args.service_account_key:
            with open(path, encoding="utf-8") as f:
                info = json.load(f)
            if info.get("type") != "service_account":
                raise SystemExit(f"{path}: not a service account key file")
            private = serialization.load_pem_private_key(info["private_key"].encode(), None)
            self.accounts[info["private_key_id"]] = {
                "email": info["client_email"], "project": info["project_id"],
                "public": private.public_key()}
        self.projects = {a["project"] for a in self.accounts.values()}
        self.tokens = {}  # access token -> {email, scopes, exp}
        self.jwts = deque(maxlen=100)
        self.key_rings = {}
        self.keys = {}
        self.versions = {}
        self.jobs = {}
        self.url = None
        for name in args.key_ring:
            m = re.fullmatch(r"projects/([^/]+)/locations/([^/]+)/keyRings/([^/]+)", name)
            if not m or not ID_RE.fullmatch(m.group(3)):
                raise SystemExit(f"--key-ring {name}: not projects/P/locations/L/keyRings/K")
            self.key_rings[name] = {"name": name, "createTime": clock()}

    # ----- authentication ------------------------------------------------------------------

    def auth_error(self, rpc, reason, missing=False):
        msg = MSG_MISSING_CREDENTIALS if missing else MSG_INVALID_CREDENTIALS
        challenge = 'Bearer realm="https://accounts.google.com/"'
        if not missing:
            challenge += ', error="invalid_token"'
        return ApiError("UNAUTHENTICATED", msg, [{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
            "domain": "googleapis.com",
            "metadata": {"service": SERVICE, "method": RPC_PREFIX + rpc}}],
            headers={"WWW-Authenticate": challenge})

    def decode_jwt(self, token):
        """(header, claims, signing input, signature) of a compact JWS, or None."""
        pieces = token.split(".")
        if len(pieces) != 3:
            return None
        try:
            header = json.loads(b64url_decode(pieces[0]))
            claims = json.loads(b64url_decode(pieces[1]))
            signature = b64url_decode(pieces[2])
        except ValueError:
            return None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return None
        return header, claims, (pieces[0] + "." + pieces[1]).encode(), signature

    def verify_jwt(self, token, via):
        """Checks a JWT signed by a trusted service account key. Returns (account, claims) or
        (None, why) with why in {"malformed", "signature", "issuer", "expired", "lifetime"}."""
        decoded = self.decode_jwt(token)
        if decoded is None:
            return None, "malformed"
        header, claims, signing_input, signature = decoded
        record = {"via": via, "header": header, "claims": claims, "accepted": False}
        with self.lock:
            self.jwts.append(record)

        def fail(why):
            record["why"] = why
            return None, why

        account = self.accounts.get(header.get("kid")) if isinstance(header.get("kid"), str) else None
        if header.get("alg") != "RS256" or account is None:
            return fail("signature")
        try:
            account["public"].verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return fail("signature")
        if claims.get("iss") != account["email"]:
            return fail("issuer")
        if "sub" in claims and claims["sub"] not in (None, account["email"]):
            return fail("subject")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (iat, exp)):
            return fail("lifetime")
        now = clock()
        if exp <= now:
            return fail("expired")
        if iat > now + CLOCK_SKEW or exp - iat > JWT_MAX_LIFETIME + CLOCK_SKEW or exp < iat:
            return fail("lifetime")
        record["accepted"] = True
        record["why"] = "ok"
        return account, claims

    def authenticate(self, handler, rpc):
        """The caller's identity {email, project, scopes} from its bearer credential."""
        auth = handler.headers.get("Authorization")
        if not auth:
            raise self.auth_error(rpc, "CREDENTIALS_MISSING", missing=True)
        scheme, _, credential = auth.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise self.auth_error(rpc, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
        with self.lock:
            issued = self.tokens.get(credential)
        if issued is not None:
            if issued["exp"] <= clock():
                raise self.auth_error(rpc, "ACCESS_TOKEN_EXPIRED")
            identity = issued
        else:
            account, claims = self.verify_jwt(credential, "api")
            if account is None:
                reason = "ACCESS_TOKEN_EXPIRED" if claims == "expired" else "ACCESS_TOKEN_TYPE_UNSUPPORTED"
                raise self.auth_error(rpc, reason)
            scope = claims.get("scope")
            aud = claims.get("aud")
            if scope is None and aud is None:
                raise self.auth_error(rpc, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
            if aud is not None and aud not in KMS_AUDIENCES:
                raise self.auth_error(rpc, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
            scopes = None if scope is None else str(scope).split()
            identity = {"email": account["email"], "project": account["project"],
                        "scopes": scopes}
        scopes = identity["scopes"]
        if scopes is not None and not {CLOUD_PLATFORM, CLOUDKMS_SCOPE} & set(scopes):
            raise ApiError("PERMISSION_DENIED", "Request had insufficient authentication scopes.", [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT", "domain": "googleapis.com",
                "metadata": {"service": SERVICE, "method": RPC_PREFIX + rpc}}])
        return identity

    def token_endpoint(self, handler, body):
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        grant = form.get("grant_type", [""])[0]
        assertion = form.get("assertion", [""])[0]

        def oauth_error(error, description):
            return RawError(400, {"error": error, "error_description": description})

        if grant != JWT_BEARER:
            raise oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant}")
        if not assertion:
            raise oauth_error("invalid_request", "Missing required parameter: assertion")
        account, claims = self.verify_jwt(assertion, "token")
        if account is None:
            if claims in ("expired", "lifetime"):
                raise oauth_error("invalid_grant", MSG_SHORT_JWT)
            if claims == "subject":
                raise RawError(401, {"error": "unauthorized_client", "error_description":
                                     "Client is unauthorized to retrieve access tokens using this "
                                     "method, or client not authorized for any of the scopes "
                                     "requested."})
            if claims == "malformed":
                raise oauth_error("invalid_grant", "Invalid JWT format.")
            raise oauth_error("invalid_grant", "Invalid JWT Signature.")
        aud = claims.get("aud")
        if aud not in OAUTH_AUDIENCES and aud != f"{self.url}/token":
            raise oauth_error("invalid_grant", "Invalid JWT: Failed audience check. The right "
                              "audience is https://oauth2.googleapis.com/token")
        scopes = str(claims.get("scope") or "").split()
        if not scopes:
            raise oauth_error("invalid_scope",
                              "Invalid OAuth scope or ID token audience provided.")
        token = "ya29.c." + secrets.token_urlsafe(96)
        with self.lock:
            now = clock()
            self.tokens = {t: v for t, v in self.tokens.items() if v["exp"] > now}
            self.tokens[token] = {"email": account["email"], "project": account["project"],
                                  "scopes": scopes, "exp": now + ACCESS_TOKEN_LIFETIME}
        return 200, {"access_token": token, "expires_in": ACCESS_TOKEN_LIFETIME - 1,
                     "token_type": "Bearer"}

    # ----- IAM -------------------------------------------------------------------------------

    def require(self, identity, permission, resource):
        project = resource.split("/")[1] if resource.startswith("projects/") else ""
        if project != identity["project"] or permission in self.deny:
            raise ApiError(
                "PERMISSION_DENIED",
                f"Permission '{permission}' denied on resource '{resource}' (or it may not exist).",
                [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                  "reason": "IAM_PERMISSION_DENIED", "domain": SERVICE,
                  "metadata": {"permission": permission, "resource": resource}}])

    # ----- lazy state machines ---------------------------------------------------------------

    def settle_job(self, j, now):
        if j["state"] == "PENDING_GENERATION" and now >= j["ready_at"] and j["private"] is not None:
            j["state"] = "ACTIVE"
            j["generateTime"] = now
        if j["state"] in ("ACTIVE", "PENDING_GENERATION") and now >= j["expireTime"]:
            j["state"] = "EXPIRED"
            j["expireEventTime"] = j["expireTime"]

    def settle_version(self, v, now):
        pending = v.get("pending")
        if pending and now >= pending["until"]:
            if v["state"] == "PENDING_GENERATION" and pending.get("material") is None:
                return  # still generating
            v["pending"] = None
            if pending.get("failure"):
                v["state"] = "IMPORT_FAILED"
                v["importFailureReason"] = pending["failure"]
                v["material"] = None
                v["public_der"] = None
            else:
                v["material"] = pending["material"]
                v["public_der"] = pending.get("public_der")
                v["fingerprint"] = hashlib.sha256(v["material"]).hexdigest()
                v["state"] = "ENABLED"
                v.pop("importFailureReason", None)
                v.pop("destroyEventTime", None)
                if v.get("imported"):
                    v["importTime"] = now
                v["generateTime"] = now
        if v["state"] == "DESTROY_SCHEDULED" and now >= v["destroyTime"]:
            self.destroy_now(v, v["destroyTime"])

    def destroy_now(self, v, when):
        v["state"] = "DESTROYED"
        v["destroyEventTime"] = when
        v.pop("destroyTime", None)
        v["material"] = None
        v["public_der"] = None

    def job(self, name):
        j = self.jobs.get(name)
        if j is None:
            raise not_found("ImportJob", name)
        self.settle_job(j, clock())
        return j

    def key(self, name):
        k = self.keys.get(name)
        if k is None:
            raise not_found("CryptoKey", name)
        return k

    def version(self, name):
        v = self.versions.get(name)
        if v is None:
            raise not_found("CryptoKeyVersion", name)
        self.settle_version(v, clock())
        return v

    def key_ring(self, name):
        kr = self.key_rings.get(name)
        if kr is None:
            raise not_found("KeyRing", name)
        return kr

    def generate_rsa(self, target, bits, field):
        """Makes an RSA key in the background and stores it in target[field] (under the lock)."""
        def run():
            key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
            with self.lock:
                if field == "private":
                    target["private"] = key
                else:
                    target["pending"]["material"] = key.private_bytes(
                        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption())
                    target["pending"]["public_der"] = spki(key)
        threading.Thread(target=run, daemon=True).start()

    # ----- rendering -----------------------------------------------------------------------

    @staticmethod
    def enum_out(table, name, ints):
        return table[name] if ints and isinstance(name, str) else name

    def version_json(self, v, ints):
        d = {"name": v["name"], "state": self.enum_out(VERSION_STATE, v["state"], ints),
             "protectionLevel": self.enum_out(PROTECTION_LEVEL, v["protectionLevel"], ints),
             "algorithm": self.enum_out(ALGORITHM, v["algorithm"], ints),
             "createTime": now_ts(v["createTime"])}
        if v.get("generateTime") and v["state"] not in ("PENDING_IMPORT", "PENDING_GENERATION",
                                                        "IMPORT_FAILED"):
            d["generateTime"] = now_ts(v["generateTime"])
        if v["state"] == "DESTROY_SCHEDULED":
            d["destroyTime"] = now_ts(v["destroyTime"])
        if v["state"] == "DESTROYED" and v.get("destroyEventTime"):
            d["destroyEventTime"] = now_ts(v["destroyEventTime"])
        if v.get("importJob"):
            d["importJob"] = v["importJob"]
            if v.get("importTime"):
                d["importTime"] = now_ts(v["importTime"])
        if v["state"] == "IMPORT_FAILED":
            d["importFailureReason"] = v.get("importFailureReason", MSG_UNWRAP)
        if v.get("imported"):
            d["reimportEligible"] = True
        return d

    def key_json(self, k, ints):
        d = {"name": k["name"], "purpose": self.enum_out(PURPOSE, k["purpose"], ints),
             "createTime": now_ts(k["createTime"]),
             "versionTemplate": {
                 "protectionLevel": self.enum_out(PROTECTION_LEVEL, k["protectionLevel"], ints),
                 "algorithm": self.enum_out(ALGORITHM, k["algorithm"], ints)},
             "destroyScheduledDuration": f"{int(k['destroyScheduledDuration'])}s"}
        if k["primary"] and k["purpose"] == "ENCRYPT_DECRYPT":
            d["primary"] = self.version_json(self.version(k["primary"]), ints)
        if k["labels"]:
            d["labels"] = dict(k["labels"])
        if k["importOnly"]:
            d["importOnly"] = True
        if k.get("nextRotationTime") is not None:
            d["nextRotationTime"] = now_ts(k["nextRotationTime"])
        if k.get("rotationPeriod") is not None:
            d["rotationPeriod"] = f"{int(k['rotationPeriod'])}s"
        return d

    def job_json(self, j, ints):
        d = {"name": j["name"], "importMethod": self.enum_out(IMPORT_METHOD, j["importMethod"], ints),
             "protectionLevel": self.enum_out(PROTECTION_LEVEL, j["protectionLevel"], ints),
             "createTime": now_ts(j["createTime"]), "expireTime": now_ts(j["expireTime"]),
             "state": self.enum_out(IMPORT_JOB_STATE, j["state"], ints)}
        if j["state"] in ("ACTIVE", "EXPIRED") and j.get("generateTime"):
            d["generateTime"] = now_ts(j["generateTime"])
        if j["state"] == "ACTIVE":
            if "pem" not in j:
                j["pem"] = j["private"].public_key().public_bytes(
                    serialization.Encoding.PEM,
                    serialization.PublicFormat.SubjectPublicKeyInfo).decode()
            d["publicKey"] = {"pem": j["pem"]}
        if j["state"] == "EXPIRED":
            d["expireEventTime"] = now_ts(j["expireEventTime"])
        return d

    @staticmethod
    def key_ring_json(kr):
        return {"name": kr["name"], "createTime": now_ts(kr["createTime"])}

    # ----- lists ---------------------------------------------------------------------------

    def page(self, objs, q, parent, what, render):
        """One page of the (internal) objects `objs` after q's filter and order, rendered."""
        objs = self.order(self.filtered(objs, q), q)
        size = q.get("pageSize", 0)
        if size < 0:
            raise invalid("page_size must be non-negative", "page_size")
        size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        bind = hashlib.sha256(json.dumps([parent, q.get("filter", ""), q.get("orderBy", "")])
                              .encode()).hexdigest()[:16]
        offset = 0
        token = q.get("pageToken", "")
        if token:
            try:
                decoded = json.loads(b64url_decode(token))
                offset, ok = int(decoded["o"]), decoded["b"] == bind
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok or offset < 0:
                raise invalid("Invalid page token.", "page_token")
        chunk = [render(o) for o in objs[offset:offset + size]]
        out = {what: chunk} if chunk else {}
        if offset + size < len(objs):
            nxt = json.dumps({"o": offset + size, "b": bind}).encode()
            out["nextPageToken"] = base64.urlsafe_b64encode(nxt).decode().rstrip("=")
        out["totalSize"] = len(objs)
        return out

    @staticmethod
    def order(objs, q):
        """By name (versions by number), or `name desc`."""
        order_by = q.get("orderBy", "").strip()
        if order_by not in ("", "name", "name asc", "name desc"):
            raise invalid(f"Invalid order_by: {order_by}", "order_by")

        def key(o):
            tail = o["name"].rsplit("/", 1)[1]
            return (o["name"].rsplit("/", 1)[0], int(tail)) if "/cryptoKeyVersions/" in o["name"] \
                else (o["name"], 0)
        return sorted(objs, key=key, reverse=order_by == "name desc")

    @staticmethod
    def filtered(objs, q):
        """The objects matching q's filter: terms `labels.K=V`, `labels.K:V`, `labels.K:*`,
        `state=S`, `purpose=P`, `algorithm=A`, joined by AND."""
        text = q.get("filter", "").strip()
        if not text:
            return objs
        terms = []
        for term in re.split(r"\s+AND\s+", text):
            m = re.fullmatch(r'(labels\.[a-z][a-z0-9_-]*|state|purpose|algorithm)\s*([=:])\s*'
                             r'"?([A-Za-z0-9_*-]*)"?', term.strip())
            if not m:
                raise invalid(f"Invalid filter: {text}", "filter")
            terms.append(m.groups())

        def matches(o):
            for field, op, value in terms:
                if field.startswith("labels."):
                    have = o.get("labels", {}).get(field[len("labels."):])
                    if have is None or not (value == "*" and op == ":" or have == value):
                        return False
                elif o.get(field) != value:
                    return False
            return True
        return [o for o in objs if matches(o)]

    # ----- key rings -----------------------------------------------------------------------

    def list_key_rings(self, c):
        parent = c["parent"]
        self.require(c["id"], "cloudkms.keyRings.list", parent)
        with self.lock:
            objs = [kr for n, kr in self.key_rings.items() if n.startswith(parent + "/keyRings/")]
            return self.page(objs, c["q"], parent, "keyRings", self.key_ring_json)

    def create_key_ring(self, c):
        parent = c["parent"]
        self.require(c["id"], "cloudkms.keyRings.create", parent)
        parse_body(c["body"], KEY_RING, "key_ring")
        kr_id = c["q"].get("keyRingId", "")
        if not ID_RE.fullmatch(kr_id):
            raise invalid("key_ring_id must match the regular expression [a-zA-Z0-9_-]{1,63}",
                          "key_ring_id")
        name = f"{parent}/keyRings/{kr_id}"
        with self.lock:
            if name in self.key_rings:
                raise ApiError("ALREADY_EXISTS", f"KeyRing {name} already exists.")
            kr = self.key_rings[name] = {"name": name, "createTime": clock()}
            return self.key_ring_json(kr)

    def get_key_ring(self, c):
        self.require(c["id"], "cloudkms.keyRings.get", c["kr_name"])
        with self.lock:
            return self.key_ring_json(self.key_ring(c["kr_name"]))

    def test_iam_permissions(self, c):
        req = parse_body(c["body"], TEST_IAM_REQUEST, "")
        resource = c["resource"]
        asked = req.get("permissions", [])
        for p in asked:
            if not PERMISSION_RE.fullmatch(p):
                raise invalid(f"Permission {p} is not valid.", "permissions")
            if p not in PERMISSIONS:
                raise invalid(f"Permission {p} is not valid for this resource.", "permissions")
        project = resource.split("/")[1]
        with self.lock:
            if c["kind"] == "keyRing":
                self.key_ring(resource)
            elif c["kind"] == "cryptoKey":
                self.key(resource)
            else:
                self.job(resource)
            granted = [] if project != c["id"]["project"] else [
                p for p in dict.fromkeys(asked) if p not in self.deny]
        return {"permissions": granted} if granted else {}

    # ----- crypto keys ---------------------------------------------------------------------

    @staticmethod
    def check_algorithm(purpose, algorithm, field):
        """`algorithm` (at proto field path `field`) is known, implemented and fits purpose."""
        if algorithm not in ALGORITHM or ALGORITHM[algorithm] == 0:
            raise invalid(f"{field} must be specified and valid.", field)
        spec = ALGORITHMS.get(algorithm)
        if spec is None:
            raise ApiError("UNIMPLEMENTED", f"The fake does not implement algorithm {algorithm}.")
        if spec[0] != purpose:
            raise invalid(f"Algorithm {algorithm} is not compatible with purpose {purpose}.", field)

    @staticmethod
    def check_labels(labels):
        if len(labels) > 64:
            raise invalid("A CryptoKey may have at most 64 labels.", "crypto_key.labels")
        for k, v in labels.items():
            if not LABEL_KEY_RE.fullmatch(k) or not LABEL_VALUE_RE.fullmatch(v):
                raise invalid(f"Invalid label {k}: keys must match [a-z][a-z0-9_-]{{0,62}} and "
                              f"values [a-z0-9_-]{{0,63}}", "crypto_key.labels")

    def list_crypto_keys(self, c):
        parent = c["kr_name"]
        self.require(c["id"], "cloudkms.cryptoKeys.list", parent)
        with self.lock:
            self.key_ring(parent)
            objs = [k for n, k in self.keys.items() if n.startswith(parent + "/cryptoKeys/")]
            return self.page(objs, c["q"], parent, "cryptoKeys",
                             lambda k: self.key_json(k, c["ints"]))

    def create_crypto_key(self, c):
        parent = c["kr_name"]
        self.require(c["id"], "cloudkms.cryptoKeys.create", parent)
        ck = parse_body(c["body"], CRYPTO_KEY, "crypto_key")
        q = c["q"]
        ck_id = q.get("cryptoKeyId", "")
        if not ID_RE.fullmatch(ck_id):
            raise invalid("crypto_key_id must match the regular expression [a-zA-Z0-9_-]{1,63}",
                          "crypto_key_id")
        purpose = ck.get("purpose", "CRYPTO_KEY_PURPOSE_UNSPECIFIED")
        if purpose not in PURPOSE or purpose == "CRYPTO_KEY_PURPOSE_UNSPECIFIED":
            raise invalid("crypto_key.purpose must be specified.", "crypto_key.purpose")
        if purpose not in ("ENCRYPT_DECRYPT", "ASYMMETRIC_SIGN", "ASYMMETRIC_DECRYPT", "MAC",
                           "RAW_ENCRYPT_DECRYPT"):
            raise ApiError("UNIMPLEMENTED", f"The fake does not implement purpose {purpose}.")
        template = ck.get("versionTemplate", {})
        algorithm = template.get("algorithm", "CRYPTO_KEY_VERSION_ALGORITHM_UNSPECIFIED")
        if algorithm == "CRYPTO_KEY_VERSION_ALGORITHM_UNSPECIFIED" and purpose == "ENCRYPT_DECRYPT":
            algorithm = "GOOGLE_SYMMETRIC_ENCRYPTION"
        self.check_algorithm(purpose, algorithm, "crypto_key.version_template.algorithm")
        level = template.get("protectionLevel", "PROTECTION_LEVEL_UNSPECIFIED")
        if level == "PROTECTION_LEVEL_UNSPECIFIED":
            level = "SOFTWARE"
        if level not in ("SOFTWARE", "HSM"):
            raise ApiError("UNIMPLEMENTED", f"The fake does not implement protection level {level}.")
        skip = q.get("skipInitialVersionCreation", False)
        import_only = ck.get("importOnly", False)
        if import_only and not skip:
            raise invalid("Import-only keys must be created with skip_initial_version_creation "
                          "set to true.", "skip_initial_version_creation")
        duration = ck.get("destroyScheduledDuration", DEFAULT_DESTROY_SCHEDULED)
        if not MIN_DESTROY_SCHEDULED <= duration <= MAX_DESTROY_SCHEDULED:
            raise invalid("destroy_scheduled_duration must be between 24 hours and 120 days.",
                          "crypto_key.destroy_scheduled_duration")
        if purpose != "ENCRYPT_DECRYPT" and ("rotationPeriod" in ck or "nextRotationTime" in ck):
            raise invalid("Only ENCRYPT_DECRYPT keys support automatic rotation.",
                          "crypto_key.rotation_period")
        if "rotationPeriod" in ck and "nextRotationTime" not in ck:
            raise invalid("next_rotation_time must be set when rotation_period is.",
                          "crypto_key.next_rotation_time")
        labels = ck.get("labels", {})
        self.check_labels(labels)
        name = f"{parent}/cryptoKeys/{ck_id}"
        with self.lock:
            self.key_ring(parent)
            if name in self.keys:
                raise ApiError("ALREADY_EXISTS", f"CryptoKey {name} already exists.")
            k = self.keys[name] = {
                "name": name, "purpose": purpose, "createTime": clock(),
                "algorithm": algorithm, "protectionLevel": level, "labels": labels,
                "importOnly": import_only, "destroyScheduledDuration": duration,
                "primary": None, "next": 1, "nextRotationTime": ck.get("nextRotationTime"),
                "rotationPeriod": ck.get("rotationPeriod")}
            if not skip:
                v = self.new_version(k, algorithm)
                if purpose == "ENCRYPT_DECRYPT":
                    k["primary"] = v["name"]
            return self.key_json(k, c["ints"])

    def new_version(self, k, algorithm):
        """A generated version of k (under the lock)."""
        name = f"{k['name']}/cryptoKeyVersions/{k['next']}"
        k["next"] += 1
        now = clock()
        v = self.versions[name] = {
            "name": name, "key": k["name"], "state": "ENABLED", "algorithm": algorithm,
            "protectionLevel": k["protectionLevel"], "createTime": now, "generateTime": now,
            "material": None, "public_der": None, "pending": None, "imported": False}
        kind, param = ALGORITHMS[algorithm][1:]
        if kind in ("aes", "hmac"):
            v["material"] = secrets.token_bytes(param)
            v["fingerprint"] = hashlib.sha256(v["material"]).hexdigest()
        else:
            v["state"] = "PENDING_GENERATION"
            v["pending"] = {"until": now + self.import_delay, "material": None}
            if kind == "rsa":
                self.generate_rsa(v, param, "pending")
            else:
                key = ec.generate_private_key(param())
                v["pending"]["material"] = key.private_bytes(
                    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption())
                v["pending"]["public_der"] = spki(key)
        return v

    def get_crypto_key(self, c):
        self.require(c["id"], "cloudkms.cryptoKeys.get", c["ck_name"])
        with self.lock:
            return self.key_json(self.key(c["ck_name"]), c["ints"])

    def update_crypto_key(self, c):
        name = c["ck_name"]
        self.require(c["id"], "cloudkms.cryptoKeys.update", name)
        ck = parse_body(c["body"], CRYPTO_KEY, "crypto_key")
        mask = [camel(p.strip()) for p in c["q"].get("updateMask", "").split(",") if p.strip()]
        if not mask:
            raise invalid("update_mask must be specified.", "update_mask")
        allowed = ("labels", "versionTemplate.algorithm", "versionTemplate", "rotationPeriod",
                   "nextRotationTime")
        for p in mask:
            if p not in allowed:
                raise invalid(f"Field {snake(p)} in update_mask is not updatable.", "update_mask")
        if "name" in ck and ck["name"] != name:
            raise invalid("crypto_key.name does not match the request URL.", "crypto_key.name")
        with self.lock:
            k = self.key(name)
            labels = ck.get("labels", {})
            self.check_labels(labels)
            if "versionTemplate" in mask or "versionTemplate.algorithm" in mask:
                algorithm = ck.get("versionTemplate", {}).get("algorithm")
                self.check_algorithm(k["purpose"], algorithm, "crypto_key.version_template.algorithm")
            if ("rotationPeriod" in mask or "nextRotationTime" in mask) and k["purpose"] != "ENCRYPT_DECRYPT":
                raise invalid("Only ENCRYPT_DECRYPT keys support automatic rotation.",
                              "crypto_key.rotation_period")
            if "labels" in mask:
                k["labels"] = labels
            if "versionTemplate" in mask or "versionTemplate.algorithm" in mask:
                k["algorithm"] = ck["versionTemplate"]["algorithm"]
            if "rotationPeriod" in mask:
                k["rotationPeriod"] = ck.get("rotationPeriod")
            if "nextRotationTime" in mask:
                k["nextRotationTime"] = ck.get("nextRotationTime")
            return self.key_json(k, c["ints"])

    def update_primary_version(self, c):
        name = c["ck_name"]
        self.require(c["id"], "cloudkms.cryptoKeys.update", name)
        req = parse_body(c["body"], PRIMARY_REQUEST, "")
        vid = req.get("cryptoKeyVersionId", "")
        with self.lock:
            k = self.key(name)
            if k["purpose"] != "ENCRYPT_DECRYPT":
                raise ApiError("FAILED_PRECONDITION",
                               f"CryptoKey {name} has purpose {k['purpose']}; only ENCRYPT_DECRYPT "
                               f"keys have a primary version.")
            if not re.fullmatch(r"\d+", vid):
                raise invalid("crypto_key_version_id must be specified.", "crypto_key_version_id")
            v = self.version(f"{name}/cryptoKeyVersions/{vid}")
            if v["state"] != "ENABLED":
                raise precondition(v["name"], "enabled", v["state"])
            k["primary"] = v["name"]
            return self.key_json(k, c["ints"])

    # ----- versions ------------------------------------------------------------------------

    def list_versions(self, c):
        parent = c["ck_name"]
        self.require(c["id"], "cloudkms.cryptoKeyVersions.list", parent)
        with self.lock:
            self.key(parent)
            objs = [self.version(n) for n in self.versions
                    if n.startswith(parent + "/cryptoKeyVersions/")]
            return self.page(objs, c["q"], parent, "cryptoKeyVersions",
                             lambda v: self.version_json(v, c["ints"]))

    def create_version(self, c):
        parent = c["ck_name"]
        self.require(c["id"], "cloudkms.cryptoKeyVersions.create", parent)
        body = parse_body(c["body"], CRYPTO_KEY_VERSION, "crypto_key_version")
        with self.lock:
            k = self.key(parent)
            if k["importOnly"]:
                raise ApiError("FAILED_PRECONDITION",
                               f"CryptoKey {parent} is import-only: new versions can only be "
                               f"imported (ImportCryptoKeyVersion).")
            state = body.get("state", "CRYPTO_KEY_VERSION_STATE_UNSPECIFIED")
            if state not in ("CRYPTO_KEY_VERSION_STATE_UNSPECIFIED", "ENABLED", "DISABLED"):
                raise invalid("crypto_key_version.state must be ENABLED or DISABLED.",
                              "crypto_key_version.state")
            v = self.new_version(k, k["algorithm"])
            if state == "DISABLED" and v["state"] == "ENABLED":
                v["state"] = "DISABLED"
            return self.version_json(v, c["ints"])

    def get_version(self, c):
        self.require(c["id"], "cloudkms.cryptoKeyVersions.get", c["v_name"])
        with self.lock:
            return self.version_json(self.version(c["v_name"]), c["ints"])

    def update_version(self, c):
        name = c["v_name"]
        self.require(c["id"], "cloudkms.cryptoKeyVersions.update", name)
        body = parse_body(c["body"], CRYPTO_KEY_VERSION, "crypto_key_version")
        mask = [camel(p.strip()) for p in c["q"].get("updateMask", "").split(",") if p.strip()]
        if not mask:
            raise invalid("update_mask must be specified.", "update_mask")
        for p in mask:
            if p not in ("state", "externalProtectionLevelOptions"):
                raise invalid(f"Field {snake(p)} in update_mask is not updatable.", "update_mask")
        if "externalProtectionLevelOptions" in mask:
            raise invalid("external_protection_level_options can only be updated on EXTERNAL "
                          "versions.", "update_mask")
        if "name" in body and body["name"] != name:
            raise invalid("crypto_key_version.name does not match the request URL.",
                          "crypto_key_version.name")
        target = body.get("state", "CRYPTO_KEY_VERSION_STATE_UNSPECIFIED")
        if target not in ("ENABLED", "DISABLED"):
            raise invalid("crypto_key_version.state can only be set to ENABLED or DISABLED.",
                          "crypto_key_version.state")
        with self.lock:
            v = self.version(name)
            if v["state"] not in ("ENABLED", "DISABLED"):
                raise precondition(name, "enabled or disabled", v["state"])
            v["state"] = target
            return self.version_json(v, c["ints"])

    def destroy_version(self, c):
        name = c["v_name"]
        self.require(c["id"], "cloudkms.cryptoKeyVersions.destroy", name)
        parse_body(c["body"], NAME_ONLY, "")
        with self.lock:
            v = self.version(name)
            if v["state"] not in ("ENABLED", "DISABLED"):
                raise precondition(name, "enabled or disabled", v["state"])
            self.schedule_destroy(v)
            return self.version_json(v, c["ints"])

    def schedule_destroy(self, v):
        k = self.keys[v["key"]]
        v["state"] = "DESTROY_SCHEDULED"
        v["destroyTime"] = clock() + k["destroyScheduledDuration"]

    def restore_version(self, c):
        name = c["v_name"]
        self.require(c["id"], "cloudkms.cryptoKeyVersions.restore", name)
        parse_body(c["body"], NAME_ONLY, "")
        with self.lock:
            v = self.version(name)
            if v["state"] != "DESTROY_SCHEDULED":
                raise precondition(name, "scheduled for destruction", v["state"])
            v["state"] = "DISABLED"
            v.pop("destroyTime", None)
            return self.version_json(v, c["ints"])

    def get_public_key(self, c):
        name = c["v_name"]
        self.require(c["id"], "cloudkms.cryptoKeyVersions.viewPublicKey", name)
        fmt = c["q"].get("publicKeyFormat", "PUBLIC_KEY_FORMAT_UNSPECIFIED")
        if fmt not in ("PUBLIC_KEY_FORMAT_UNSPECIFIED", "PEM"):
            raise invalid(f"Public key format {fmt} is not supported for this key.",
                          "public_key_format")
        with self.lock:
            v = self.version(name)
            k = self.keys[v["key"]]
            if k["purpose"] not in ("ASYMMETRIC_SIGN", "ASYMMETRIC_DECRYPT"):
                raise ApiError("FAILED_PRECONDITION",
                               f"{name} has purpose {k['purpose']}; GetPublicKey needs "
                               f"ASYMMETRIC_SIGN or ASYMMETRIC_DECRYPT.")
            if v["state"] != "ENABLED":
                raise precondition(name, "enabled", v["state"])
            pem = serialization.load_der_public_key(v["public_der"]).public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
            return {"pem": pem, "algorithm": self.enum_out(ALGORITHM, v["algorithm"], c["ints"]),
                    "pemCrc32c": str(crc32c(pem.encode())), "name": name,
                    "protectionLevel": self.enum_out(PROTECTION_LEVEL, v["protectionLevel"],
                                                     c["ints"])}

    def import_version(self, c):
        parent = c["ck_name"]
        req = parse_body(c["body"], IMPORT_REQUEST, "")
        if req.get("parent") not in (None, "", parent):
            raise invalid("parent does not match the request URL.", "parent")
        target = req.get("cryptoKeyVersion", "")
        if target:
            self.require(c["id"], "cloudkms.cryptoKeyVersions.update", target)
        else:
            self.require(c["id"], "cloudkms.cryptoKeyVersions.create", parent)
        job_name = req.get("importJob", "")
        if not job_name:
            raise invalid("import_job must be specified.", "import_job")
        self.require(c["id"], "cloudkms.importJobs.useToImport", job_name)
        if ("wrappedKey" in req) == ("rsaAesWrappedKey" in req):
            raise invalid("Exactly one of wrapped_key or rsa_aes_wrapped_key must be specified.",
                          "wrapped_key")
        wrapped = req.get("wrappedKey", req.get("rsaAesWrappedKey"))
        algorithm = req.get("algorithm", "CRYPTO_KEY_VERSION_ALGORITHM_UNSPECIFIED")
        if req.get("trustedWrappingEnabled"):
            raise invalid("trusted_wrapping_enabled is only supported for HSM_SINGLE_TENANT keys.",
                          "trusted_wrapping_enabled")
        with self.lock:
            k = self.key(parent)
            self.check_algorithm(k["purpose"], algorithm, "algorithm")
            job = self.job(job_name)
            if job_name.rsplit("/importJobs/", 1)[0].split("/keyRings/")[0] != \
                    parent.split("/keyRings/")[0]:
                raise invalid(f"ImportJob {job_name} is not in the location of {parent}.",
                              "import_job")
            if job["state"] != "ACTIVE":
                raise ApiError("FAILED_PRECONDITION",
                               f"ImportJob {job_name} is not active, current state is: "
                               f"{job['state']}.", [
                                   {"@type": "type.googleapis.com/google.rpc.PreconditionFailure",
                                    "violations": [{"type": f"IMPORT_JOB_{job['state']}",
                                                    "subject": job_name}]}])
            if job["protectionLevel"] != k["protectionLevel"]:
                raise invalid(f"ImportJob {job_name} has protection level {job['protectionLevel']}"
                              f", but CryptoKey {parent} has {k['protectionLevel']}.", "import_job")
            self.check_wrapped_length(job, algorithm, wrapped)
            v = None
            if target:
                if not target.startswith(parent + "/cryptoKeyVersions/"):
                    raise invalid(f"crypto_key_version {target} is not a version of {parent}.",
                                  "crypto_key_version")
                v = self.version(target)
                if not v.get("imported"):
                    raise ApiError("FAILED_PRECONDITION",
                                   f"{target} was not created by ImportCryptoKeyVersion and is "
                                   f"not eligible for reimport.")
                if v["state"] not in ("DESTROYED", "IMPORT_FAILED"):
                    raise precondition(target, "destroyed or import failed", v["state"])
                if v.get("fingerprint") and v["algorithm"] != algorithm:
                    raise invalid(f"Algorithm {algorithm} does not match the algorithm "
                                  f"{v['algorithm']} of {target}.", "algorithm")
            private = job["private"]
        outcome = self.unwrap(job["importMethod"], private, algorithm, wrapped)
        now = clock()
        with self.lock:
            if v is None:
                name = f"{parent}/cryptoKeyVersions/{k['next']}"
                k["next"] += 1
                v = self.versions[name] = {
                    "name": name, "key": parent, "createTime": now, "imported": True,
                    "material": None, "public_der": None}
            elif v.get("fingerprint") and "material" in outcome and \
                    hashlib.sha256(outcome["material"]).hexdigest() != v["fingerprint"]:
                outcome = {"failure": "The key material does not match the key material "
                                      "previously imported into this CryptoKeyVersion."}
            v.update({"state": "PENDING_IMPORT", "algorithm": algorithm,
                      "protectionLevel": k["protectionLevel"], "importJob": job_name,
                      "pending": dict(outcome, until=now + self.import_delay)})
            v.pop("importFailureReason", None)
            v.pop("destroyTime", None)
            return self.version_json(v, c["ints"])

    @staticmethod
    def check_wrapped_length(job, algorithm, wrapped):
        """The length errors Cloud KMS finds before it unwraps anything."""
        bits, _, with_aes = METHODS[job["importMethod"]]
        k = bits // 8
        kind, param = ALGORITHMS[algorithm][1:]
        if not with_aes:
            if kind == "rsa":
                raise invalid(f"ImportMethod {job['importMethod']} cannot be used to import RSA "
                              f"keys.", "import_job")
            if len(wrapped) != k:
                raise invalid("Wrapped key has invalid length", "wrapped_key")
            return
        kwp = len(wrapped) - k
        if kwp < 16:
            raise invalid("Wrapped key is too short", "wrapped_key")
        if kwp % 8:
            raise invalid("Wrapped key does not consist of 64-bit blocks", "wrapped_key")
        if kind in ("aes", "hmac") and kwp != kwp_len(param):
            raise invalid("Wrapped key has invalid length", "wrapped_key")
        if kind == "ec":
            # PKCS#8 of the curve's key: without (~67 / 80 / 67 bytes) or with the public key
            # (~138 / 185 / 135 bytes), some slack for parameters.
            lo, hi = {ec.SECP256R1: (60, 160), ec.SECP384R1: (80, 200),
                      ec.SECP256K1: (60, 160)}[param]
            if not kwp_len(lo) <= kwp <= kwp_len(hi):
                raise invalid(f"Wrapped ECDSA key has invalid length of {len(wrapped)}.",
                              "wrapped_key")

    @staticmethod
    def unwrap(method, private, algorithm, wrapped):
        """{"material", "public_der"} or {"failure": reason}: the import's real crypto."""
        bits, digest, with_aes = METHODS[method]
        k = bits // 8
        oaep = padding.OAEP(mgf=padding.MGF1(algorithm=digest()), algorithm=digest(), label=None)
        try:
            if with_aes:
                ephemeral = private.decrypt(wrapped[:k], oaep)
                if len(ephemeral) != 32:
                    return {"failure": MSG_UNWRAP}
                material = aes_key_unwrap_with_padding(ephemeral, wrapped[k:])
            else:
                material = private.decrypt(wrapped, oaep)
        except (ValueError, InvalidUnwrap):
            return {"failure": MSG_UNWRAP}
        kind, param = ALGORITHMS[algorithm][1:]
        if kind in ("aes", "hmac"):
            if len(material) != param:
                return {"failure": MSG_MALFORMED}
            return {"material": material}
        try:
            key = serialization.load_der_private_key(der_without_block_padding(material), None)
        except (ValueError, TypeError):
            return {"failure": MSG_UNWRAP}
        if kind == "rsa" and not (isinstance(key, rsa.RSAPrivateKey) and key.key_size == param):
            return {"failure": MSG_MALFORMED}
        if kind == "ec" and not (isinstance(key, ec.EllipticCurvePrivateKey)
                                 and isinstance(key.curve, param)):
            return {"failure": MSG_MALFORMED}
        return {"material": material, "public_der": spki(key)}

    # ----- import jobs ---------------------------------------------------------------------

    def list_jobs(self, c):
        parent = c["kr_name"]
        self.require(c["id"], "cloudkms.importJobs.list", parent)
        with self.lock:
            self.key_ring(parent)
            objs = [self.job(n) for n in self.jobs if n.startswith(parent + "/importJobs/")]
            return self.page(objs, c["q"], parent, "importJobs",
                             lambda j: self.job_json(j, c["ints"]))

    def create_job(self, c):
        parent = c["kr_name"]
        self.require(c["id"], "cloudkms.importJobs.create", parent)
        body = parse_body(c["body"], IMPORT_JOB, "import_job")
        job_id = c["q"].get("importJobId", "")
        if not ID_RE.fullmatch(job_id):
            raise invalid("import_job_id must match the regular expression [a-zA-Z0-9_-]{1,63}",
                          "import_job_id")
        method = body.get("importMethod", "IMPORT_METHOD_UNSPECIFIED")
        if method not in IMPORT_METHOD or method == "IMPORT_METHOD_UNSPECIFIED":
            raise invalid("import_job.import_method must be specified.", "import_job.import_method")
        if method not in METHODS:
            raise ApiError("UNIMPLEMENTED", f"The fake does not implement import method {method}.")
        level = body.get("protectionLevel", "PROTECTION_LEVEL_UNSPECIFIED")
        if level not in ("SOFTWARE", "HSM"):
            raise invalid("import_job.protection_level must be SOFTWARE or HSM.",
                          "import_job.protection_level")
        name = f"{parent}/importJobs/{job_id}"
        with self.lock:
            self.key_ring(parent)
            if name in self.jobs:
                raise ApiError("ALREADY_EXISTS", f"ImportJob {name} already exists.")
            now = clock()
            j = self.jobs[name] = {
                "name": name, "importMethod": method, "protectionLevel": level,
                "createTime": now, "expireTime": now + IMPORT_JOB_LIFETIME,
                "ready_at": now + self.import_job_delay, "state": "PENDING_GENERATION",
                "private": None}
            self.generate_rsa(j, METHODS[method][0], "private")
            return self.job_json(j, c["ints"])

    def get_job(self, c):
        self.require(c["id"], "cloudkms.importJobs.get", c["ij_name"])
        fmt = c["q"].get("publicKeyFormat", "PUBLIC_KEY_FORMAT_UNSPECIFIED")
        if fmt not in ("PUBLIC_KEY_FORMAT_UNSPECIFIED", "PEM"):
            raise invalid(f"Public key format {fmt} is not supported for RSA import methods.",
                          "public_key_format")
        with self.lock:
            return self.job_json(self.job(c["ij_name"]), c["ints"])

    # ----- fake-only endpoints ---------------------------------------------------------------

    def fake_check(self, name):
        with self.lock:
            v = self.versions.get(name)
            if v is None:
                raise RawError(404, {"error": "no such version"})
            self.settle_version(v, clock())
            if v["material"] is None:
                raise RawError(404, {"error": f"the version holds no key material ({v['state']})"})
            kind = ALGORITHMS[v["algorithm"]][1]
            material = v["material"]
            if kind == "aes":
                mac = cmac.CMAC(algorithms.AES(material))
                mac.update(bytes(16))
                kcv = mac.finalize()[:8].hex()
            elif kind == "hmac":
                mac = crypto_hmac.HMAC(material, hashes.SHA256())
                mac.update(bytes(32))
                kcv = mac.finalize()[:8].hex()
            else:
                kcv = hashlib.sha256(v["public_der"]).digest()[:8].hex()
            return 200, {"keyorch_kcv": kcv, "algorithm": v["algorithm"], "state": v["state"],
                         "sha256": hashlib.sha256(material).hexdigest()}

    def fake_state(self, name, state):
        with self.lock:
            v = self.versions.get(name)
            if v is None:
                raise RawError(404, {"error": "no such version"})
            self.settle_version(v, clock())
            if state not in ("ENABLED", "DISABLED", "DESTROY_SCHEDULED", "DESTROYED"):
                raise RawError(400, {"error": "state: ENABLED, DISABLED, DESTROY_SCHEDULED or "
                                              "DESTROYED"})
            if state in ("ENABLED", "DISABLED", "DESTROY_SCHEDULED") and v["material"] is None:
                raise RawError(409, {"error": f"the version holds no key material ({v['state']})"})
            v["pending"] = None
            if state == "DESTROYED":
                self.destroy_now(v, clock())
            elif state == "DESTROY_SCHEDULED":
                if v["state"] != "DESTROY_SCHEDULED":
                    self.schedule_destroy(v)
            else:
                v["state"] = state
                v.pop("destroyTime", None)
            return 200, self.version_json(v, False)

    def fake_expire(self, name):
        with self.lock:
            j = self.jobs.get(name)
            if j is None:
                raise RawError(404, {"error": "no such import job"})
            now = clock()
            self.settle_job(j, now)
            j["expireTime"] = now
            self.settle_job(j, now)
            return 200, self.job_json(j, False)

    def fake_deny(self, method, body):
        if method == "POST":
            try:
                perms = json.loads(body or b"{}").get("permissions", [])
            except (ValueError, AttributeError):
                raise RawError(400, {"error": "body: {\"permissions\": [...]}"}) from None
            if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
                raise RawError(400, {"error": "permissions: a list of strings"})
            with self.lock:
                self.deny = set(perms)
        with self.lock:
            return 200, {"permissions": sorted(self.deny)}

    # ----- routing ---------------------------------------------------------------------------

    def route(self, handler, method, body):
        url = urlsplit(handler.path)
        path = unquote(url.path)
        if path == "/token" and method == "POST":
            return self.token_endpoint(handler, body)
        f = re.fullmatch(r"/__fake__/(versions|importJobs)/(.+)/(check|destroy|state|expire)",
                         url.path)
        if f:
            kind, name, action = f.group(1), unquote(f.group(2)), f.group(3)
            if kind == "versions" and action == "check" and method == "GET":
                return self.fake_check(name)
            if kind == "versions" and action == "destroy" and method == "POST":
                return self.fake_state(name, "DESTROY_SCHEDULED")
            if kind == "versions" and action == "state" and method == "POST":
                try:
                    state = json.loads(body or b"{}").get("state")
                except (ValueError, AttributeError):
                    state = None
                return self.fake_state(name, state)
            if kind == "importJobs" and action == "expire" and method == "POST":
                return self.fake_expire(name)
        if path == "/__fake__/deny" and method in ("GET", "POST"):
            return self.fake_deny(method, body)
        if path == "/__fake__/jwts" and method == "GET":
            with self.lock:
                return 200, {"jwts": list(self.jwts)}
        if path.startswith("/v1/"):
            return self.api(handler, method, path[len("/v1/"):], url.query, body)
        raise ApiError("NOT_FOUND", f"The requested URL {url.path} was not found on this server.")

    ROUTES = []  # filled below: (method, regex, rpc, function name, kind)

    def api(self, handler, method, path, query, body):
        for m, regex, rpc, fn, extra in self.ROUTES:
            match = regex.fullmatch(path)
            if match and m == method:
                break
        else:
            raise ApiError("NOT_FOUND", f"The requested URL /v1/{path} was not found on this "
                                        f"server.")
        identity = self.authenticate(handler, rpc)
        g = match.groupdict()
        base = f"projects/{g['project']}/locations/{g['location']}"
        c = {"id": identity, "body": body, "parent": base}
        if g.get("kr"):
            c["kr_name"] = f"{base}/keyRings/{g['kr']}"
        if g.get("ck"):
            c["ck_name"] = f"{c['kr_name']}/cryptoKeys/{g['ck']}"
        if g.get("v"):
            c["v_name"] = f"{c['ck_name']}/cryptoKeyVersions/{g['v']}"
        if g.get("ij"):
            c["ij_name"] = f"{c['kr_name']}/importJobs/{g['ij']}"
        if extra:
            c["kind"] = extra
            c["resource"] = {"keyRing": c.get("kr_name"), "cryptoKey": c.get("ck_name"),
                             "importJob": c.get("ij_name")}[extra]
        c["q"], c["ints"] = self.query(query, QUERY_PARAMS.get(fn, {}))
        return 200, getattr(self, fn)(c)

    @staticmethod
    def query(text, params):
        """(parameters, output enums as numbers) of a query string: known parameters parsed,
        empty ones dropped; unknown ones refused as Google's front end does."""
        out, ints = {}, False
        for key, values in parse_qs(text, keep_blank_values=True).items():
            value = values[-1]
            if key in SYSTEM_PARAMS:
                if key in ("$alt", "alt"):
                    ints = "enum-encoding=int" in value
                continue
            name = camel(key)
            if name not in params:
                raise invalid(f'Invalid JSON payload received. Unknown name "{key}": Cannot bind '
                              f"query parameter. Field '{key}' could not be found in request "
                              f"message.")
            spec = params[name]
            if value == "":
                continue
            if spec == BOOL:
                if value not in ("true", "false", "1", "0"):
                    raise invalid(f"Invalid value at '{snake(name)}' (TYPE_BOOL), \"{value}\"",
                                  snake(name))
                out[name] = value in ("true", "1")
            elif spec == INT32:
                if not re.fullmatch(r"-?\d+", value):
                    raise invalid(f"Invalid value at '{snake(name)}' (TYPE_INT32), \"{value}\"",
                                  snake(name))
                out[name] = int(value)
            elif isinstance(spec, tuple):
                parsed = parse_value(int(value) if re.fullmatch(r"\d+", value) else value, spec,
                                     snake(name))
                out[name] = parsed
            else:
                out[name] = value
        return out, ints


def spki(key):
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


LIST_PARAMS = {"pageSize": INT32, "pageToken": STR, "filter": STR, "orderBy": STR}
QUERY_PARAMS = {
    "list_key_rings": LIST_PARAMS,
    "create_key_ring": {"keyRingId": STR},
    "list_crypto_keys": dict(LIST_PARAMS, versionView=enum(
        VERSION_VIEW, "google.cloud.kms.v1.CryptoKeyVersion.CryptoKeyVersionView")),
    "create_crypto_key": {"cryptoKeyId": STR, "skipInitialVersionCreation": BOOL,
                          "trustedWrappingEnabled": BOOL},
    "update_crypto_key": {"updateMask": STR},
    "list_versions": dict(LIST_PARAMS, view=enum(
        VERSION_VIEW, "google.cloud.kms.v1.CryptoKeyVersion.CryptoKeyVersionView")),
    "update_version": {"updateMask": STR},
    "get_public_key": {"publicKeyFormat": enum(
        PUBLIC_KEY_FORMAT, "google.cloud.kms.v1.PublicKey.PublicKeyFormat")},
    "list_jobs": LIST_PARAMS,
    "create_job": {"importJobId": STR},
    "get_job": {"publicKeyFormat": enum(
        PUBLIC_KEY_FORMAT, "google.cloud.kms.v1.PublicKey.PublicKeyFormat")},
}

_P = r"projects/(?P<project>[^/:]+)/locations/(?P<location>[^/:]+)"
_KR = _P + r"/keyRings/(?P<kr>[^/:]+)"
_CK = _KR + r"/cryptoKeys/(?P<ck>[^/:]+)"
_V = _CK + r"/cryptoKeyVersions/(?P<v>[^/:]+)"
_IJ = _KR + r"/importJobs/(?P<ij>[^/:]+)"
Fake.ROUTES = [(m, re.compile(r), rpc, fn, extra) for m, r, rpc, fn, extra in (
    ("GET", _P + "/keyRings", "ListKeyRings", "list_key_rings", None),
    ("POST", _P + "/keyRings", "CreateKeyRing", "create_key_ring", None),
    ("GET", _KR, "GetKeyRing", "get_key_ring", None),
    ("POST", _KR + ":testIamPermissions", "TestIamPermissions", "test_iam_permissions", "keyRing"),
    ("GET", _KR + "/cryptoKeys", "ListCryptoKeys", "list_crypto_keys", None),
    ("POST", _KR + "/cryptoKeys", "CreateCryptoKey", "create_crypto_key", None),
    ("GET", _CK, "GetCryptoKey", "get_crypto_key", None),
    ("PATCH", _CK, "UpdateCryptoKey", "update_crypto_key", None),
    ("POST", _CK + ":updatePrimaryVersion", "UpdateCryptoKeyPrimaryVersion",
     "update_primary_version", None),
    ("POST", _CK + ":testIamPermissions", "TestIamPermissions", "test_iam_permissions",
     "cryptoKey"),
    ("GET", _CK + "/cryptoKeyVersions", "ListCryptoKeyVersions", "list_versions", None),
    ("POST", _CK + "/cryptoKeyVersions", "CreateCryptoKeyVersion", "create_version", None),
    ("POST", _CK + "/cryptoKeyVersions:import", "ImportCryptoKeyVersion", "import_version", None),
    ("GET", _V, "GetCryptoKeyVersion", "get_version", None),
    ("PATCH", _V, "UpdateCryptoKeyVersion", "update_version", None),
    ("POST", _V + ":destroy", "DestroyCryptoKeyVersion", "destroy_version", None),
    ("POST", _V + ":restore", "RestoreCryptoKeyVersion", "restore_version", None),
    ("GET", _V + "/publicKey", "GetPublicKey", "get_public_key", None),
    ("GET", _KR + "/importJobs", "ListImportJobs", "list_jobs", None),
    ("POST", _KR + "/importJobs", "CreateImportJob", "create_job", None),
    ("GET", _IJ, "GetImportJob", "get_job", None),
    ("POST", _IJ + ":testIamPermissions", "TestIamPermissions", "test_iam_permissions",
     "importJob"),
)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY each answer on a kept-alive
    # connection waits for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    fake = None  # set in main

    def version_string(self):
        return "ESF"

    def handle_any(self, method):
        headers = {}
        try:
            body = self.read_body()
            status, payload = self.fake.route(self, method, body)
        except ApiError as e:
            status, payload, headers = e.http, e.body, e.headers
        except RawError as e:
            status, payload = e.http, e.body
        except Exception as e:  # a bug in the fake: say so, without details of the request
            print(f"fake gcp: internal error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            status, payload = 500, {"error": {"code": 500, "message": "Internal error.",
                                              "status": "INTERNAL"}}
        data = json.dumps(payload, indent=2).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Vary", "Origin, X-Origin, Referer")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def read_body(self):
        """The request body, Content-Length or chunked, at most MAX_BODY bytes."""
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
                    raise ApiError("INVALID_ARGUMENT", "Request payload too large.", http=413)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise ApiError("INVALID_ARGUMENT", "Request payload too large.", http=413)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self):  # noqa: N802
        self.handle_any("GET")

    def do_POST(self):  # noqa: N802
        self.handle_any("POST")

    def do_PATCH(self):  # noqa: N802
        self.handle_any("PATCH")

    def do_PUT(self):  # noqa: N802
        self.handle_any("PUT")

    def do_DELETE(self):  # noqa: N802
        self.handle_any("DELETE")

    def log_message(self, format, *args):  # noqa: A002
        # Only the request line's method and path (no query, headers or body).
        path = urlsplit(self.path).path if hasattr(self, "path") else "-"
        method = getattr(self, "command", "-")
        status = args[1] if len(args) > 1 else "-"
        print(f"fake gcp: {method} {path} -> {status}", file=sys.stderr, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True, help="loopback port; 0 picks a free one")
    p.add_argument("--service-account-key", action="append", required=True,
                   help="a service account JSON key file whose public key the fake trusts "
                        "(repeatable)")
    p.add_argument("--key-ring", action="append", default=[],
                   help="a key ring that exists from the start, "
                        "projects/P/locations/L/keyRings/K (repeatable)")
    p.add_argument("--cert", help="PEM certificate: serve https")
    p.add_argument("--key", help="PEM private key of --cert")
    p.add_argument("--deny", default="",
                   help="comma-separated IAM permissions the service account lacks")
    p.add_argument("--import-job-delay", type=float, default=0.3,
                   help="seconds an import job stays PENDING_GENERATION (default 0.3)")
    p.add_argument("--import-delay", type=float, default=0.2,
                   help="seconds an imported version stays PENDING_IMPORT, and a generated "
                        "asymmetric one PENDING_GENERATION (default 0.2)")
    args = p.parse_args()
    args.deny = [d for d in args.deny.split(",") if d]
    unknown = set(args.deny) - set(PERMISSIONS)
    if unknown:
        p.error(f"--deny: not Cloud KMS permissions: {', '.join(sorted(unknown))}")
    if bool(args.cert) != bool(args.key):
        p.error("--cert and --key go together")

    fake = Fake(args)
    Handler.fake = fake
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    scheme = "http"
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    fake.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
