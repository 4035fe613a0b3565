"""boto3 scenarios against keyorchd's AWS KMS-compatible endpoint (tests/aws_endpoint.rs).

usage: python driver.py SCENARIO

Environment: KEYORCH_AWS_ENDPOINT (the URL keyorchd printed), AWS_SHARED_CREDENTIALS_FILE and
AWS_PROFILE (the dev credentials) or KEYORCH_AWS_KEYS (JSON: name -> [id, secret]),
KEYORCH_CLUSTER (token label), KEYORCH_PASSWORD (its user PIN), KEYORCH_TRUST_ANCHOR (a PEM
file), KEYORCH_CA_BUNDLE (for HTTPS). Every assertion failure exits non-zero with a trace;
on success the last line of stdout is one JSON object of results for the Rust side.
Responses are printed (the Rust side searches them for the password).
"""

import base64
import datetime
import json
import os
import sys
import time
import urllib.error
import urllib.request
from unittest import mock

import boto3
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

ENDPOINT = os.environ["KEYORCH_AWS_ENDPOINT"]
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})
# botocore checks minimum lengths and values itself; off, so that keyorchd's rules answer.
UNCHECKED = Config(retries={"max_attempts": 1, "mode": "standard"}, parameter_validation=False)
RESULTS = {}


def client(region=None, key=None, secret=None, config=NO_RETRY, **kw):
    """A KMS client: the dev profile's credentials unless `key`/`secret` are given."""
    args = {"endpoint_url": ENDPOINT, "config": config}
    if os.environ.get("KEYORCH_CA_BUNDLE"):
        args["verify"] = os.environ["KEYORCH_CA_BUNDLE"]
    if key is not None:
        args.update(aws_access_key_id=key, aws_secret_access_key=secret)
        args["region_name"] = region or "us-east-1"
    elif region is not None:
        args["region_name"] = region
    args.update(kw)
    session = boto3.Session(profile_name=os.environ["AWS_PROFILE"]) if key is None else boto3.Session()
    # (with explicit keys, AWS_PROFILE is unset by the Rust side when no profile exists)
    return session.client("kms", **args)


def show(label, response):
    print(f"{label}: {response!r}", flush=True)
    return response


def expect(exc, call, *args, **kwargs):
    """`call` must raise `exc` (a boto3 modeled class, or a ClientError code string)."""
    try:
        r = call(*args, **kwargs)
    except ClientError as e:
        code = e.response["Error"]["Code"]
        show(f"{call.__name__} -> {code}", e.response["Error"])
        if isinstance(exc, str):
            assert code == exc, f"{call.__name__}: expected {exc}, got {code}: {e}"
        else:
            assert isinstance(e, exc), f"{call.__name__}: expected {exc.__name__}, got {type(e).__name__} ({code}): {e}"
        return e
    raise AssertionError(f"{call.__name__}: expected {exc}, got a success: {r!r}")


def wait_state(c, store_id, want, timeout=60):
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        d = c.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"][0]
        seen.append(d["ConnectionState"])
        if d["ConnectionState"] in want:
            show("describe", d)
            return d, seen
        time.sleep(0.2)
    raise AssertionError(f"{store_id} never reached {want}: {seen[-5:]}")


def anchor():
    return open(os.environ["KEYORCH_TRUST_ANCHOR"]).read()


def create_store(c, name, cluster=None, password=None):
    r = show("create_custom_key_store", c.create_custom_key_store(
        CustomKeyStoreName=name,
        CloudHsmClusterId=cluster or os.environ["KEYORCH_CLUSTER"],
        TrustAnchorCertificate=anchor(),
        KeyStorePassword=password or os.environ["KEYORCH_PASSWORD"],
    ))
    assert set(r) == {"CustomKeyStoreId", "ResponseMetadata"}, r
    return r["CustomKeyStoreId"]


def story():
    """Create → connect (CONNECTING → CONNECTED) → key → crypto → disconnect (the seed's boto3
    example) → Unavailable and KMSInvalidStateException → HasCMKs. Leaves the store
    DISCONNECTED for the CLI part."""
    c = client()
    store = create_store(c, "ExampleKeyStore")
    d = c.describe_custom_key_stores(CustomKeyStoreId=store)["CustomKeyStores"][0]
    assert d["ConnectionState"] == "DISCONNECTED", d
    assert d["CustomKeyStoreType"] == "AWS_CLOUDHSM", d
    assert d["CloudHsmClusterId"] == os.environ["KEYORCH_CLUSTER"], d
    assert d["TrustAnchorCertificate"] == anchor(), d
    assert isinstance(d["CreationDate"], datetime.datetime), d
    assert "ConnectionErrorCode" not in d, d
    assert "KeyStorePassword" not in d, d

    r = show("connect", c.connect_custom_key_store(CustomKeyStoreId=store))
    assert set(r) == {"ResponseMetadata"}, r
    d, seen = wait_state(c, store, {"CONNECTED", "FAILED"})
    assert d["ConnectionState"] == "CONNECTED", d
    assert "ConnectionErrorCode" not in d, d
    assert seen[0] in ("CONNECTING", "CONNECTED"), seen

    key = show("create_key", c.create_key(
        CustomKeyStoreId=store, Origin="AWS_CLOUDHSM", Description="card data",
        Tags=[{"TagKey": "team", "TagValue": "payments"}]))["KeyMetadata"]
    assert key["KeyState"] == "Enabled" and key["Enabled"] is True, key
    assert key["Origin"] == "AWS_CLOUDHSM", key
    assert key["CustomKeyStoreId"] == store, key
    assert key["CloudHsmClusterId"] == os.environ["KEYORCH_CLUSTER"], key
    assert key["KeySpec"] == "SYMMETRIC_DEFAULT" and key["KeyUsage"] == "ENCRYPT_DECRYPT", key
    assert key["Arn"].startswith("arn:aws:kms:us-east-1:") and key["Arn"].endswith(key["KeyId"]), key
    kid = key["KeyId"]

    listed = c.list_keys()
    assert kid in [k["KeyId"] for k in listed["Keys"]], listed
    assert c.describe_key(KeyId=key["Arn"])["KeyMetadata"]["KeyId"] == kid

    ctx = {"order": "42"}
    ct = c.encrypt(KeyId=kid, Plaintext=b"hello, HSM", EncryptionContext=ctx)
    assert ct["KeyId"] == key["Arn"] and ct["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT", ct
    pt = c.decrypt(CiphertextBlob=ct["CiphertextBlob"], EncryptionContext=ctx)
    assert pt["Plaintext"] == b"hello, HSM" and pt["KeyId"] == key["Arn"], pt
    expect(c.exceptions.InvalidCiphertextException, c.decrypt,
           CiphertextBlob=ct["CiphertextBlob"], EncryptionContext={"order": "43"})
    tampered = bytearray(ct["CiphertextBlob"])
    tampered[-1] ^= 1
    expect(c.exceptions.InvalidCiphertextException, c.decrypt, CiphertextBlob=bytes(tampered),
           EncryptionContext=ctx)
    dk = c.generate_data_key(KeyId=kid, KeySpec="AES_256")
    assert len(dk["Plaintext"]) == 32, dk
    assert c.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]
    assert len(c.generate_data_key(KeyId=kid, NumberOfBytes=16)["Plaintext"]) == 16

    # The seed's boto3 example: the answer holds nothing but ResponseMetadata.
    response = c.disconnect_custom_key_store(
        # The ID of the custom key store.
        CustomKeyStoreId=store,
    )
    print(response)
    assert list(response) == ["ResponseMetadata"], response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200, response
    d = c.describe_custom_key_stores(CustomKeyStoreId=store)["CustomKeyStores"][0]
    assert d["ConnectionState"] == "DISCONNECTED", d

    meta = c.describe_key(KeyId=kid)["KeyMetadata"]
    assert meta["KeyState"] == "Unavailable", meta
    expect(c.exceptions.KMSInvalidStateException, c.encrypt, KeyId=kid, Plaintext=b"x")
    expect(c.exceptions.KMSInvalidStateException, c.decrypt, CiphertextBlob=ct["CiphertextBlob"],
           EncryptionContext=ctx)
    expect(c.exceptions.KMSInvalidStateException, c.generate_data_key, KeyId=kid, KeySpec="AES_256")
    expect(c.exceptions.CustomKeyStoreInvalidStateException, c.create_key,
           CustomKeyStoreId=store, Origin="AWS_CLOUDHSM")
    expect(c.exceptions.CustomKeyStoreInvalidStateException, c.disconnect_custom_key_store,
           CustomKeyStoreId=store)
    expect(c.exceptions.CustomKeyStoreHasCMKsException, c.delete_custom_key_store,
           CustomKeyStoreId=store)
    RESULTS.update(store=store, key=kid, ciphertext=base64.b64encode(ct["CiphertextBlob"]).decode())


def finish():
    """After the CLI reconnected the store: the old ciphertext decrypts again, then
    ScheduleKeyDeletion, disconnect and DeleteCustomKeyStore."""
    c = client()
    store, kid = os.environ["KEYORCH_STORE"], os.environ["KEYORCH_KEY"]
    ct = base64.b64decode(os.environ["KEYORCH_CIPHERTEXT"])
    assert c.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Enabled"
    assert c.decrypt(CiphertextBlob=ct, EncryptionContext={"order": "42"})["Plaintext"] == b"hello, HSM"
    for days in (6, 31):
        expect("ValidationException", c.schedule_key_deletion, KeyId=kid, PendingWindowInDays=days)
    r = show("schedule_key_deletion", c.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7))
    assert r["KeyState"] == "PendingDeletion" and r["PendingWindowInDays"] == 7, r
    assert isinstance(r["DeletionDate"], datetime.datetime), r
    meta = c.describe_key(KeyId=kid)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion" and meta["Enabled"] is False, meta
    expect(c.exceptions.KMSInvalidStateException, c.decrypt, CiphertextBlob=ct,
           EncryptionContext={"order": "42"})
    expect(c.exceptions.KMSInvalidStateException, c.schedule_key_deletion, KeyId=kid)
    expect(c.exceptions.CustomKeyStoreInvalidStateException, c.delete_custom_key_store,
           CustomKeyStoreId=store)
    # The seed's raw HTTP form: POST / with X-Amz-Target, answered by an empty JSON object.
    creds = boto3.Session(profile_name=os.environ["AWS_PROFILE"]).get_credentials()
    body = json.dumps({"CustomKeyStoreId": store}).encode()
    headers = signed(body, creds.access_key, creds.secret_key,
                     target="TrentService.DisconnectCustomKeyStore")
    status, raw, content_type = raw_post(body, headers, raw=True)
    assert (status, raw) == (200, b"{}"), (status, raw)
    assert content_type == "application/x-amz-json-1.1", content_type
    r = show("delete", c.delete_custom_key_store(CustomKeyStoreId=store))
    assert list(r) == ["ResponseMetadata"], r
    expect(c.exceptions.CustomKeyStoreNotFoundException, c.describe_custom_key_stores,
           CustomKeyStoreId=store)
    assert c.describe_custom_key_stores()["CustomKeyStores"] == []


def exceptions():
    """Every state rule and field rule, as the modeled boto3 class where KMS models one."""
    c = client(config=UNCHECKED)
    cluster = os.environ["KEYORCH_CLUSTER"]
    # The seed's id: a store that does not exist.
    for call in (c.disconnect_custom_key_store, c.connect_custom_key_store,
                 c.delete_custom_key_store, c.update_custom_key_store):
        expect(c.exceptions.CustomKeyStoreNotFoundException, call,
               CustomKeyStoreId="cks-1234567890abcdef0")
    expect(c.exceptions.CustomKeyStoreNotFoundException, c.describe_custom_key_stores,
           CustomKeyStoreName="nope")
    expect(c.exceptions.CustomKeyStoreNotFoundException, c.create_key,
           CustomKeyStoreId="cks-1234567890abcdef0", Origin="AWS_CLOUDHSM")

    # Field rules (ValidationException is not a modeled KMS class: boto3 raises ClientError).
    long_name = "n" * 257
    for kw in (
        {"CustomKeyStoreName": long_name},
        {"CustomKeyStoreName": "bad/name"},
        {"CloudHsmClusterId": "cluster-short"},
        {"CloudHsmClusterId": "c" * 25},
        {"KeyStorePassword": "six666"},
        {"KeyStorePassword": "p" * 33},
        {"TrustAnchorCertificate": "not a certificate"},
        {"CustomKeyStoreType": "SOMETHING_ELSE"},
        {"XksProxyUriPath": "/kms/xks/v1"},
    ):
        args = dict(CustomKeyStoreName="ok-name", CloudHsmClusterId=cluster,
                    TrustAnchorCertificate=anchor(), KeyStorePassword=os.environ["KEYORCH_PASSWORD"])
        args.update(kw)
        e = expect("ValidationException", c.create_custom_key_store, **args)
        assert os.environ["KEYORCH_PASSWORD"] not in str(e.response), e.response
    e = expect("ValidationException", c.create_custom_key_store, CustomKeyStoreName="no-password",
               CloudHsmClusterId=cluster, TrustAnchorCertificate=anchor())
    assert "keyStorePassword" in e.response["Error"]["Message"], e.response
    # External key stores: plain http only to loopback; no VPC endpoint services; the
    # credential's lengths; nothing made by any of them.
    xks = dict(CustomKeyStoreName="xks", CustomKeyStoreType="EXTERNAL_KEY_STORE",
               XksProxyUriEndpoint="https://xks.example.com", XksProxyUriPath="/kms/xks/v1",
               XksProxyConnectivity="PUBLIC_ENDPOINT",
               XksProxyAuthenticationCredential={"AccessKeyId": "A" * 20, "RawSecretAccessKey": "s" * 43})
    e = expect("ValidationException", c.create_custom_key_store,
               **{**xks, "XksProxyUriEndpoint": "http://xks.example.com"})
    assert "uri_endpoint" in e.response["Error"]["Message"], e.response
    expect(c.exceptions.UnsupportedOperationException, c.create_custom_key_store,
           **{**xks, "XksProxyConnectivity": "VPC_ENDPOINT_SERVICE"})
    expect("ValidationException", c.create_custom_key_store,
           **{**xks, "XksProxyAuthenticationCredential": {"AccessKeyId": "A" * 20, "RawSecretAccessKey": "s" * 42}})
    expect("ValidationException", c.create_custom_key_store,
           **{k: v for k, v in xks.items() if k != "XksProxyConnectivity"})
    assert all(s["CustomKeyStoreName"] != "xks"
               for s in c.describe_custom_key_stores()["CustomKeyStores"])
    expect(c.exceptions.UnsupportedOperationException, c.list_aliases)
    expect("ValidationException", c.describe_custom_key_stores, Limit=0)
    expect(c.exceptions.InvalidMarkerException, c.describe_custom_key_stores, Marker="not-ours")
    expect(c.exceptions.InvalidMarkerException, c.list_keys, Marker="not-ours")

    # A store whose password is wrong: connect → FAILED with INVALID_CREDENTIALS.
    bad = create_store(c, "WrongPassword", password="wrong-password")
    expect(c.exceptions.CustomKeyStoreNameInUseException, create_store, c, "WrongPassword",
           cluster="cluster-2222222222bbb")
    expect(c.exceptions.CloudHsmClusterInUseException, create_store, c, "SameCluster")
    c.connect_custom_key_store(CustomKeyStoreId=bad)
    d, _ = wait_state(c, bad, {"CONNECTED", "FAILED"})
    assert d["ConnectionState"] == "FAILED" and d["ConnectionErrorCode"] == "INVALID_CREDENTIALS", d
    # FAILED: connect and update are refused until a disconnect (AWS's recovery).
    expect(c.exceptions.CustomKeyStoreInvalidStateException, c.connect_custom_key_store,
           CustomKeyStoreId=bad)
    expect(c.exceptions.CustomKeyStoreInvalidStateException, c.update_custom_key_store,
           CustomKeyStoreId=bad, KeyStorePassword=os.environ["KEYORCH_PASSWORD"])
    expect(c.exceptions.CustomKeyStoreInvalidStateException, c.delete_custom_key_store,
           CustomKeyStoreId=bad)
    c.disconnect_custom_key_store(CustomKeyStoreId=bad)
    d = c.describe_custom_key_stores(CustomKeyStoreId=bad)["CustomKeyStores"][0]
    assert d["ConnectionState"] == "DISCONNECTED" and "ConnectionErrorCode" not in d, d
    expect(c.exceptions.CloudHsmClusterNotRelatedException, c.update_custom_key_store,
           CustomKeyStoreId=bad, CloudHsmClusterId="cluster-9999999999zzz")
    expect("ValidationException", c.update_custom_key_store, CustomKeyStoreId=bad,
           NewCustomKeyStoreName="x" * 257)
    r = c.update_custom_key_store(CustomKeyStoreId=bad, KeyStorePassword=os.environ["KEYORCH_PASSWORD"],
                                  NewCustomKeyStoreName="Fixed", CloudHsmClusterId=cluster)
    assert list(r) == ["ResponseMetadata"], r
    c.connect_custom_key_store(CustomKeyStoreId=bad)
    d, _ = wait_state(c, bad, {"CONNECTED", "FAILED"})
    assert d["ConnectionState"] == "CONNECTED" and d["CustomKeyStoreName"] == "Fixed", d
    expect(c.exceptions.CustomKeyStoreInvalidStateException, c.update_custom_key_store,
           CustomKeyStoreId=bad, NewCustomKeyStoreName="Renamed")
    expect(c.exceptions.CustomKeyStoreInvalidStateException, c.delete_custom_key_store,
           CustomKeyStoreId=bad)

    # A token that does not exist: CLUSTER_NOT_FOUND.
    missing = create_store(c, "NoSuchToken", cluster="cluster-0000000000none")
    c.connect_custom_key_store(CustomKeyStoreId=missing)
    d, _ = wait_state(c, missing, {"CONNECTED", "FAILED"})
    assert d["ConnectionState"] == "FAILED" and d["ConnectionErrorCode"] == "CLUSTER_NOT_FOUND", d

    # Keys: unknown ids, aliases, wrong origin, key ids that do not match the ciphertext.
    expect(c.exceptions.NotFoundException, c.describe_key, KeyId="key-00000000000000000000000000000000")
    expect(c.exceptions.NotFoundException, c.describe_key, KeyId="alias/payments")
    expect(c.exceptions.NotFoundException, c.encrypt, KeyId="key-00000000000000000000000000000000",
           Plaintext=b"x")
    expect("ValidationException", c.create_key, CustomKeyStoreId=bad)
    expect(c.exceptions.UnsupportedOperationException, c.create_key)
    expect(c.exceptions.UnsupportedOperationException, c.create_key, CustomKeyStoreId=bad,
           Origin="AWS_CLOUDHSM", KeySpec="RSA_2048")
    k1 = c.create_key(CustomKeyStoreId=bad, Origin="AWS_CLOUDHSM")["KeyMetadata"]["KeyId"]
    k2 = c.create_key(CustomKeyStoreId=bad, Origin="AWS_CLOUDHSM")["KeyMetadata"]["KeyId"]
    ct = c.encrypt(KeyId=k1, Plaintext=b"x")["CiphertextBlob"]
    expect(c.exceptions.IncorrectKeyException, c.decrypt, CiphertextBlob=ct, KeyId=k2)
    expect(c.exceptions.InvalidCiphertextException, c.decrypt, CiphertextBlob=b"garbage")
    expect("ValidationException", c.encrypt, KeyId=k1, Plaintext=b"x" * 4097)
    expect(c.exceptions.InvalidKeyUsageException, c.encrypt, KeyId=k1, Plaintext=b"x",
           EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    expect("ValidationException", c.generate_data_key, KeyId=k1)
    # Paging: Limit, NextMarker, Truncated.
    page = c.list_keys(Limit=1)
    assert len(page["Keys"]) == 1 and page["Truncated"] is True and page["NextMarker"], page
    rest = c.list_keys(Limit=1, Marker=page["NextMarker"])
    assert rest["Keys"][0]["KeyId"] != page["Keys"][0]["KeyId"], rest
    stores = c.describe_custom_key_stores(Limit=1)
    assert len(stores["CustomKeyStores"]) == 1 and stores["Truncated"] is True, stores
    seen = [s["CustomKeyStoreId"] for s in stores["CustomKeyStores"]]
    marker = stores["NextMarker"]
    while marker:
        p = c.describe_custom_key_stores(Limit=1, Marker=marker)
        seen += [s["CustomKeyStoreId"] for s in p["CustomKeyStores"]]
        marker = p.get("NextMarker")
        assert p["Truncated"] == bool(marker), p
    assert sorted(seen) == sorted([bad, missing]), seen
    by_name = c.describe_custom_key_stores(CustomKeyStoreName="Fixed")["CustomKeyStores"]
    assert [s["CustomKeyStoreId"] for s in by_name] == [bad], by_name


def raw_post(body, headers, raw=False):
    """POSTs to the endpoint: (status, parsed JSON), or (status, bytes, content type) if raw."""
    req = urllib.request.Request(ENDPOINT + "/", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, data, ctype = r.status, r.read(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        status, data, ctype = e.code, e.read(), e.headers.get("Content-Type")
    if raw:
        return status, data, ctype
    return status, json.loads(data)


def signed(body, key, secret, region="us-east-1", target="TrentService.ListKeys", when=None):
    """Headers of a request signed by botocore's own SigV4 signer."""
    req = AWSRequest(method="POST", url=ENDPOINT + "/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target})
    signer = botocore.auth.SigV4Auth(Credentials(key, secret), "kms", region)
    if when is None:
        signer.add_auth(req)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            signer.add_auth(req)
    return dict(req.headers.items())


def signatures():
    """SigV4: the good request passes; every way of getting it wrong is refused."""
    creds = boto3.Session(profile_name=os.environ["AWS_PROFILE"]).get_credentials()
    key, secret = creds.access_key, creds.secret_key
    body = b"{}"
    status, out = raw_post(body, signed(body, key, secret))
    assert status == 200 and "Keys" in out, (status, out)

    c = client(key=key, secret=secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    e = expect("InvalidSignatureException", c.list_keys)
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400, e.response
    expect("UnrecognizedClientException", client(key="AKIAUNKNOWNKEY000000", secret=secret).list_keys)

    # A body altered after signing.
    good = json.dumps({"CustomKeyStoreId": "cks-1234567890abcdef0"}).encode()
    headers = signed(good, key, secret, target="TrentService.DeleteCustomKeyStore")
    evil = json.dumps({"CustomKeyStoreId": "cks-0000000000000evil"}).encode()
    status, out = raw_post(evil, headers)
    assert status == 400 and out["__type"] == "InvalidSignatureException", (status, out)
    # The unaltered request is fine (and answers that the store does not exist).
    status, out = raw_post(good, headers)
    assert status == 400 and out["__type"] == "CustomKeyStoreNotFoundException", (status, out)
    # A body hash header that lies, or says UNSIGNED-PAYLOAD.
    for claimed in ("UNSIGNED-PAYLOAD", "0" * 64):
        h = dict(headers, **{"X-Amz-Content-Sha256": claimed})
        status, out = raw_post(good, h)
        assert status == 400 and out["__type"] == "InvalidSignatureException", (claimed, status, out)

    # Clocks more than 5 minutes off, either way.
    now = datetime.datetime.now(datetime.timezone.utc)
    status, out = raw_post(body, signed(body, key, secret, when=now - datetime.timedelta(minutes=10)))
    assert status == 400 and out["__type"] == "InvalidSignatureException", (status, out)
    assert out["message"].startswith("Signature expired:"), out
    status, out = raw_post(body, signed(body, key, secret, when=now + datetime.timedelta(minutes=10)))
    assert status == 400 and out["__type"] == "InvalidSignatureException", (status, out)
    assert out["message"].startswith("Signature not yet current:"), out
    status, out = raw_post(body, signed(body, key, secret, when=now - datetime.timedelta(minutes=4)))
    assert status == 200, (status, out)

    # No signature at all; a mangled one; a session token; another service's scope.
    status, out = raw_post(body, {"Content-Type": "application/x-amz-json-1.1",
                                  "X-Amz-Target": "TrentService.ListKeys"})
    assert status == 403 and out["__type"] == "MissingAuthenticationTokenException", (status, out)
    h = signed(body, key, secret)
    h["Authorization"] = h["Authorization"].split(", Signature=")[0]
    status, out = raw_post(body, h)
    assert status == 400 and out["__type"] == "IncompleteSignatureException", (status, out)
    h = signed(body, key, secret)
    h["X-Amz-Security-Token"] = "token"
    status, out = raw_post(body, h)
    assert status == 400 and out["__type"] == "UnrecognizedClientException", (status, out)
    req = AWSRequest(method="POST", url=ENDPOINT + "/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListKeys"})
    botocore.auth.SigV4Auth(Credentials(key, secret), "s3", "us-east-1").add_auth(req)
    status, out = raw_post(body, dict(req.headers.items()))
    assert status == 400 and out["__type"] == "InvalidSignatureException", (status, out)
    # A signed request for an operation keyorch does not serve.
    status, out = raw_post(body, signed(body, key, secret, target="TrentService.ListAliases"))
    assert status == 400 and out["__type"] == "UnsupportedOperationException", (status, out)
    RESULTS["access_key_id"] = key


def configured():
    """[aws] from a config file: per-key vaults and roles, allowed regions, HTTPS."""
    keys = json.loads(os.environ["KEYORCH_AWS_KEYS"])
    admin = client(region="eu-west-1", key=keys["admin"][0], secret=keys["admin"][1])
    store = create_store(admin, "ConfiguredStore")
    assert admin.describe_custom_key_stores()["CustomKeyStores"][0]["CustomKeyStoreId"] == store
    # A region the config does not allow.
    wrong_region = client(region="us-east-1", key=keys["admin"][0], secret=keys["admin"][1])
    e = expect("InvalidSignatureException", wrong_region.list_keys)
    assert "region" in e.response["Error"]["Message"], e.response
    # A key with the user role only: managing stores is denied (and audited).
    user = client(region="eu-west-1", key=keys["user"][0], secret=keys["user"][1])
    e = expect("AccessDeniedException", user.create_custom_key_store, CustomKeyStoreName="Nope",
               CloudHsmClusterId="cluster-1111111111aaa", TrustAnchorCertificate=anchor(),
               KeyStorePassword="something-long")
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400, e.response
    expect("AccessDeniedException", user.disconnect_custom_key_store, CustomKeyStoreId=store)
    # Reading needs any role in the vault: the user key sees the store.
    assert user.describe_custom_key_stores()["CustomKeyStores"][0]["CustomKeyStoreId"] == store
    # A key whose configured vault does not exist (and may not be created): KMSInternalException.
    lost = client(region="eu-west-1", key=keys["lost"][0], secret=keys["lost"][1])
    e = expect(lost.exceptions.KMSInternalException, lost.create_custom_key_store,
               CustomKeyStoreName="Lost", CloudHsmClusterId="cluster-1111111111aaa",
               TrustAnchorCertificate=anchor(), KeyStorePassword="something-long")
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 500, e.response
    assert lost.describe_custom_key_stores()["CustomKeyStores"] == []
    # Another vault's store is another account's: not found.
    expect(lost.exceptions.CustomKeyStoreNotFoundException, lost.describe_custom_key_stores,
           CustomKeyStoreId=store)
    RESULTS["store"] = store


def xks_store_args():
    x = os.environ
    return dict(
        CustomKeyStoreName="ExternalStore",
        CustomKeyStoreType="EXTERNAL_KEY_STORE",
        XksProxyUriEndpoint=x["KEYORCH_XKS_ENDPOINT"],
        XksProxyUriPath=x["KEYORCH_XKS_PATH"],
        XksProxyAuthenticationCredential={
            "AccessKeyId": x["KEYORCH_XKS_ACCESS_KEY_ID"],
            "RawSecretAccessKey": x["KEYORCH_XKS_SECRET"],
        },
        XksProxyConnectivity="PUBLIC_ENDPOINT",
    )


def external():
    """EXTERNAL_KEY_STORE: a store on another keyorchd's XKS proxy, a key with Origin
    EXTERNAL_KEY_STORE on one of its keys, crypto through it, and every refusal of
    CreateKey. Leaves the store CONNECTED for the seed's disconnect from the aws CLI."""
    c = client()
    x = os.environ
    base = xks_store_args()
    expect("UnsupportedOperationException", c.create_custom_key_store,
           **{**base, "XksProxyConnectivity": "VPC_ENDPOINT_SERVICE",
              "XksProxyVpcEndpointServiceName": "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"})
    expect("ValidationException", c.create_custom_key_store,
           **{**base, "KeyStorePassword": "something-long"})
    r = show("create_custom_key_store", c.create_custom_key_store(**base))
    assert set(r) == {"CustomKeyStoreId", "ResponseMetadata"}, r
    store = r["CustomKeyStoreId"]
    d = c.describe_custom_key_stores(CustomKeyStoreId=store)["CustomKeyStores"][0]
    show("describe", d)
    assert d["CustomKeyStoreType"] == "EXTERNAL_KEY_STORE", d
    assert d["ConnectionState"] == "DISCONNECTED", d
    assert d["XksProxyConfiguration"] == {
        "Connectivity": "PUBLIC_ENDPOINT",
        "AccessKeyId": x["KEYORCH_XKS_ACCESS_KEY_ID"],
        "UriEndpoint": x["KEYORCH_XKS_ENDPOINT"],
        "UriPath": x["KEYORCH_XKS_PATH"],
    }, d
    assert "CloudHsmClusterId" not in d, d
    listed = [s["CustomKeyStoreId"] for s in c.describe_custom_key_stores()["CustomKeyStores"]]
    assert store in listed, listed

    c.connect_custom_key_store(CustomKeyStoreId=store)
    d, _ = wait_state(c, store, {"CONNECTED", "FAILED"})
    assert d["ConnectionState"] == "CONNECTED", d

    k = show("create_key", c.create_key(CustomKeyStoreId=store, Origin="EXTERNAL_KEY_STORE",
                                        XksKeyId=x["KEYORCH_XKS_KEY_ID"]))["KeyMetadata"]
    assert k["Origin"] == "EXTERNAL_KEY_STORE", k
    assert k["CustomKeyStoreId"] == store, k
    assert k["XksKeyConfiguration"] == {"Id": x["KEYORCH_XKS_KEY_ID"]}, k
    assert k["KeyState"] == "Enabled" and k["KeySpec"] == "SYMMETRIC_DEFAULT", k
    expect("XksKeyNotFoundException", c.create_key, CustomKeyStoreId=store,
           Origin="EXTERNAL_KEY_STORE", XksKeyId="no-such-key")
    e = expect("XksKeyInvalidConfigurationException", c.create_key, CustomKeyStoreId=store,
               Origin="EXTERNAL_KEY_STORE", XksKeyId=x["KEYORCH_XKS_SMALL_KEY_ID"])
    assert "AES_128" in e.response["Error"]["Message"], e.response
    expect("XksKeyAlreadyInUseException", c.create_key, CustomKeyStoreId=store,
           Origin="EXTERNAL_KEY_STORE", XksKeyId=x["KEYORCH_XKS_KEY_ID"])
    expect("ValidationException", c.create_key, CustomKeyStoreId=store, Origin="AWS_CLOUDHSM")
    expect("ValidationException", c.create_key, CustomKeyStoreId=store, Origin="EXTERNAL_KEY_STORE")
    expect("ValidationException", c.create_key, XksKeyId=x["KEYORCH_XKS_KEY_ID"],
           CustomKeyStoreId=store, Origin="AWS_KMS")

    ctx = {"purpose": "xks-test"}
    ct = c.encrypt(KeyId=k["KeyId"], Plaintext=b"through the proxy", EncryptionContext=ctx)["CiphertextBlob"]
    r = c.decrypt(CiphertextBlob=ct, EncryptionContext=ctx)
    assert r["Plaintext"] == b"through the proxy", r
    assert r["KeyId"] == k["Arn"], r
    expect("InvalidCiphertextException", c.decrypt, CiphertextBlob=ct,
           EncryptionContext={"purpose": "other"})
    dk = c.generate_data_key(KeyId=k["KeyId"], KeySpec="AES_256")
    assert c.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]
    RESULTS.update(store=store, key=k["KeyId"], ciphertext=base64.b64encode(ct).decode())


def external_after():
    """After the seed's `aws kms disconnect-custom-key-store`: the key is Unavailable and
    every use is KMSInvalidStateException; the credential rotates while disconnected; a
    reconnect restores use; the proxy's URI is locked; the key is scheduled for deletion."""
    c = client()
    x = os.environ
    store, key = x["KEYORCH_XKS_STORE"], x["KEYORCH_XKS_KEY"]
    ct = base64.b64decode(x["KEYORCH_XKS_CIPHERTEXT"])
    ctx = {"purpose": "xks-test"}
    assert c.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Unavailable"
    expect(c.exceptions.KMSInvalidStateException, c.encrypt, KeyId=key, Plaintext=b"x")
    expect(c.exceptions.KMSInvalidStateException, c.decrypt, CiphertextBlob=ct, EncryptionContext=ctx)
    c.update_custom_key_store(CustomKeyStoreId=store, NewCustomKeyStoreName="ExternalStore2",
                              XksProxyAuthenticationCredential=xks_store_args()["XksProxyAuthenticationCredential"])
    c.connect_custom_key_store(CustomKeyStoreId=store)
    d, _ = wait_state(c, store, {"CONNECTED", "FAILED"})
    assert d["ConnectionState"] == "CONNECTED" and d["CustomKeyStoreName"] == "ExternalStore2", d
    assert c.decrypt(CiphertextBlob=ct, EncryptionContext=ctx)["Plaintext"] == b"through the proxy"
    expect("ValidationException", c.update_custom_key_store, CustomKeyStoreId=store,
           XksProxyUriPath="/other/kms/xks/v1")
    r = c.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    assert r["KeyState"] == "PendingDeletion", r
    expect(c.exceptions.KMSInvalidStateException, c.decrypt, CiphertextBlob=ct, EncryptionContext=ctx)


SCENARIOS = {f.__name__: f for f in (story, finish, exceptions, signatures, configured, external, external_after)}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()
    print(json.dumps(RESULTS))
