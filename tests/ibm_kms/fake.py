#!/usr/bin/env python3
"""A loopback fake of IBM Key Protect's REST API (v2) and of IBM Cloud IAM's token endpoint,
for keyorch's `ibm_key_protect` and `ibm_hpcs` keystores (issue 14). IBM ships no emulator of
either service, so this fake stands in for them in tests; tests/ibm_kms/sdk_proof.py proves it
honest by driving it with IBM's official Python SDK (PyPI `keyprotect` on `ibm-cloud-sdk-core`,
pinned in scripts/ibm-clients-requirements.lock), and tests/ibm_kms_fake.rs runs that proof.

    fake.py --port PORT --flavor key_protect|hpcs --api-key KEY --instance-id ID
            [--cert PEM --key PEM] [--deny PERM,...] [--region REGION] [--key-ring RING]...

It serves IAM and the KMS API on one loopback port (127.0.0.1; `--port 0` picks a free one)
and prints one line `LISTENING <port>` on stdout when it accepts connections. With --cert and
--key it speaks https only, as the real services do (tests/ibm_kms_fake.rs makes a CA and a
certificate for 127.0.0.1 and hands the CA to the SDK: the SDK would take an http URL too, but
then the TLS path would go untested). It logs one line per request (method, path, status) to
stderr and never logs a header, a body, key material, a nonce or the API key. Access tokens
are RS256 JWTs signed by a key of this process, which serves one instance: a token is accepted
only if this fake's IAM issued it (by `jti`) and it has not expired.

Sources followed (the documents, not a guess, unless listed under "Not confirmed" below):
  * IBM/keyprotect-python-client = PyPI keyprotect 3.0.1: keyprotect/ibm_key_protect_api_v2.py
    (paths /api/v2/keys, /api/v2/keys/{id}, /api/v2/keys/{id}/metadata, /api/v2/import_token;
    headers Bluemix-Instance, X-Kms-Key-Ring (default ring `default`), Prefer
    (`return=minimal` | `return=representation`), Correlation-Id; request content type
    application/vnd.ibm.kms.key+json; limit default 200, maximum 5000, offset; states 0 pre-
    active, 1 active, 2 suspended, 3 deactivated, 5 destroyed; import token expiration 300..86400
    s, default 600), and its test/integration/test_ibm_key_protect_api_v2.py, run against the
    live service (POST /keys answers 201 with a body that is not `application/json`, so the SDK
    returns the raw response; POST /import_token answers 200; DELETE with
    `Prefer: return=representation` answers 200).
  * IBM/keyprotect-go-client import_token.go, keys.go, kp.go: the import-token crypto
    (payload = base64(RSA-OAEP(public key, material)), empty label, SHA-256 for
    `RSAES_OAEP_SHA_256` "supported by KP", SHA-1 for `RSAES_OAEP_SHA_1` "supported by HPCS";
    Key Protect's nonce: AES-GCM under the material, 12-byte random IV, no AAD, encryptedNonce
    = ciphertext || 16-byte tag; HPCS's nonce: "HPCS supports only CBC", AES-CBC under the
    material, 16-byte IV, PKCS#7 padding), the key JSON field names (encryptionAlgorithm,
    encryptedNonce, iv, keyRingID, ...), the error body
    {metadata{collectionType: application/vnd.ibm.kms.error+json, collectionTotal},
    resources[{errorMsg, reasons[{code, message, status, moreInfo, target}]}]} and headers
    authorization, bluemix-instance, correlation-id, x-kms-key-ring. IBM-Cloud/kms-samples
    secure-import/encrypt.go has the same two nonce layouts.
  * ibm-cloud-docs/key-protect: create-import-tokens.md (one import token per instance, a new
    one replaces the old; maxAllowedRetrievals default 1, maximum 500; the token can import
    keys until it expires; nonce of 12 bytes, `8zJE9pKVdXVe/nLb`), tutorials/secure-import.md
    (encryptedNonce of 28 bytes with a 12-byte iv; create body; 201 body with state 1,
    imported true), concepts/importing-keys.md (4096-bit RSA key pair; KP uses
    RSAES_OAEP_SHA_256), import-root-keys.md (root key material 16, 24 or 32 bytes; standard
    keys up to 7,500 bytes), error-messages.md (BAD_BODY_ERR, COLLECTION_TOTAL_MISMATCH_ERR,
    INVALID_FIELD_ERR, KEY_ROOT_REQ_ERR, INCORRECT_NONCE_ERR and INCORRECT_NONCE_IV_ERR 400,
    IMPORT_TOKEN_EXPIRED_ERR 409, KEY_DELETED_ERR 410 for deleting a deleted key,
    "Unauthorized: The user does not have access to the specified resource" 401 without
    reasons; the payload of GET /import_token is base64 of a PEM "PUBLIC KEY"),
    ts-unable-to-authenticate-api.md (a caller without the IAM role gets that 401: so --deny
    answers 401, not 403), ts-unable-to-list-keys-api.md (an empty list has no `resources`),
    delete-keys.md (a deleted key answers state 5, deleted true, deletionDate, deletedBy),
    key-protect-cli-commands.md ("SHA1 is only supported by HPCS"; deleted keys leave the
    list), retrieve-access-token.md (IAM's token JSON).
  * ibm-cloud-docs/hs-crypto: tutorials/secure-import.md (HPCS: nonce with AES-CBC,
    `RSAES_OAEP_SHA_1`), importing-keys.md (4096-bit RSA, "You must use RSAES_OAEP_SHA_1").
  * IBM-Cloud/terraform-provider-ibm ibm/service/kms/resource_ibm_kms_key.go: GET of a deleted
    key answers 200 with state 5; an unknown key 404.
  * IAM: docs iam-iamtoken_from_apikey and the SDK core's token manager: POST /identity/token,
    form grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey=...; 200 {access_token,
    refresh_token, token_type: Bearer, expires_in: 3600, expiration, scope}; the access token is
    a JWT (RS256) whose `iat` and `exp` ibm-cloud-sdk-core decodes; a wrong API key answers 400
    {errorCode: BXNIM0415E, errorMessage: "Provided API key could not be found.", context}.

Flavors: `key_protect` accepts only RSAES_OAEP_SHA_256 wraps and AES-GCM nonces; `hpcs` only
RSAES_OAEP_SHA_1 wraps and AES-CBC nonces, and puts `hs-crypto` in its CRNs.

What the fake checks on an import with the import token (extractable false, payload,
encryptedNonce, iv): a token exists and has not expired (409 IMPORT_TOKEN_EXPIRED_ERR); the
algorithm is the flavor's; the payload RSA-OAEP-decrypts with the token's private key and
gives 16, 24 or 32 bytes; the encryptedNonce decrypts under that material with that iv (GCM
tag, or CBC padding: else 400 INCORRECT_NONCE_IV_ERR) to the token's nonce (else 400
INCORRECT_NONCE_ERR).

--deny PERM,... makes the listed actions answer 401 as for a caller without the IAM role:
`create` (POST /keys without payload), `import` (POST /keys with payload), `list`, `get`
(GET /keys/{id} and its metadata), `delete`, `import_token` (POST and GET /import_token).

Fake-only endpoints, outside the API's paths, no authentication (loopback test use only):
  GET  /__fake__/keys/{id}/check      -> {"sha256": hex SHA-256 of the key's material, and
                                         for AES keys "keyorch_kcv", keyorch's check value
                                         (AES-CMAC of 16 zero bytes, 8 bytes hex)}: proves
                                         the material arrived intact without printing it
  POST /__fake__/keys/{id}/delete     -> 204: the key is deleted behind the client's back
  POST /__fake__/import_token/expire  -> 204: the import token expires now (its minimum
                                         lifetime is 300 s)

Not confirmed by any IBM document (the fake's choice, kept plausible and in IBM's format):
the Content-Type of GET responses (application/vnd.ibm.kms.key+json here); an unknown
X-Kms-Key-Ring (404 KEY_RING_NOT_FOUND_ERR); a missing Bluemix-Instance (400
BAD_HEADER_ERR) and one naming another instance (401 as unauthorised); GET /import_token or
an import with the token when there is none (404 IMPORT_TOKEN_NOT_FOUND_ERR); GET
/import_token with no retrievals left (409 IMPORT_TOKEN_EXPIRED_ERR; imports with that token
still work until it expires, as create-import-tokens.md says); the default encryptionAlgorithm
when it is omitted (the flavor's); a payload that does not unwrap, a wrong algorithm for the flavor,
a bad IV length or out-of-range import token values (400 INVALID_FIELD_ERR); IAM's answers
to a missing apikey or another grant type (400 BXNIM0109E / BXNIM0103E); unknown fields in a
key are ignored.
"""

import argparse
import base64
import hashlib
import hmac
import json
import re
import secrets
import ssl
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import cmac, hashes, serialization
from cryptography.hazmat.primitives import padding as sympadding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_TYPE = "application/vnd.ibm.kms.key+json"
ERROR_TYPE = "application/vnd.ibm.kms.error+json"
APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"
ALG_SHA256 = "RSAES_OAEP_SHA_256"
ALG_SHA1 = "RSAES_OAEP_SHA_1"
TOKEN_LIFETIME = 3600
IMPORT_TOKEN_RSA_BITS = 4096
NONCE_BYTES = 12
MAX_BODY = 1 << 20
PERMS = ("create", "import", "list", "get", "delete", "import_token")
PHRASES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    413: "Request Entity Too Large",
}

FLAVORS = {
    "key_protect": {
        "service": "kms",
        "algorithm": ALG_SHA256,
        "nonce_mode": "GCM",
        "more_info": "https://cloud.ibm.com/apidocs/key-protect",
    },
    "hpcs": {
        "service": "hs-crypto",
        "algorithm": ALG_SHA1,
        "nonce_mode": "CBC",
        "more_info": "https://cloud.ibm.com/apidocs/hs-crypto",
    },
}


def now_rfc3339(t=None):
    t = time.time() if t is None else t
    return datetime.fromtimestamp(int(t), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64decode_strict(text):
    """Standard base64 (what the API's byte fields use); None when it is not."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        return None


class ApiError(Exception):
    """An answer other than success: status and JSON body."""

    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


class Fake:
    def __init__(self, args):
        self.flavor = FLAVORS[args.flavor]
        self.flavor_name = args.flavor
        self.api_key = args.api_key
        self.instance = args.instance_id
        self.region = args.region
        self.deny = set(args.deny)
        self.rings = {"default", *args.key_ring}
        self.account = secrets.token_hex(16)
        self.service_id = "ServiceId-" + str(uuid.uuid4())
        self.iam_id = "iam-" + self.service_id
        self.lock = threading.Lock()
        self.keys = {}
        self.import_token = None
        self.issued = set()
        # The fake IAM's token-signing key (real IAM tokens are RS256 JWTs too).
        self.iam_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.iam_kid = time.strftime("%Y%m%d", time.gmtime()) + "-fake"

    # ----- errors in Key Protect's format -------------------------------------------------

    def reason(self, code, message, status, field=None):
        r = {"code": code, "message": message, "status": status,
             "moreInfo": self.flavor["more_info"]}
        if field:
            r["target"] = {"type": "field", "name": field}
        return r

    def error(self, status, what, code=None, message=None, field=None):
        phrase = PHRASES.get(status, "Error")
        if code is None:
            msg = what if what.startswith(phrase) else f"{phrase}: {what}"
            res = {"errorMsg": msg}
        else:
            res = {
                "errorMsg": f"{phrase}: {what}: Please see `reasons` for more details ({code})",
                "reasons": [self.reason(code, message, status, field)],
            }
        return ApiError(status, {"metadata": {"collectionType": ERROR_TYPE, "collectionTotal": 1},
                                 "resources": [res]})

    def unauthorized(self):
        return self.error(401, "Unauthorized: The user does not have access to the specified resource")

    # ----- IAM ------------------------------------------------------------------------------

    def iam_error(self, code, message, handler):
        started = int(time.time() * 1000)
        return ApiError(400, {
            "errorCode": code,
            "errorMessage": message,
            "context": {
                "requestId": secrets.token_hex(16),
                "requestType": "incoming.OIDC_Token",
                "userAgent": handler.headers.get("User-Agent", ""),
                "url": "https://iam.cloud.ibm.com",
                "startTime": str(started),
                "endTime": str(started),
                "elapsedTime": "0",
                "locale": "en_US",
            },
        })

    def iam_token(self, handler, body):
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        grant = form.get("grant_type", [""])[0]
        apikey = form.get("apikey", [""])[0]
        if grant != APIKEY_GRANT:
            raise self.iam_error("BXNIM0103E", "Unsupported grant type.", handler)
        if not apikey:
            raise self.iam_error("BXNIM0109E", "Property missing or empty. Property name(s): apikey",
                                 handler)
        if not hmac.compare_digest(apikey.encode(), self.api_key.encode()):
            raise self.iam_error("BXNIM0415E", "Provided API key could not be found.", handler)
        iat = int(time.time())
        exp = iat + TOKEN_LIFETIME
        jti = str(uuid.uuid4())
        claims = {
            "iam_id": self.iam_id,
            "id": self.iam_id,
            "realmid": "iam",
            "jti": jti,
            "identifier": self.service_id,
            "name": "keyorch-tests",
            "sub": self.service_id,
            "sub_type": "ServiceId",
            "account": {"valid": True, "bss": self.account, "frozen": True},
            "iat": iat,
            "exp": exp,
            "iss": "https://iam.cloud.ibm.com/identity",
            "grant_type": APIKEY_GRANT,
            "scope": "ibm openid",
            "client_id": "default",
            "acr": 1,
            "amr": ["pwd"],
        }
        header = {"kid": self.iam_kid, "alg": "RS256"}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        signature = self.iam_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        with self.lock:
            self.issued.add(jti)
        return 200, "application/json", {
            "access_token": signing_input + "." + b64url(signature),
            "refresh_token": secrets.token_urlsafe(48),
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME,
            "expiration": exp,
            "scope": "ibm openid",
        }

    def check_bearer(self, handler):
        """The caller's IAM token: signed by this fake's IAM, issued by it, not expired."""
        auth = handler.headers.get("Authorization", "")
        parts = auth.split(" ", 1)
        if len(parts) != 2 or parts[0].lower() != "bearer":
            raise self.unauthorized()
        pieces = parts[1].strip().split(".")
        if len(pieces) != 3:
            raise self.unauthorized()
        try:
            self.iam_key.public_key().verify(b64url_decode(pieces[2]),
                                             (pieces[0] + "." + pieces[1]).encode(),
                                             padding.PKCS1v15(), hashes.SHA256())
            claims = json.loads(b64url_decode(pieces[1]))
        except (InvalidSignature, ValueError):
            raise self.unauthorized() from None
        with self.lock:
            known = claims.get("jti") in self.issued
        if not known or claims.get("exp", 0) <= time.time():
            raise self.unauthorized()
        return claims

    # ----- the KMS API ----------------------------------------------------------------------

    def crn(self, key_id):
        return (f"crn:v1:bluemix:public:{self.flavor['service']}:{self.region}:a/{self.account}:"
                f"{self.instance}:key:{key_id}")

    def key_json(self, k, with_payload):
        bits = len(k["material"]) * 8
        d = {
            "type": KEY_TYPE,
            "id": k["id"],
            "name": k["name"],
            "state": k["state"],
            "extractable": k["extractable"],
            "crn": self.crn(k["id"]),
            "imported": k["imported"],
            "keyRingID": k["ring"],
            "creationDate": k["created"],
            "createdBy": self.iam_id,
            "algorithmType": "AES",
            "algorithmMetadata": {"bitLength": str(bits), "mode": "Deprecated"},
            "algorithmBitSize": bits,
            "algorithmMode": "Deprecated",
            "lastUpdateDate": k["updated"],
            "keyVersion": {"id": k["id"], "creationDate": k["created"]},
            "dualAuthDelete": {"enabled": False},
            "deleted": k["state"] == 5,
        }
        for field in ("description", "aliases", "expirationDate"):
            if k.get(field) is not None:
                d[field] = k[field]
        if k["state"] == 5:
            d["deletionDate"] = k["deleted_at"]
            d["deletedBy"] = k["deleted_by"]
        if with_payload and k["extractable"] and k["state"] != 5:
            d["payload"] = base64.b64encode(k["material"]).decode()
        return d

    def collection(self, items):
        body = {"metadata": {"collectionType": KEY_TYPE, "collectionTotal": len(items)}}
        if items:
            body["resources"] = items
        return body

    def kms_headers(self, handler, perm):
        """Bearer token, Bluemix-Instance, X-Kms-Key-Ring and --deny, in that order."""
        self.check_bearer(handler)
        instance = handler.headers.get("Bluemix-Instance")
        if not instance:
            raise self.error(400, "Request could not be processed", "BAD_HEADER_ERR",
                             "The 'bluemix-instance' header is missing", "bluemix-instance")
        if instance != self.instance:
            raise self.unauthorized()
        ring = handler.headers.get("X-Kms-Key-Ring")
        if ring is not None and ring not in self.rings:
            raise self.error(404, "Key ring could not be found", "KEY_RING_NOT_FOUND_ERR",
                             "The key ring does not exist in this instance", "x-kms-key-ring")
        if perm in self.deny:
            raise self.unauthorized()
        return ring

    def find_key(self, key_id, ring, what):
        k = self.keys.get(key_id)
        if k is None:
            for cand in self.keys.values():
                if key_id in (cand.get("aliases") or []):
                    k = cand
                    break
        if k is None or (ring is not None and k["ring"] != ring):
            raise self.error(404, f"Key could not be {what}", "KEY_NOT_FOUND_ERR",
                             "key does not exist", None)
        return k

    def post_import_token(self, handler, body):
        self.kms_headers(handler, "import_token")
        req = self.json_body(body, "Import token could not be created", allow_empty=True) or {}
        if not isinstance(req, dict):
            raise self.bad_body("Import token could not be created", "the body is not an object")
        expiration = req.get("expiration", 600)
        retrievals = req.get("maxAllowedRetrievals", 1)
        for field, value, lo, hi in (("expiration", expiration, 300, 86400),
                                     ("maxAllowedRetrievals", retrievals, 1, 500)):
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or value != int(value) or not lo <= value <= hi):
                raise self.error(400, "Import token could not be created", "INVALID_FIELD_ERR",
                                 f"The field `{field}` must be: an integer between {lo} and {hi}",
                                 field)
        created = time.time()
        private = rsa.generate_private_key(public_exponent=65537, key_size=IMPORT_TOKEN_RSA_BITS)
        pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        token = {
            "private": private,
            "payload": base64.b64encode(pem).decode(),
            "nonce": secrets.token_bytes(NONCE_BYTES),
            "created": created,
            "expires": created + int(expiration),
            "max": int(retrievals),
            "remaining": int(retrievals),
        }
        with self.lock:
            self.import_token = token  # one per instance: a new one replaces the old
        return 200, "application/json", self.token_metadata(token)

    def token_metadata(self, token):
        return {
            "creationDate": now_rfc3339(token["created"]),
            "expirationDate": now_rfc3339(token["expires"]),
            "maxAllowedRetrievals": token["max"],
            "remainingRetrievals": token["remaining"],
        }

    def get_import_token(self, handler):
        self.kms_headers(handler, "import_token")
        with self.lock:
            token = self.import_token
            if token is None:
                raise self.error(404, "Import Token could not be retrieved",
                                 "IMPORT_TOKEN_NOT_FOUND_ERR",
                                 "No import token exists for this instance", None)
            if time.time() >= token["expires"]:
                raise self.error(409, "Import Token could not be retrieved",
                                 "IMPORT_TOKEN_EXPIRED_ERR", "The import token has expired.", None)
            if token["remaining"] <= 0:
                raise self.error(409, "Import Token could not be retrieved",
                                 "IMPORT_TOKEN_EXPIRED_ERR",
                                 "The import token has reached its maximum number of retrievals.",
                                 None)
            token["remaining"] -= 1
            body = self.token_metadata(token)
        body["payload"] = token["payload"]
        body["nonce"] = base64.b64encode(token["nonce"]).decode()
        return 200, "application/json", body

    def bad_body(self, what, detail):
        return self.error(400, what, "BAD_BODY_ERR",
                          "Invalid body data was passed: Please ensure the data passed had valid "
                          f"formatting with no invalid characters: {detail}")

    def json_body(self, body, what, allow_empty=False):
        if not body:
            if allow_empty:
                return None
            raise self.error(400, what, "NO_BODY_ERR", "Missing body in request")
        try:
            return json.loads(body)
        except ValueError as e:
            raise self.bad_body(what, str(e)) from None

    def invalid(self, field, must):
        return self.error(400, "Key could not be created", "INVALID_FIELD_ERR",
                          f"The field `{field}` must be: {must}", field)

    def unwrap_with_token(self, res, payload):
        """The import-token flow: the material, or the API's error."""
        with self.lock:
            token = self.import_token
        if token is None:
            raise self.error(404, "Key could not be created", "IMPORT_TOKEN_NOT_FOUND_ERR",
                             "No import token exists for this instance", None)
        if time.time() >= token["expires"]:
            raise self.error(409, "Key could not be created", "IMPORT_TOKEN_EXPIRED_ERR",
                             "The import token has expired.", None)
        algorithm = res.get("encryptionAlgorithm", self.flavor["algorithm"])
        if algorithm not in (ALG_SHA256, ALG_SHA1):
            raise self.invalid("encryptionAlgorithm", f"one of {ALG_SHA256}, {ALG_SHA1}")
        if algorithm != self.flavor["algorithm"]:
            raise self.invalid("encryptionAlgorithm",
                               f"{self.flavor['algorithm']} for this service")
        wrapped = b64decode_strict(payload)
        encrypted_nonce = b64decode_strict(res.get("encryptedNonce"))
        iv = b64decode_strict(res.get("iv"))
        if wrapped is None:
            raise self.invalid("payload", "a base64 encoded key material")
        if encrypted_nonce is None:
            raise self.invalid("encryptedNonce", "a base64 encoded encrypted nonce")
        mode = self.flavor["nonce_mode"]
        if iv is None or len(iv) != (12 if mode == "GCM" else 16):
            raise self.invalid("iv", f"a base64 encoded {mode} initialization vector")
        digest = hashes.SHA256() if algorithm == ALG_SHA256 else hashes.SHA1()
        try:
            material = token["private"].decrypt(
                wrapped, padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest,
                                      label=None))
        except ValueError:
            raise self.invalid("payload", "key material encrypted with the import token's "
                               f"public key using {algorithm}") from None
        if len(material) not in (16, 24, 32):
            raise self.invalid("payload", "a 128, 192 or 256-bit key material")
        try:
            if mode == "GCM":
                nonce = AESGCM(material).decrypt(iv, encrypted_nonce, None)
            else:
                if not encrypted_nonce or len(encrypted_nonce) % 16:
                    raise ValueError("not whole blocks")
                dec = Cipher(algorithms.AES(material), modes.CBC(iv)).decryptor()
                padded = dec.update(encrypted_nonce) + dec.finalize()
                unpad = sympadding.PKCS7(128).unpadder()
                nonce = unpad.update(padded) + unpad.finalize()
        except (InvalidTag, ValueError):
            raise self.error(400, "Key could not be created", "INCORRECT_NONCE_IV_ERR",
                             "The provided encrypted nonce was not encrypted with the key "
                             "material given OR the provided IV does not match the encrypted "
                             "nonce", None) from None
        if not hmac.compare_digest(nonce, token["nonce"]):
            raise self.error(400, "Key could not be created", "INCORRECT_NONCE_ERR",
                             "The encrypted nonce given does not match existing record: Please "
                             "ensure the correct nonce was given in the request", None)
        return material

    def post_keys(self, handler, body):
        what = "Key could not be created"
        # The permission depends on the request, creating (generating) or importing; the
        # caller's token and headers are checked before the body is judged.
        try:
            peek = json.loads(body) if body else None
        except ValueError:
            peek = None
        first = {}
        if isinstance(peek, dict) and isinstance(peek.get("resources"), list) and peek["resources"]:
            first = peek["resources"][0]
        imports = isinstance(first, dict) and first.get("payload") is not None
        ring = self.kms_headers(handler, "import" if imports else "create")
        req = self.json_body(body, what)
        if not isinstance(req, dict):
            raise self.bad_body(what, "the body is not an object")
        resources = req.get("resources")
        meta = req.get("metadata")
        if not isinstance(meta, dict) or not meta:
            raise self.bad_body(what, "CollectionMetadata is empty")
        if not isinstance(resources, list) or not resources:
            raise self.bad_body(what, "One resource is required")
        if len(resources) != 1:
            raise self.bad_body(what, "Only creation of one key per request is supported")
        if meta.get("collectionType") != KEY_TYPE:
            raise self.bad_body(what, f"collectionType must be {KEY_TYPE}")
        if meta.get("collectionTotal") != len(resources):
            raise self.error(400, what, "COLLECTION_TOTAL_MISMATCH_ERR",
                             "Collection total does not match number of resources")
        res = resources[0]
        if not isinstance(res, dict):
            raise self.bad_body(what, "a resource is not an object")
        if res.get("type", KEY_TYPE) != KEY_TYPE:
            raise self.invalid("type", KEY_TYPE)
        name = res.get("name")
        if not isinstance(name, str) or not 2 <= len(name) <= 90:
            raise self.invalid("name", "a string of 2 to 90 characters")
        extractable = res.get("extractable", False)
        if not isinstance(extractable, bool):
            raise self.invalid("extractable", "a boolean")
        description = res.get("description")
        if description is not None and (not isinstance(description, str) or len(description) > 240):
            raise self.invalid("description", "a string of at most 240 characters")
        aliases = res.get("aliases")
        if aliases is not None and (not isinstance(aliases, list) or len(aliases) > 5 or not all(
                isinstance(a, str) and re.fullmatch(r"[A-Za-z0-9_-]{2,90}", a) for a in aliases)):
            raise self.invalid("aliases", "up to 5 alphanumeric aliases")
        expiration = res.get("expirationDate")
        if expiration is not None:
            try:
                datetime.fromisoformat(str(expiration).replace("Z", "+00:00"))
            except ValueError:
                raise self.invalid("expirationDate", "a date in RFC 3339 format") from None
        payload = res.get("payload")
        secure = res.get("encryptedNonce") is not None or res.get("iv") is not None
        if secure and extractable:
            raise self.error(400, what, "KEY_ROOT_REQ_ERR",
                             "Requested action can only be completed with a root key: a standard "
                             "key cannot be imported with an import token", None)
        if secure and (res.get("encryptedNonce") is None or res.get("iv") is None):
            missing = "iv" if res.get("iv") is None else "encryptedNonce"
            raise self.invalid(missing, "provided together with encryptedNonce and iv")
        if secure and payload is None:
            raise self.invalid("payload", "the key material encrypted with the import token")
        if payload is None:
            material = secrets.token_bytes(32)
        elif secure:
            material = self.unwrap_with_token(res, payload)
        else:
            material = b64decode_strict(payload)
            if material is None:
                raise self.invalid("payload", "a base64 encoded key material")
            if not extractable and len(material) not in (16, 24, 32):
                raise self.invalid("payload", "a 128, 192 or 256-bit key material")
            if extractable and len(material) > 7500:
                raise self.invalid("payload", "at most 7,500 bytes")
        stamp = now_rfc3339()
        key = {
            "id": str(uuid.uuid4()),
            "name": name,
            "description": description,
            "aliases": aliases,
            "expirationDate": expiration,
            "extractable": extractable,
            "imported": payload is not None,
            "material": material,
            "state": 1,
            "ring": ring or "default",
            "created": stamp,
            "updated": stamp,
        }
        with self.lock:
            if aliases and any(set(aliases) & set(k.get("aliases") or [])
                               for k in self.keys.values()):
                raise self.invalid("aliases", "unique in the instance")
            self.keys[key["id"]] = key
            prefer = handler.headers.get("Prefer", "")
            out = self.key_json(key, "return=representation" in prefer)
        return 201, KEY_TYPE, self.collection([out])

    def list_keys(self, handler, query):
        ring = self.kms_headers(handler, "list")

        def bad(param, must):
            return self.error(400, "Keys could not be listed", "INVALID_QUERY_PARAM_ERR",
                              f"The query parameter `{param}` must be: {must}", param)

        def number(param, default, lo, hi):
            raw = query.get(param, [None])[0]
            if raw is None:
                return default
            if not re.fullmatch(r"[0-9]+", raw) or not lo <= int(raw) <= hi:
                raise bad(param, f"an integer between {lo} and {hi}")
            return int(raw)

        limit = number("limit", 200, 1, 5000)
        offset = number("offset", 0, 0, 1 << 31)
        states = {0, 1, 2, 3}
        if "state" in query:
            raw = query["state"][0]
            if not re.fullmatch(r"[0-5](,[0-5])*", raw) or "4" in raw:
                raise bad("state", "a comma-separated list of 0, 1, 2, 3, 5")
            states = {int(s) for s in raw.split(",")}
        extractable = None
        if "extractable" in query:
            raw = query["extractable"][0].lower()
            if raw not in ("true", "false"):
                raise bad("extractable", "true or false")
            extractable = raw == "true"
        with self.lock:
            keys = sorted((k for k in self.keys.values()
                           if k["state"] in states
                           and (ring is None or k["ring"] == ring)
                           and (extractable is None or k["extractable"] == extractable)),
                          key=lambda k: k["id"])
            page = [self.key_json(k, False) for k in keys[offset:offset + limit]]
        return 200, KEY_TYPE, self.collection(page)

    def get_key(self, handler, key_id, metadata_only):
        ring = self.kms_headers(handler, "get")
        with self.lock:
            k = self.find_key(key_id, ring, "retrieved")
            return 200, KEY_TYPE, self.collection([self.key_json(k, not metadata_only)])

    def delete_key(self, handler, key_id):
        ring = self.kms_headers(handler, "delete")
        with self.lock:
            k = self.find_key(key_id, ring, "deleted")
            if k["state"] == 5:
                raise self.error(410, "Key could not be deleted", "KEY_DELETED_ERR",
                                 "Key has already been deleted. Please delete references to "
                                 "this key.", None)
            self.destroy(k, self.iam_id)
            out = self.key_json(k, False)
        if "return=representation" in handler.headers.get("Prefer", ""):
            return 200, KEY_TYPE, self.collection([out])
        return 204, None, None

    def destroy(self, k, who):
        stamp = now_rfc3339()
        k["state"] = 5
        k["deleted_at"] = stamp
        k["deleted_by"] = who
        k["updated"] = stamp

    # ----- fake-only endpoints -----------------------------------------------------------

    def fake_check(self, key_id):
        with self.lock:
            k = self.keys.get(key_id)
            if k is None:
                raise ApiError(404, {"error": "no such key"})
            body = {"sha256": hashlib.sha256(k["material"]).hexdigest()}
            if len(k["material"]) in (16, 24, 32):
                # keyorch's key check value of an AES key: AES-CMAC over 16 zero bytes, first
                # 8 bytes in hex; what keyorch's GetKey shows, so a test compares the two.
                c = cmac.CMAC(algorithms.AES(k["material"]))
                c.update(bytes(16))
                body["keyorch_kcv"] = c.finalize()[:8].hex()
            return 200, "application/json", body

    def fake_delete(self, key_id):
        with self.lock:
            k = self.keys.get(key_id)
            if k is None:
                raise ApiError(404, {"error": "no such key"})
            if k["state"] != 5:
                self.destroy(k, "fake-drift")
        return 204, None, None

    def fake_expire(self):
        with self.lock:
            if self.import_token is None:
                raise ApiError(404, {"error": "no import token"})
            self.import_token["expires"] = time.time() - 1
        return 204, None, None

    # ----- routing -----------------------------------------------------------------------

    def route(self, handler, method, body):
        url = urlsplit(handler.path)
        path = url.path
        # An empty parameter counts as absent: the SDK always sends `state=` (an empty list).
        query = parse_qs(url.query)
        m = re.fullmatch(r"/api/v2/keys/([^/]+)(/metadata)?", path)
        f = re.fullmatch(r"/__fake__/keys/([^/]+)/(check|delete)", path)
        if path == "/identity/token" and method == "POST":
            return self.iam_token(handler, body)
        if path == "/api/v2/import_token" and method == "POST":
            return self.post_import_token(handler, body)
        if path == "/api/v2/import_token" and method == "GET":
            return self.get_import_token(handler)
        if path == "/api/v2/keys" and method == "POST":
            return self.post_keys(handler, body)
        if path == "/api/v2/keys" and method == "GET":
            return self.list_keys(handler, query)
        if m and method == "GET":
            return self.get_key(handler, m.group(1), m.group(2) is not None)
        if m and not m.group(2) and method == "DELETE":
            return self.delete_key(handler, m.group(1))
        if f and f.group(2) == "check" and method == "GET":
            return self.fake_check(f.group(1))
        if f and f.group(2) == "delete" and method == "POST":
            return self.fake_delete(f.group(1))
        if path == "/__fake__/import_token/expire" and method == "POST":
            return self.fake_expire()
        raise self.error(404, "Not Found: The requested resource does not exist")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake = None  # set in main

    def version_string(self):
        return "keyorch-ibm-kms-fake"

    def handle_any(self, method):
        correlation = (self.headers.get("Correlation-Id") or self.headers.get("X-Correlation-ID")
                       or str(uuid.uuid4()))
        try:
            body = self.read_body()
            status, ctype, payload = self.fake.route(self, method, body)
        except ApiError as e:
            status, payload = e.status, e.body
            ctype = "application/json" if "errorCode" in payload or "error" in payload else ERROR_TYPE
        except Exception as e:  # a bug in the fake: say so, without details of the request
            print(f"fake: internal error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            status, ctype, payload = 500, ERROR_TYPE, {
                "metadata": {"collectionType": ERROR_TYPE, "collectionTotal": 1},
                "resources": [{"errorMsg": "Internal Server Error"}]}
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Correlation-Id", correlation)
        if payload is not None:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and method != "HEAD":
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
                    raise self.fake.error(413, "Request Entity Too Large")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise self.fake.error(413, "Request Entity Too Large")
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self):  # noqa: N802
        self.handle_any("GET")

    def do_POST(self):  # noqa: N802
        self.handle_any("POST")

    def do_DELETE(self):  # noqa: N802
        self.handle_any("DELETE")

    def do_PUT(self):  # noqa: N802
        self.handle_any("PUT")

    def do_PATCH(self):  # noqa: N802
        self.handle_any("PATCH")

    def log_message(self, format, *args):  # noqa: A002
        # Only the request line's method and path (no query values, headers or body).
        path = urlsplit(self.path).path if hasattr(self, "path") else "-"
        method = getattr(self, "command", "-")
        status = args[1] if len(args) > 1 else "-"
        print(f"fake {self.fake.flavor_name}: {method} {path} -> {status}", file=sys.stderr,
              flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True, help="loopback port; 0 picks a free one")
    p.add_argument("--flavor", choices=sorted(FLAVORS), required=True)
    p.add_argument("--api-key", required=True, help="the one service-ID API key IAM accepts")
    p.add_argument("--instance-id", required=True, help="the Bluemix-Instance to serve")
    p.add_argument("--region", default="us-south")
    p.add_argument("--key-ring", action="append", default=[],
                   help="a key ring besides `default` (repeatable)")
    p.add_argument("--cert", help="PEM certificate: serve https")
    p.add_argument("--key", help="PEM private key of --cert")
    p.add_argument("--deny", default="",
                   help="comma-separated actions answered 401: " + ", ".join(PERMS))
    args = p.parse_args()
    args.deny = [d for d in args.deny.split(",") if d]
    unknown = set(args.deny) - set(PERMS)
    if unknown:
        p.error(f"--deny: unknown action(s) {', '.join(sorted(unknown))}")
    if bool(args.cert) != bool(args.key):
        p.error("--cert and --key go together")

    Handler.fake = Fake(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
