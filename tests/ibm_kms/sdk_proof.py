#!/usr/bin/env python3
"""Proves the loopback Key Protect / HPCS fake (tests/ibm_kms/fake.py) honest by driving it with
IBM's official Python SDK only: PyPI `keyprotect` (IBM/keyprotect-python-client, the generated
IbmKeyProtectApiV2) with ibm-cloud-sdk-core's IAMAuthenticator, pinned in
scripts/ibm-clients-requirements.lock. Every API call goes through the SDK (its IAM token
exchange, its headers, its request bodies); plain urllib is used only for the fake's own
test-only /__fake__/ endpoints (the material check, drift, expiry), which IBM's API lacks.

    sdk_proof.py --flavor key_protect|hpcs --url URL --deny-url URL --api-key KEY
                 --instance-id ID [--ca CA.pem]

URL is a fake started with that flavor, API key and instance; --deny-url one started the same
way with `--deny import`; --ca the CA that signed their https certificates. It prints `ok …`
per check and `PROOF OK flavor=… checks=N` at the end, and exits 1 with `PROOF FAILED: …` at
the first mismatch. It never prints key material, a nonce or the API key.
"""

import argparse
import base64
import hashlib
import io
import json
import os
import ssl
import sys
import urllib.request
import uuid
from datetime import datetime

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sympadding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from keyprotect import IbmKeyProtectApiV2

KEY_TYPE = "application/vnd.ibm.kms.key+json"
SHA256 = "RSAES_OAEP_SHA_256"
SHA1 = "RSAES_OAEP_SHA_1"
# Per flavor: the wrap the service takes, the one it refuses, how the nonce is encrypted, the
# service name in CRNs (Key Protect: go client AlgorithmRSAOAEP256 + EncryptNonce (GCM);
# HPCS: AlgorithmRSAOAEP1 + EncryptNonceWithCBCPAD).
FLAVORS = {
    "key_protect": {"algorithm": SHA256, "other": SHA1, "nonce": "GCM", "service": "kms"},
    "hpcs": {"algorithm": SHA1, "other": SHA256, "nonce": "CBC", "service": "hs-crypto"},
}


class ProofFailed(Exception):
    pass


def b64(data):
    return base64.b64encode(data).decode()


def oaep(algorithm):
    digest = hashes.SHA256() if algorithm == SHA256 else hashes.SHA1()
    return padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)


def encrypt_nonce(mode, material, nonce, iv=None):
    """(encryptedNonce, iv) as the API wants them: Key Protect AES-GCM with a 12-byte IV and
    the 16-byte tag appended; HPCS AES-CBC with a 16-byte IV and PKCS#7 padding."""
    if mode == "GCM":
        iv = iv or os.urandom(12)
        return AESGCM(material).encrypt(iv, nonce, None), iv
    iv = iv or os.urandom(16)
    padder = sympadding.PKCS7(128).padder()
    padded = padder.update(nonce) + padder.finalize()
    enc = Cipher(algorithms.AES(material), modes.CBC(iv)).encryptor()
    return enc.update(padded) + enc.finalize(), iv


def key_body(name, extractable, payload=None, algorithm=None, encrypted_nonce=None, iv=None):
    res = {"type": KEY_TYPE, "name": name, "extractable": extractable}
    if payload is not None:
        res["payload"] = payload
    if algorithm is not None:
        res["encryptionAlgorithm"] = algorithm
    if encrypted_nonce is not None:
        res["encryptedNonce"] = b64(encrypted_nonce)
    if iv is not None:
        res["iv"] = b64(iv)
    body = {"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1}, "resources": [res]}
    return io.BytesIO(json.dumps(body).encode())


def result(resp):
    """The SDK's result as JSON: a dict for application/json, else the raw response (the SDK
    returns POST /keys' application/vnd.ibm.kms.key+json body unparsed, as on the real API)."""
    r = resp.get_result()
    if r is None or isinstance(r, (dict, list)):
        return r
    return r.json()


def rfc3339(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Proof:
    def __init__(self, args):
        self.args = args
        self.flavor = FLAVORS[args.flavor]
        self.inst = args.instance_id
        self.checks = 0
        self.ssl = ssl.create_default_context(cafile=args.ca) if args.ca else None

    # ----- plumbing ----------------------------------------------------------------------

    def client(self, url, api_key):
        kp = IbmKeyProtectApiV2(authenticator=IAMAuthenticator(api_key, url=url))
        kp.set_service_url(url)
        if self.args.ca:
            kp.set_http_config({"verify": self.args.ca, "timeout": 60})  # IAM's too
        return kp

    def ok(self, what):
        self.checks += 1
        print(f"ok {self.checks} {what}", flush=True)

    def check(self, cond, what, detail=""):
        if not cond:
            raise ProofFailed(f"{what}{': ' + detail if detail else ''}")
        self.ok(what)

    def refused(self, what, call, status, codes=None):
        """`call` must fail with HTTP `status` and, if given, a Key Protect reason code among
        `codes`. Returns the error body."""
        try:
            call()
        except ApiException as e:
            try:
                body = e.http_response.json()
            except ValueError:
                body = {}
            if e.status_code != status:
                raise ProofFailed(f"{what}: HTTP {e.status_code} instead of {status}: {body}") from None
            if codes:
                reasons = (body.get("resources") or [{}])[0].get("reasons") or []
                got = [r.get("code") for r in reasons]
                if not set(got) & set(codes):
                    raise ProofFailed(f"{what}: reasons {got} instead of {codes}: {body}")
            self.ok(f"{what} -> {status} {codes[0] if codes else ''}".rstrip())
            return body
        raise ProofFailed(f"{what}: succeeded, expected HTTP {status}")

    def fake_endpoint(self, url, path, method="GET"):
        req = urllib.request.Request(url + path, method=method)
        with urllib.request.urlopen(req, context=self.ssl, timeout=30) as resp:
            data = resp.read()
            return resp.status, (json.loads(data) if data else None)

    def material_arrived(self, url, key_id, material, what):
        status, body = self.fake_endpoint(url, f"/__fake__/keys/{key_id}/check")
        self.check(status == 200 and body["sha256"] == hashlib.sha256(material).hexdigest(),
                   f"{what}: the fake holds exactly the material sent (SHA-256)")

    def create(self, kp, body, prefer="return=representation"):
        resp = kp.create_key(bluemix_instance=self.inst, key_create_body=body, prefer=prefer)
        if resp.get_status_code() != 201:
            raise ProofFailed(f"create_key answered {resp.get_status_code()}, not 201")
        out = result(resp)
        meta = out.get("metadata", {})
        if meta.get("collectionType") != KEY_TYPE or meta.get("collectionTotal") != 1:
            raise ProofFailed(f"create_key metadata {meta}")
        return out["resources"][0]

    def token(self, kp, expiration=600, retrievals=10):
        resp = kp.post_import_token(bluemix_instance=self.inst, expiration=expiration,
                                    max_allowed_retrievals=retrievals)
        meta = result(resp)
        self.check(resp.get_status_code() == 200
                   and meta.get("maxAllowedRetrievals") == retrievals
                   and meta.get("remainingRetrievals") == retrievals
                   and "payload" not in meta and "nonce" not in meta
                   and (rfc3339(meta["expirationDate"]) - rfc3339(meta["creationDate"]))
                   .total_seconds() == expiration,
                   f"post_import_token(expiration={expiration}, maxAllowedRetrievals={retrievals})",
                   json.dumps(meta))
        resp = kp.get_import_token(bluemix_instance=self.inst)
        got = result(resp)
        pem = base64.b64decode(got["payload"], validate=True)
        public = serialization.load_pem_public_key(pem)
        nonce = base64.b64decode(got["nonce"], validate=True)
        self.check(resp.get_status_code() == 200
                   and pem.startswith(b"-----BEGIN PUBLIC KEY-----")
                   and isinstance(public, rsa.RSAPublicKey) and public.key_size == 4096
                   and len(nonce) == 12 and got["remainingRetrievals"] == retrievals - 1,
                   "get_import_token: base64 PEM RSA-4096 public key, 12-byte nonce, "
                   "one retrieval used")
        return public, nonce

    def secure_body(self, public, nonce, material, name, algorithm=None, wrap_with=None,
                    tamper=False, nonce_material=None, iv_override=None, extractable=False):
        """A create body importing `material` with the import token; the optional arguments
        break one thing each."""
        algorithm = algorithm or self.flavor["algorithm"]
        wrapped = bytearray(public.encrypt(material, oaep(wrap_with or algorithm)))
        if tamper:
            wrapped[len(wrapped) // 2] ^= 0x01
        enc, iv = encrypt_nonce(self.flavor["nonce"], nonce_material or material, nonce)
        return key_body(name, extractable, b64(bytes(wrapped)), algorithm, enc,
                        iv_override or iv)

    # ----- the proof ---------------------------------------------------------------------

    def run(self):
        a, fl = self.args, self.flavor
        url = a.url

        # IAM: a wrong API key is refused by the token endpoint, with IAM's own error.
        bad = self.client(url, "not-" + a.api_key)
        body = self.refused("wrong API key: IAM token request", lambda: bad.get_keys(
            bluemix_instance=self.inst), 400)
        self.check(body.get("errorCode") == "BXNIM0415E", "IAM error BXNIM0415E", str(body))

        kp = self.client(url, a.api_key)
        listed = result(kp.get_keys(bluemix_instance=self.inst))
        self.check(listed["metadata"] == {"collectionType": KEY_TYPE, "collectionTotal": 0}
                   and "resources" not in listed, "get_keys on an empty instance", str(listed))
        self.refused("another Bluemix-Instance", lambda: kp.get_keys(
            bluemix_instance=str(uuid.uuid4())), 401)
        self.refused("unknown X-Kms-Key-Ring", lambda: kp.get_keys(
            bluemix_instance=self.inst, x_kms_key_ring="no-such-ring"), 404,
            ["KEY_RING_NOT_FOUND_ERR"])
        self.refused("import token of 299 s", lambda: kp.post_import_token(
            bluemix_instance=self.inst, expiration=299, max_allowed_retrievals=1), 400,
            ["INVALID_FIELD_ERR"])

        # The import-token flow, with the flavor's wrap and nonce encryption.
        public, nonce = self.token(kp)
        material = os.urandom(32)
        key = self.create(kp, self.secure_body(public, nonce, material, "imported-root-256"))
        self.check(key["state"] == 1 and key["imported"] is True and key["extractable"] is False
                   and "payload" not in key and key["keyRingID"] == "default"
                   and key["crn"].startswith(f"crn:v1:bluemix:public:{fl['service']}:")
                   and key["crn"].endswith(f":{self.inst}:key:{key['id']}"),
                   f"create_key: AES-256 imported with the import token ({fl['algorithm']}, "
                   f"{fl['nonce']} nonce)", json.dumps(key))
        self.material_arrived(url, key["id"], material, "import-token AES-256")
        root_id = key["id"]

        material128 = os.urandom(16)
        key = self.create(kp, self.secure_body(public, nonce, material128, "imported-root-128"))
        self.material_arrived(url, key["id"], material128,
                              "the same token imports a second (AES-128) key")

        # What the service refuses, each with its reason code.
        def create(body):
            return lambda: kp.create_key(bluemix_instance=self.inst, key_create_body=body)

        m = os.urandom(32)
        self.refused(f"{fl['other']} is not this service's wrap", create(self.secure_body(
            public, nonce, m, "other-alg", algorithm=fl["other"])), 400, ["INVALID_FIELD_ERR"])
        self.refused(f"wrapped with {fl['other']}, labelled {fl['algorithm']}", create(
            self.secure_body(public, nonce, m, "mislabelled", wrap_with=fl["other"])), 400,
            ["INVALID_FIELD_ERR"])
        self.refused("tampered payload", create(self.secure_body(
            public, nonce, m, "tampered", tamper=True)), 400, ["INVALID_FIELD_ERR"])
        self.refused("wrong nonce", create(self.secure_body(
            public, os.urandom(12), m, "wrong-nonce")), 400, ["INCORRECT_NONCE_ERR"])
        enc, iv = encrypt_nonce(fl["nonce"], m, nonce)
        wrong_iv = iv[:-1] + bytes([iv[-1] ^ 0xFF])
        self.refused("wrong IV", create(key_body(
            "wrong-iv", False, b64(public.encrypt(m, oaep(fl["algorithm"]))), fl["algorithm"],
            enc, wrong_iv)), 400, ["INCORRECT_NONCE_IV_ERR"])
        self.refused("nonce encrypted under other material", create(self.secure_body(
            public, nonce, m, "other-material", nonce_material=os.urandom(32))), 400,
            ["INCORRECT_NONCE_IV_ERR", "INCORRECT_NONCE_ERR"])
        self.refused("a standard key with the import token", create(self.secure_body(
            public, nonce, m, "std-secure", extractable=True)), 400, ["KEY_ROOT_REQ_ERR"])

        # Import without the token, and generated keys.
        m24 = os.urandom(24)
        key = self.create(kp, key_body("plain-root-192", False, b64(m24)))
        self.check(key["imported"] is True, "create_key: plain AES-192 root key import")
        self.material_arrived(url, key["id"], m24, "plain import")
        self.refused("a 20-byte root key", create(key_body("odd-root", False, b64(os.urandom(20)))),
                     400, ["INVALID_FIELD_ERR"])
        gen = self.create(kp, key_body("generated-root", False))
        self.check(gen["imported"] is False and gen["state"] == 1, "create_key: generated root key")
        std = self.create(kp, key_body("generated-standard", True))
        got = result(kp.get_key(id=std["id"], bluemix_instance=self.inst))["resources"][0]
        std_material = base64.b64decode(got["payload"], validate=True)
        self.material_arrived(url, std["id"], std_material,
                              "get_key returns a standard key's payload")

        got = result(kp.get_key(id=root_id, bluemix_instance=self.inst, x_kms_key_ring="default"))
        k = got["resources"][0]
        self.check(got["metadata"]["collectionTotal"] == 1 and k["id"] == root_id
                   and k["state"] == 1 and "payload" not in k and k["name"] == "imported-root-256",
                   "get_key of the imported root key (no payload)", json.dumps(k))
        self.refused("get_key of an unknown key", lambda: kp.get_key(
            id=str(uuid.uuid4()), bluemix_instance=self.inst), 404, ["KEY_NOT_FOUND_ERR"])

        listed = result(kp.get_keys(bluemix_instance=self.inst))
        ids = [r["id"] for r in listed["resources"]]
        self.check(listed["metadata"]["collectionTotal"] == 5 == len(ids) and root_id in ids
                   and all("payload" not in r for r in listed["resources"]),
                   "get_keys lists the 5 keys without material", str(listed["metadata"]))
        page = result(kp.get_keys(bluemix_instance=self.inst, limit=2, offset=1))
        self.check([r["id"] for r in page["resources"]] == ids[1:3]
                   and page["metadata"]["collectionTotal"] == 2, "get_keys limit=2 offset=1")
        roots = result(kp.get_keys(bluemix_instance=self.inst, extractable=False))
        self.check(len(roots["resources"]) == 4, "get_keys extractable=false")

        # One import token per instance: a new one replaces the old.
        public2, nonce2 = self.token(kp, retrievals=1)
        self.refused("the replaced token's public key", create(self.secure_body(
            public, nonce, m, "old-token")), 400, ["INVALID_FIELD_ERR"])
        self.refused("no retrievals left", lambda: kp.get_import_token(
            bluemix_instance=self.inst), 409, ["IMPORT_TOKEN_EXPIRED_ERR"])
        m2 = os.urandom(32)
        key = self.create(kp, self.secure_body(public2, nonce2, m2, "after-retrievals"))
        self.material_arrived(url, key["id"], m2,
                              "a token with no retrievals left still imports until it expires")
        status, _ = self.fake_endpoint(url, "/__fake__/import_token/expire", "POST")
        self.check(status == 204, "fake: the import token expires")
        self.refused("import with an expired token", create(self.secure_body(
            public2, nonce2, m, "expired")), 409, ["IMPORT_TOKEN_EXPIRED_ERR"])
        self.refused("get_import_token when expired", lambda: kp.get_import_token(
            bluemix_instance=self.inst), 409, ["IMPORT_TOKEN_EXPIRED_ERR"])

        # Delete, and what the API says of a deleted key.
        resp = kp.delete_key(id=root_id, bluemix_instance=self.inst, prefer="return=representation")
        k = result(resp)["resources"][0]
        self.check(resp.get_status_code() == 200 and k["state"] == 5 and k["deleted"] is True
                   and "deletionDate" in k, "delete_key (return=representation)", json.dumps(k))
        self.refused("delete_key of a deleted key", lambda: kp.delete_key(
            id=root_id, bluemix_instance=self.inst), 410, ["KEY_DELETED_ERR"])
        k = result(kp.get_key(id=root_id, bluemix_instance=self.inst))["resources"][0]
        self.check(k["state"] == 5 and k["deleted"] is True, "get_key of a deleted key: state 5")
        ids = [r["id"] for r in result(kp.get_keys(bluemix_instance=self.inst))["resources"]]
        deleted = result(kp.get_keys(bluemix_instance=self.inst, state=[5]))["resources"]
        self.check(root_id not in ids and [r["id"] for r in deleted] == [root_id],
                   "a deleted key leaves the default list, shows with state=5")
        resp = kp.delete_key(id=gen["id"], bluemix_instance=self.inst)
        self.check(resp.get_status_code() == 204 and resp.get_result() is None,
                   "delete_key (return=minimal): 204")

        # Drift: deleted behind the client's back.
        status, _ = self.fake_endpoint(url, f"/__fake__/keys/{std['id']}/delete", "POST")
        k = result(kp.get_key(id=std["id"], bluemix_instance=self.inst))["resources"][0]
        self.check(status == 204 and k["state"] == 5 and "payload" not in k,
                   "fake drift: a key deleted behind the client's back reads as destroyed")

        # A caller without the import permission.
        deny = self.client(a.deny_url, a.api_key)
        public3, nonce3 = self.token(deny)
        m3 = os.urandom(32)
        body = self.refused("--deny import: import with the token", lambda: deny.create_key(
            bluemix_instance=self.inst,
            key_create_body=self.secure_body(public3, nonce3, m3, "denied")), 401)
        self.check(body["resources"][0]["errorMsg"].startswith("Unauthorized"),
                   "--deny import: Key Protect's 401 body", str(body))
        self.refused("--deny import: plain import", lambda: deny.create_key(
            bluemix_instance=self.inst, key_create_body=key_body("denied", False, b64(m3))), 401)
        key = self.create(deny, key_body("allowed-generated", False))
        self.check(key["state"] == 1, "--deny import: generating a key is still allowed")

        print(f"PROOF OK flavor={a.flavor} checks={self.checks}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flavor", choices=sorted(FLAVORS), required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--deny-url", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--instance-id", required=True)
    p.add_argument("--ca")
    args = p.parse_args()
    try:
        Proof(args).run()
    except ProofFailed as e:
        print(f"PROOF FAILED: {e}", flush=True)
        sys.exit(1)
    except ApiException as e:
        text = e.http_response.text if e.http_response is not None else ""
        print(f"PROOF FAILED: unexpected HTTP {e.status_code}: {text}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
