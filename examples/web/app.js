// Runs an edgerec bundle with onnxruntime-web, following the bundle's metadata.json contract:
// input_ids [1, max_len], the most recent item last, left-padded with 0; scores[j] is the item
// with model index j + 1 in items.json. Items already in the history are not recommended.

const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
const base64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

// ECDSA-Sig-Value (DER: SEQUENCE { r INTEGER, s INTEGER }) -> r || s, 32 bytes each: the form
// WebCrypto's verify takes for P-256.
function rawSignature(der) {
  const out = new Uint8Array(64);
  let i = der[1] & 0x80 ? 2 + (der[1] & 0x7f) : 2;
  for (let k = 0; k < 2; k++) {
    if (der[i] !== 0x02) throw new Error("bundle.sig: not an ECDSA signature");
    let value = der.slice(i + 2, i + 2 + der[i + 1]);
    while (value.length > 32 && value[0] === 0) value = value.slice(1);
    out.set(value, 32 * k + 32 - value.length);
    i += 2 + der[i + 1];
  }
  return out;
}

// Signed bundles (`edgerec sign`): bundle.sig is OpenSSF model signing's Sigstore bundle, a DSSE
// envelope whose payload (an in-toto statement) lists every bundle file's sha256, signed with the
// publisher's ECDSA P-256 key. The public key comes with the app (key.js), never with the bundle:
// whoever could replace the bundle could replace a key shipped beside it. Returns {file: sha256}.
async function signedDigests(publicKeyPem) {
  const response = await fetch("bundle/bundle.sig");
  if (!response.ok) throw new Error("the bundle is not signed (no bundle.sig) and this app requires a signature");
  const envelope = (await response.json()).dsseEnvelope;
  const payload = base64(envelope.payload);
  const type = new TextEncoder().encode(envelope.payloadType);
  const head = new TextEncoder().encode(`DSSEv1 ${type.length} ${envelope.payloadType} ${payload.length} `);
  const signed = new Uint8Array(head.length + payload.length);  // DSSE's pre-authentication encoding
  signed.set(head);
  signed.set(payload, head.length);
  const spki = base64(publicKeyPem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""));
  const key = await crypto.subtle.importKey("spki", spki, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
  const valid = await crypto.subtle.verify(
    { name: "ECDSA", hash: "SHA-256" }, key, rawSignature(base64(envelope.signatures[0].sig)), signed);
  if (!valid) throw new Error("bundle.sig is not signed with this app's key");
  const statement = JSON.parse(new TextDecoder().decode(payload));
  return Object.fromEntries(statement.predicate.resources
    .filter((r) => r.algorithm === "sha256").map((r) => [r.name, r.digest]));
}

// A bundle file's bytes, refused unless they are the ones edgerec wrote: metadata.json records
// each file's size and sha256 (`integrity`; catches a damaged or partial download) and, for a
// signed bundle, the signed digests must name the file with the same sha256 (catches an attacker,
// who can rewrite metadata.json but not the signature).
async function checked(meta, name, signed) {
  const want = (meta.integrity || {})[name];
  const bytes = await (await fetch("bundle/" + name)).arrayBuffer();
  const digest = hex(await crypto.subtle.digest("SHA-256", bytes));
  if (signed && signed[name] !== digest) throw new Error(name + " is not the file the publisher signed");
  if (want ? bytes.byteLength !== want.bytes || digest !== want.sha256 : !signed) {
    throw new Error(name + " is not the file the bundle was built with");
  }
  return new Uint8Array(bytes);
}

// The release record of a signed bundle: its version may not go below the one this browser ran
// last (an old, genuinely signed bundle served again is a downgrade).
async function checkedRelease(signed) {
  const release = JSON.parse(new TextDecoder().decode(await checked({}, "release.json", signed)));
  const last = Number(localStorage.getItem("edgerec.version") || 0);
  if (release.version < last) throw new Error(`bundle version ${release.version} is older than ${last} (downgrade refused)`);
  localStorage.setItem("edgerec.version", String(release.version));
  return release;
}

(async () => {
  const status = document.getElementById("status");
  try {
    ort.env.wasm.numThreads = 1;          // threads need cross-origin isolation; one is plenty here
    ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;  // a relative path is not a module URL
    const publicKey = window.EDGEREC_PUBLIC_KEY || null;  // key.js
    const signed = publicKey ? await signedDigests(publicKey) : null;
    const metaBytes = signed ? await checked({}, "metadata.json", signed) : null;
    const meta = metaBytes ? JSON.parse(new TextDecoder().decode(metaBytes))
      : await fetch("bundle/metadata.json").then((r) => r.json());
    const release = signed ? await checkedRelease(signed) : null;
    const [itemBytes, model] = await Promise.all([
      checked(meta, "items.json", signed), checked(meta, meta.files.onnx, signed)]);
    const items = JSON.parse(new TextDecoder().decode(itemBytes));
    const session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
    const picked = [];                    // model indices, in the order ticked
    const catalogue = document.getElementById("catalogue");
    items.slice(0, 60).forEach((item, i) => {   // the most popular items: index i + 1
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.dataset.index = String(i + 1);
      box.addEventListener("change", () => {
        const index = i + 1;
        if (box.checked) picked.push(index); else picked.splice(picked.indexOf(index), 1);
      });
      label.append(box, " " + (item.title || item.id));
      catalogue.append(label);
    });
    const button = document.getElementById("recommend");
    button.addEventListener("click", async () => {
      const maxLen = meta.max_len;
      const recent = picked.slice(-maxLen);
      const ids = new BigInt64Array(maxLen);                      // 0 = padding, on the left
      recent.forEach((index, i) => { ids[maxLen - recent.length + i] = BigInt(index); });
      const dtype = meta.inputs.input_ids.dtype.onnx;
      const input = dtype === "int32"
        ? new ort.Tensor("int32", Int32Array.from(ids, Number), [1, maxLen])
        : new ort.Tensor("int64", ids, [1, maxLen]);
      const started = performance.now();
      const { scores } = await session.run({ input_ids: input });
      const ms = performance.now() - started;
      const seen = new Set(picked);
      const order = Array.from(scores.data.keys())
        .filter((j) => !seen.has(j + 1))
        .sort((a, b) => scores.data[b] - scores.data[a] || a - b)
        .slice(0, 10);
      const list = document.getElementById("results");
      list.replaceChildren(...order.map((j) => {
        const li = document.createElement("li");
        li.textContent = items[j].title || items[j].id;
        li.dataset.item = items[j].id;
        return li;
      }));
      status.textContent = `top 10 of ${meta.num_items} items in ${ms.toFixed(1)} ms`;
    });
    button.disabled = false;
    status.textContent = release ? `ready (signed bundle, version ${release.version})` : "ready";
  } catch (error) {
    status.textContent = "error: " + error;
  }
})();
