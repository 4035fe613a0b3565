// keyorchd driven by grpc-js (Node's pure-JavaScript gRPC), knowing nothing of keyorch's
// .proto files.
//
// The client defines only the reflection protocol (reflection.proto beside this file). It
// asks grpc.reflection.v1.ServerReflection for the files declaring the services it calls and
// their dependencies, turns the FileDescriptorProtos into a FileDescriptorSet and loads that
// with @grpc/proto-loader's loadFileDescriptorSetFromBuffer: every keyorch and health message
// is built from it. google.rpc.Status and google.rpc.ErrorInfo (the error details) are
// decoded from the wire by hand. Run by tests/grpc_interop.rs with
// NODE_PATH=<scripts/grpc-clients.sh DIR>/js/node_modules.
//
// usage:
//   client.js unix SOCKET_PATH
//   client.js tls HOST:PORT CA_PEM CERT_PEM KEY_PEM [SERVER_NAME]
//
// Prints `OK grpc-js <unix|tls> ...` on success; on any failure a `FAIL grpc-js ...` line on
// stderr and exit status 1.
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const CLIENT = 'grpc-js';
const TIMEOUT_MS = 30000;
const DOMAIN = 'keyorch.v1';
const EXPECTED_SERVICES = [
  'keyorch.v1.VaultService',
  'keyorch.v1.KeystoreService',
  'keyorch.v1.KeyService',
  'keyorch.v1.CryptoService',
  'keyorch.v1.AuditService',
  'grpc.health.v1.Health',
  'grpc.reflection.v1.ServerReflection',
  'grpc.reflection.v1alpha.ServerReflection',
];
// What the tour calls; their files (and those files' imports) are fetched by reflection.
const USED_SERVICES = [
  'keyorch.v1.VaultService',
  'keyorch.v1.KeystoreService',
  'keyorch.v1.KeyService',
  'keyorch.v1.CryptoService',
  'grpc.health.v1.Health',
];
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
};

class Failure extends Error {}

function check(cond, what) {
  if (!cond) throw new Failure(what);
}

function deadline() {
  return new Date(Date.now() + TIMEOUT_MS);
}

function openClient(argv) {
  if (argv.length === 2 && argv[0] === 'unix') {
    // grpc-js sends :authority localhost on a Unix socket.
    const target = 'unix:' + path.resolve(argv[1]);
    return { client: new grpc.Client(target, grpc.credentials.createInsecure()), transport: 'unix' };
  }
  if ((argv.length === 5 || argv.length === 6) && argv[0] === 'tls') {
    const [target, ca, cert, key] = argv.slice(1, 5);
    const creds = grpc.credentials.createSsl(
      fs.readFileSync(ca),
      fs.readFileSync(key),
      fs.readFileSync(cert),
    );
    const options = argv.length === 6 ? { 'grpc.ssl_target_name_override': argv[5] } : {};
    return { client: new grpc.Client(target, creds, options), transport: 'tls' };
  }
  throw new Failure(
    'usage: client.js unix SOCKET_PATH | client.js tls HOST:PORT CA_PEM CERT_PEM KEY_PEM [SERVER_NAME]',
  );
}

// ---------------------------------------------------------------------------------------
// Protobuf wire reading, for the few foreign messages not worth a .proto
// ---------------------------------------------------------------------------------------

function readVarint(buf, pos) {
  let value = 0n;
  let shift = 0n;
  for (;;) {
    check(pos < buf.length, 'truncated varint');
    const b = buf[pos++];
    value |= BigInt(b & 0x7f) << shift;
    if ((b & 0x80) === 0) return [value, pos];
    shift += 7n;
  }
}

// [{ no, wire, value }] of one message: value is a BigInt (varint) or a Buffer (bytes).
function wireFields(buf) {
  const out = [];
  let pos = 0;
  while (pos < buf.length) {
    let tag;
    [tag, pos] = readVarint(buf, pos);
    const no = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    let value;
    if (wire === 0) {
      [value, pos] = readVarint(buf, pos);
    } else if (wire === 2) {
      let len;
      [len, pos] = readVarint(buf, pos);
      const end = pos + Number(len);
      check(end <= buf.length, 'truncated field');
      value = buf.subarray(pos, end);
      pos = end;
    } else if (wire === 1 || wire === 5) {
      const n = wire === 1 ? 8 : 4;
      value = buf.subarray(pos, pos + n);
      pos += n;
    } else {
      throw new Failure(`unsupported wire type ${wire}`);
    }
    out.push({ no, wire, value });
  }
  return out;
}

function encodeVarint(n) {
  const bytes = [];
  while (n > 0x7f) {
    bytes.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  bytes.push(n);
  return Buffer.from(bytes);
}

// google.protobuf.FileDescriptorSet { repeated FileDescriptorProto file = 1; }
function fileDescriptorSet(files) {
  const parts = [];
  for (const f of files) parts.push(Buffer.from([0x0a]), encodeVarint(f.length), f);
  return Buffer.concat(parts);
}

// FileDescriptorProto: name = 1, dependency = 3.
function fileNameAndDeps(fdp) {
  let name = '';
  const deps = [];
  for (const f of wireFields(fdp)) {
    if (f.no === 1 && f.wire === 2) name = f.value.toString('utf8');
    if (f.no === 3 && f.wire === 2) deps.push(f.value.toString('utf8'));
  }
  return { name, deps };
}

// google.rpc.Status { code = 1; message = 2; repeated Any details = 3 } from the trailers,
// and the google.rpc.ErrorInfo { reason = 1; domain = 2; map<string,string> metadata = 3 }
// among its details.
function errorInfo(err) {
  const raw = err.metadata && err.metadata.get('grpc-status-details-bin');
  check(raw && raw.length === 1, `no grpc-status-details-bin in ${err.code} ${err.details}`);
  const status = { code: 0, message: '', details: [] };
  for (const f of wireFields(raw[0])) {
    if (f.no === 1) status.code = Number(f.value);
    if (f.no === 2) status.message = f.value.toString('utf8');
    if (f.no === 3) {
      const any = {};
      for (const g of wireFields(f.value)) {
        if (g.no === 1) any.typeUrl = g.value.toString('utf8');
        if (g.no === 2) any.value = g.value;
      }
      status.details.push(any);
    }
  }
  check(status.code === err.code, `status details say code ${status.code}, the call ${err.code}`);
  const any = status.details.find((d) => d.typeUrl === 'type.googleapis.com/google.rpc.ErrorInfo');
  check(any, `no google.rpc.ErrorInfo in the details of ${err.code} ${err.details}`);
  const info = { reason: '', domain: '', metadata: {} };
  for (const f of wireFields(any.value || Buffer.alloc(0))) {
    if (f.no === 1) info.reason = f.value.toString('utf8');
    if (f.no === 2) info.domain = f.value.toString('utf8');
    if (f.no === 3) {
      let k = '';
      let v = '';
      for (const g of wireFields(f.value)) {
        if (g.no === 1) k = g.value.toString('utf8');
        if (g.no === 2) v = g.value.toString('utf8');
      }
      info.metadata[k] = v;
    }
  }
  return { message: status.message, info };
}

// ---------------------------------------------------------------------------------------
// Reflection
// ---------------------------------------------------------------------------------------

const reflectionPkg = protoLoader.loadSync(path.join(__dirname, 'reflection.proto'), LOADER_OPTIONS);
const reflectionInfo = reflectionPkg['grpc.reflection.v1.ServerReflection'].ServerReflectionInfo;

// Sends `requests` on one ServerReflectionInfo stream of grpc.reflection.<version>; the
// responses, in order.
function reflect(client, version, requests) {
  return new Promise((resolve, reject) => {
    const responses = [];
    const call = client.makeBidiStreamRequest(
      `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`,
      reflectionInfo.requestSerialize,
      reflectionInfo.responseDeserialize,
      new grpc.Metadata(),
      { deadline: deadline() },
    );
    call.on('data', (r) => responses.push(r));
    call.on('error', reject);
    call.on('end', () => resolve(responses));
    for (const r of requests) call.write(r);
    call.end();
  });
}

async function listServices(client, version) {
  const responses = await reflect(client, version, [{ host: '', list_services: '' }]);
  check(responses.length === 1, `${version}: ${responses.length} responses to one request`);
  const r = responses[0];
  check(
    r.message_response === 'list_services_response',
    `${version}: not a list_services_response: ${JSON.stringify(r)}`,
  );
  return r.list_services_response.service.map((s) => s.name);
}

function unwrapFiles(version, responses) {
  const files = [];
  for (const r of responses) {
    if (r.message_response === 'error_response') {
      throw new Failure(`${version} reflection error: ${JSON.stringify(r.error_response)}`);
    }
    check(r.message_response === 'file_descriptor_response', `unexpected ${r.message_response}`);
    files.push(...r.file_descriptor_response.file_descriptor_proto);
  }
  return files;
}

// The package definition of `symbols` and everything their files import, all fetched from
// the server by reflection.
async function reflectedPackage(client, symbols) {
  const byName = new Map();
  const add = (fdps) => {
    for (const fdp of fdps) {
      const { name } = fileNameAndDeps(fdp);
      if (!byName.has(name)) byName.set(name, Buffer.from(fdp));
    }
  };
  add(unwrapFiles('v1', await reflect(client, 'v1', symbols.map((s) => ({ file_containing_symbol: s })))));
  for (let round = 0; round < 20; round++) {
    const missing = new Set();
    for (const fdp of byName.values()) {
      for (const dep of fileNameAndDeps(fdp).deps) if (!byName.has(dep)) missing.add(dep);
    }
    if (missing.size === 0) break;
    const requests = [...missing].map((f) => ({ file_by_filename: f }));
    add(unwrapFiles('v1', await reflect(client, 'v1', requests)));
  }
  // Dependencies before the files that import them.
  const ordered = [];
  const seen = new Set();
  const visit = (name) => {
    if (seen.has(name)) return;
    seen.add(name);
    const fdp = byName.get(name);
    check(fdp, `the server did not give the file ${name}`);
    for (const dep of fileNameAndDeps(fdp).deps) visit(dep);
    ordered.push(fdp);
  };
  for (const name of byName.keys()) visit(name);
  return {
    files: [...byName.keys()],
    pkg: protoLoader.loadFileDescriptorSetFromBuffer(fileDescriptorSet(ordered), LOADER_OPTIONS),
  };
}

// ---------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------

class Reflected {
  constructor(client, pkg) {
    this.client = client;
    this.pkg = pkg;
  }

  method(service, name) {
    const svc = this.pkg[service];
    check(svc && svc[name], `reflection gave no method ${service}/${name}`);
    return svc[name];
  }

  call(service, name, request) {
    const m = this.method(service, name);
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        m.path,
        m.requestSerialize,
        m.responseDeserialize,
        request,
        new grpc.Metadata(),
        { deadline: deadline() },
        (err, resp) => (err ? reject(err) : resolve(resp)),
      );
    });
  }

  // The error of a call that must fail.
  async fails(service, name, request) {
    let resp;
    try {
      resp = await this.call(service, name, request);
    } catch (err) {
      if (err instanceof Failure) throw err;
      return err;
    }
    throw new Failure(`${service}/${name} succeeded, expected an error: ${JSON.stringify(resp)}`);
  }
}

function expectError(err, code, reason, field) {
  const codeName = grpc.status[err.code];
  const { message, info } = errorInfo(err);
  const desc = `${codeName} ${JSON.stringify(message)} reason=${info.reason} domain=${info.domain} metadata=${JSON.stringify(info.metadata)}`;
  check(codeName === code, `expected ${code}/${reason}, got ${desc}`);
  check(info.reason === reason, `expected reason ${reason}, got ${desc}`);
  check(info.domain === DOMAIN, `expected domain ${DOMAIN}, got ${desc}`);
  check(message.trim() !== '', `empty message: ${desc}`);
  if (field !== undefined) check(info.metadata.field === field, `expected field ${field}: ${desc}`);
  return `${code}/${reason}`;
}

async function tour(r, suffix) {
  const V = 'keyorch.v1.VaultService';
  const KS = 'keyorch.v1.KeystoreService';
  const K = 'keyorch.v1.KeyService';
  const C = 'keyorch.v1.CryptoService';
  const errors = [];

  let err = await r.fails(V, 'CreateVault', { name: 'bad/name' });
  errors.push(expectError(err, 'INVALID_ARGUMENT', 'ValidationException', 'name'));

  const vault = await r.call(V, 'CreateVault', {
    name: `interop-${CLIENT}-${suffix}`,
    description: 'grpc-js interop',
  });
  check(vault.id, `vault without id: ${JSON.stringify(vault)}`);

  let ks = await r.call(KS, 'CreateKeystore', {
    vault_id: vault.id,
    name: 'hsm',
    type: 'KEYSTORE_TYPE_INTERNAL',
    connect: false,
    internal: {},
  });
  check(ks.config === 'internal', `not an internal keystore: ${JSON.stringify(ks)}`);
  ks = await r.call(KS, 'ConnectKeystore', { id: ks.id });
  check(ks.connection_state === 'CONNECTION_STATE_CONNECTED', `not CONNECTED: ${JSON.stringify(ks)}`);

  let key = await r.call(K, 'CreateKey', {
    vault_id: vault.id,
    name: 'card-data',
    algorithm: 'KEY_ALGORITHM_AES',
    key_size_bits: 256,
    target_keystore_ids: [ks.id],
    activate: false,
  });
  check(key.state === 'KEY_STATE_PRE_ACTIVE', `new key not PRE_ACTIVE: ${key.state}`);
  key = await r.call(K, 'ActivateKey', { id: key.id });
  check(key.state === 'KEY_STATE_ACTIVE', `key not ACTIVE: ${key.state}`);

  const plaintext = Buffer.from(`hello, HSM, from ${CLIENT}`);
  const aad = Buffer.from('order-42');
  const ct = (await r.call(C, 'Encrypt', { key_id: key.id, plaintext, aad })).ciphertext;
  // 12-byte IV || ciphertext || 16-byte tag
  check(ct.length === 12 + plaintext.length + 16, `ciphertext of ${ct.length} bytes`);
  let pt = (await r.call(C, 'Decrypt', { key_id: key.id, ciphertext: ct, aad })).plaintext;
  check(pt.equals(plaintext), `Decrypt gave ${JSON.stringify(pt.toString())}`);
  err = await r.fails(C, 'Decrypt', { key_id: key.id, ciphertext: ct, aad: Buffer.from('order-43') });
  errors.push(expectError(err, 'INVALID_ARGUMENT', 'InvalidCiphertextException'));

  // The emergency switch: a disconnected keystore cuts every use of its keys.
  await r.call(KS, 'DisconnectKeystore', { id: ks.id, force: true });
  err = await r.fails(C, 'Encrypt', { key_id: key.id, plaintext: Buffer.from('nope') });
  errors.push(expectError(err, 'FAILED_PRECONDITION', 'CustomKeyStoreInvalidStateException'));
  await r.call(KS, 'ConnectKeystore', { id: ks.id });
  pt = (await r.call(C, 'Decrypt', { key_id: key.id, ciphertext: ct, aad })).plaintext;
  check(pt.equals(plaintext), 'Decrypt after reconnecting did not round-trip');
  return { n: plaintext.length, errors };
}

async function main(argv) {
  const { client, transport } = openClient(argv);
  try {
    await new Promise((resolve, reject) =>
      client.waitForReady(deadline(), (e) => (e ? reject(e) : resolve())),
    );
    // Each reflection version lists every service: keyorch's, health and both reflection
    // versions.
    for (const version of ['v1', 'v1alpha']) {
      const names = await listServices(client, version);
      const missing = EXPECTED_SERVICES.filter((s) => !names.includes(s));
      check(
        missing.length === 0,
        `reflection ${version} does not list ${missing.join(', ')} (listed: ${names.join(', ')})`,
      );
      const extra = names.filter((s) => !EXPECTED_SERVICES.includes(s));
      check(extra.length === 0, `reflection ${version} lists unexpected services: ${extra.join(', ')}`);
    }
    const union = new Set(EXPECTED_SERVICES);

    const { pkg } = await reflectedPackage(client, USED_SERVICES);
    const r = new Reflected(client, pkg);
    for (const service of ['', 'keyorch.v1.CryptoService']) {
      const health = await r.call('grpc.health.v1.Health', 'Check', { service });
      check(health.status === 'SERVING', `health of ${JSON.stringify(service)}: ${health.status}`);
    }

    const { n, errors } = await tour(r, crypto.randomBytes(4).toString('hex'));
    console.log(
      `OK ${CLIENT} ${transport} services=${union.size} health=SERVING roundtrip=${n} errors=${errors.join(',')}`,
    );
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).catch((e) => {
  if (e instanceof Failure) {
    console.error(e.stack);
    console.error(`FAIL ${CLIENT}: ${e.message}`);
  } else if (e && e.code !== undefined && e.details !== undefined) {
    console.error(e.stack);
    console.error(`FAIL ${CLIENT}: RPC error ${grpc.status[e.code]}: ${e.details}`);
  } else {
    console.error(e && e.stack ? e.stack : e);
    console.error(`FAIL ${CLIENT}: ${e}`);
  }
  process.exit(1);
});
