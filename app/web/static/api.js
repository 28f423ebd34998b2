// The public /v1 API with the key kept in this tab's sessionStorage (sent as Authorization: Bearer).
const KEY = "distillery.key";

export const getKey = () => sessionStorage.getItem(KEY) || "";
export const setKey = (k) => (k ? sessionStorage.setItem(KEY, k) : sessionStorage.removeItem(KEY));

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

export function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  if (getKey()) h.Authorization = `Bearer ${getKey()}`;
  return h;
}

// JSON in and out; returns {data, etag, status}; throws ApiError on 4xx/5xx.
export async function call(method, path, { body, ifMatch, keepalive } = {}) {
  const h = headers(body !== undefined ? { "Content-Type": "application/json" } : {});
  if (ifMatch !== undefined) h["If-Match"] = `"${ifMatch}"`;
  const r = await fetch(path, { method, headers: h, keepalive: !!keepalive,
    body: body !== undefined ? JSON.stringify(body) : undefined });
  const text = await r.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch { data = text; } }
  if (!r.ok) throw new ApiError(r.status, data);
  const etag = r.headers.get("ETag");
  return { data, status: r.status, etag: etag ? Number(etag.replaceAll('"', "")) : null };
}

export const get = async (path) => (await call("GET", path)).data;
export const post = async (path, body) => (await call("POST", path, { body })).data;

// Server-Sent Events over fetch (EventSource cannot send a header). Calls onEvent({id, event, data});
// returns an AbortController. Reconnects with Last-Event-ID until the stream says "end" or is aborted.
export function sse(path, onEvent, { onEnd } = {}) {
  const ctl = new AbortController();
  let last = null;
  (async () => {
    while (!ctl.signal.aborted) {
      try {
        const h = headers({ Accept: "text/event-stream" });
        if (last !== null) h["Last-Event-ID"] = String(last);
        const r = await fetch(path, { headers: h, signal: ctl.signal });
        if (!r.ok) throw new ApiError(r.status, null);
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const frame = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            const ev = { id: null, event: "message", data: "" };
            for (const line of frame.split("\n")) {
              if (line.startsWith(":")) continue;
              const i = line.indexOf(":");
              const k = i < 0 ? line : line.slice(0, i);
              const v = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
              if (k === "id") ev.id = Number(v);
              else if (k === "event") ev.event = v;
              else if (k === "data") ev.data += v;
            }
            if (!ev.data) continue;
            if (ev.id !== null) last = ev.id;
            try { ev.data = JSON.parse(ev.data); } catch { /* keep text */ }
            if (ev.event === "end") { ctl.abort(); if (onEnd) onEnd(ev.data); return; }
            onEvent(ev);
          }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
        if (e instanceof ApiError && e.status < 500) return;
      }
      await new Promise((res) => setTimeout(res, 2000));
    }
  })();
  return ctl;
}

// Download an artifact (auth header needed, so not a plain link): fetch → blob → save.
export async function download(path, name) {
  const r = await fetch(path, { headers: headers({ Accept: "*/*" }) });
  if (!r.ok) throw new ApiError(r.status, null);
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
