// An Oblivious HTTP (RFC 9458) client that shares no code with conftrace:
// HPKE is hpke-js, Binary HTTP is bhttp-js, and the encapsulation around
// them is written here from RFC 9458 sections 3, 4.3 and 4.4.
//
//   node client.mjs BASE_URL REQUESTS.json
//
// REQUESTS.json: {"pad": N, "replay": I, "requests": [{"name", "method",
// "path", "content_type", "body" (base64)}]}. Every inner request is
// encoded by bhttp-js, padded with zeros to N bytes (RFC 9292 section 3.8),
// encapsulated to the gateway's X25519 / HKDF-SHA256 / AES-128-GCM key and
// posted to BASE_URL/v1/gateway; then request I's encapsulation is posted
// again, byte for byte. Prints one JSON object: per request the outer sizes
// (what anyone on the path sees) and the decapsulated inner answer.

import { webcrypto as crypto } from "node:crypto";
import { readFile } from "node:fs/promises";
import { Aes128Gcm, CipherSuite, HkdfSha256 } from "@hpke/core";
import { DhkemX25519HkdfSha256 } from "@hpke/dhkem-x25519";
import { BHttpDecoder, BHttpEncoder } from "bhttp-js";

const KEM_X25519 = 0x0020, KDF_SHA256 = 0x0001, AEAD_AES128GCM = 0x0001;
const NK = 16, NN = 12, NPK = 32, NENC = 32;
const te = new TextEncoder();

const [base, file] = process.argv.slice(2);
const spec = JSON.parse(await readFile(file, "utf8"));

// selectKey returns the first X25519 key configuration offering
// HKDF-SHA256 with AES-128-GCM from an application/ohttp-keys body.
function selectKey(b) {
  for (let p = 0; p + 2 <= b.length;) {
    const len = (b[p] << 8) | b[p + 1];
    const c = b.subarray(p + 2, p + 2 + len);
    p += 2 + len;
    const kem = (c[1] << 8) | c[2];
    if (kem !== KEM_X25519) continue;
    const pk = c.subarray(3, 3 + NPK);
    const suites = c.subarray(3 + NPK + 2);
    for (let s = 0; s + 4 <= suites.length; s += 4) {
      const kdf = (suites[s] << 8) | suites[s + 1];
      const aead = (suites[s + 2] << 8) | suites[s + 3];
      if (kdf === KDF_SHA256 && aead === AEAD_AES128GCM) return { id: c[0], pk };
    }
  }
  throw new Error("no X25519 / HKDF-SHA256 / AES-128-GCM key configuration");
}

async function hkdf(secret, salt, info, n) {
  const k = await crypto.subtle.importKey("raw", secret, "HKDF", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info: te.encode(info) }, k, n * 8);
  return new Uint8Array(bits);
}

const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes128Gcm() });
const keysResp = await fetch(base + "/v1/ohttp-keys");
if (!keysResp.ok) throw new Error(`ohttp-keys: ${keysResp.status}`);
const key = selectKey(new Uint8Array(await keysResp.arrayBuffer()));
const recipientPublicKey = await suite.kem.importKey("raw", key.pk, true);

// encapsulate seals an inner request (RFC 9458 section 4.3) and returns the
// encapsulated request with what opening the answer needs.
async function encapsulate(plain) {
  const hdr = new Uint8Array([key.id, KEM_X25519 >> 8, KEM_X25519 & 0xff, 0, KDF_SHA256, 0, AEAD_AES128GCM]);
  const info = new Uint8Array([...te.encode("message/bhttp request"), 0, ...hdr]);
  const sender = await suite.createSenderContext({ recipientPublicKey, info });
  const ct = new Uint8Array(await sender.seal(plain));
  const enc = new Uint8Array(sender.enc);
  const secret = new Uint8Array(await sender.export(te.encode("message/bhttp response"), Math.max(NN, NK)));
  return { body: new Uint8Array([...hdr, ...enc, ...ct]), enc, secret };
}

// decapsulate opens an encapsulated answer (RFC 9458 section 4.4).
async function decapsulate(req, answer) {
  const nonceLen = Math.max(NN, NK);
  const salt = new Uint8Array([...req.enc, ...answer.subarray(0, nonceLen)]);
  const key = await hkdf(req.secret, salt, "key", NK);
  const nonce = await hkdf(req.secret, salt, "nonce", NN);
  const k = await crypto.subtle.importKey("raw", key, "AES-GCM", false, ["decrypt"]);
  return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: nonce }, k, answer.subarray(nonceLen)));
}

async function post(req) {
  const r = await fetch(base + "/v1/gateway", { method: "POST", headers: { "content-type": "message/ohttp-req" }, body: req.body });
  const answer = new Uint8Array(await r.arrayBuffer());
  const out = { request_bytes: req.body.length, outer_status: r.status, answer_bytes: answer.length };
  if (r.status !== 200) return { ...out, outer_body: new TextDecoder().decode(answer) };
  const plain = await decapsulate(req, answer);
  const resp = new BHttpDecoder().decodeResponse(plain);
  const content = new Uint8Array(await resp.arrayBuffer());
  return { ...out, inner_bytes: plain.length, status: resp.status, content: Buffer.from(content).toString("base64") };
}

const encoder = new BHttpEncoder();
const sent = [];
const results = [];
for (const r of spec.requests) {
  const headers = { date: new Date().toUTCString() };
  if (r.content_type) headers["content-type"] = r.content_type;
  const body = r.body ? Buffer.from(r.body, "base64") : undefined;
  const inner = await encoder.encodeRequest(new Request("https://conftrace.invalid" + r.path, { method: r.method, headers, body }));
  if (inner.length > spec.pad) throw new Error(`${r.name}: ${inner.length} bytes do not fit the padding of ${spec.pad}`);
  const padded = new Uint8Array(spec.pad);
  padded.set(inner);
  const req = await encapsulate(padded);
  sent.push(req);
  results.push({ name: r.name, ...(await post(req)) });
}
const replay = await post(sent[spec.replay]);
process.stdout.write(JSON.stringify({ results, replay }) + "\n");
