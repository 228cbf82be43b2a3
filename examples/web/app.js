// Runs an edgerec bundle with onnxruntime-web, following the bundle's metadata.json contract:
// input_ids [1, max_len], the most recent item last, left-padded with 0; scores[j] is the item
// with model index j + 1 in items.json. Items already in the history are not recommended.

// A bundle file's bytes, refused unless they are the ones edgerec wrote: metadata.json records
// each file's size and sha256 (`integrity`). Catches a damaged or partial download.
async function checked(meta, name) {
  const want = (meta.integrity || {})[name];
  const bytes = await (await fetch("bundle/" + name)).arrayBuffer();
  const digest = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)),
                            (b) => b.toString(16).padStart(2, "0")).join("");
  if (!want || bytes.byteLength !== want.bytes || digest !== want.sha256) {
    throw new Error(name + " is not the file the bundle was built with");
  }
  return new Uint8Array(bytes);
}

(async () => {
  const status = document.getElementById("status");
  try {
    ort.env.wasm.numThreads = 1;          // threads need cross-origin isolation; one is plenty here
    ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;  // a relative path is not a module URL
    const meta = await fetch("bundle/metadata.json").then((r) => r.json());
    const [itemBytes, model] = await Promise.all([checked(meta, "items.json"), checked(meta, meta.files.onnx)]);
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
    status.textContent = "ready";
  } catch (error) {
    status.textContent = "error: " + error;
  }
})();
