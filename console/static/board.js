// The live board follows the API's push stream (Server-Sent Events; the session cookie
// signs it in): each reading updates its probe's row where it is shown, without a reload.
// An alarm or excursion event redraws the alarms and the places' cards from the page as the
// server draws it now, in place: a comment being typed and the focus are kept, and a busy
// site's events are taken together (one redraw a second at most).
"use strict";
(function () {
  const feed = document.getElementById("feed");
  const say = (state) => { if (feed) { feed.dataset.state = state; feed.textContent = feed.dataset[state] || state; } };
  function fmt(value, digits, unit) {
    return value === null || value === undefined ? "—" : Number(value).toFixed(digits) + " " + unit;
  }
  function local(ts) {
    const d = new Date(ts);
    const pad = (n) => String(n).padStart(2, "0");
    return pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  const labels = document.getElementById("labels");
  function age(ts) {
    const s = Math.max(0, (Date.now() - new Date(ts)) / 1000);
    if (s < 3600) return Math.floor(s / 60) + " " + labels.dataset.min;
    return (s / 3600).toFixed(1) + " " + labels.dataset.h;
  }
  function ages() {
    document.querySelectorAll("td.ts[data-ts]").forEach((cell) => {
      if (!cell.dataset.ts) return;
      let tag = cell.querySelector(".age");
      if (!tag) { tag = document.createElement("small"); tag.className = "age"; cell.append(" ", tag); }
      tag.textContent = age(cell.dataset.ts);
    });
  }
  function reading(r, again) {
    const row = document.querySelector('tr[data-sensor="' + CSS.escape(r.sensor) + '"]');
    if (!row) return;
    const shown = row.querySelector(".ts").dataset.ts;
    if (shown && new Date(shown) > new Date(r.ts)) return;  // an older reading, late
    if (again && shown && new Date(shown) >= new Date(r.ts)) return;  // the redraw has it
    row.querySelector(".t").textContent = r.status === "ok" ? fmt(r.temperature_c, 1, "°C") : "—";
    row.querySelector(".rh").textContent = fmt(r.humidity_pct, 0, "%");
    const ts = row.querySelector(".ts");
    ts.dataset.ts = r.ts;
    ts.textContent = local(r.ts);
    ages();
    if (again) return;
    row.classList.add("fresh");
    setTimeout(() => row.classList.remove("fresh"), 1500);
  }
  const latest = new Map();  // each sensor's newest pushed reading, laid again over a redraw
  const SECTIONS = ["alarms-section", "rooms-section", "vehicles-section"];
  let pending = null;
  let drawing = false;
  async function redraw() {
    pending = null;
    if (drawing) { later(); return; }
    drawing = true;
    try {
      const answer = await fetch(window.location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (!answer.ok || answer.redirected) { window.location.reload(); return; }
      const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
      const typed = new Map();
      document.querySelectorAll("#alarms-section input[name=comment]").forEach((i) => { if (i.value) typed.set(i.id, i.value); });
      const focused = document.activeElement && document.activeElement.id;
      for (const id of SECTIONS) {
        const now = document.getElementById(id);
        const next = fresh.getElementById(id);
        if (now && next) now.replaceWith(document.adoptNode(next));
      }
      typed.forEach((value, id) => { const i = document.getElementById(id); if (i) i.value = value; });
      if (focused) { const f = document.getElementById(focused); if (f) f.focus(); }
      latest.forEach((r) => reading(r, true));
      ages();
      const news = document.getElementById("board-news");
      const heading = document.getElementById("alarms-h");
      if (news && heading) news.textContent = heading.textContent.replace(/\s+/g, " ").trim();
    } catch (err) {
      window.location.reload();
    } finally {
      drawing = false;
    }
  }
  function later() { if (pending === null) pending = setTimeout(redraw, 1000); }
  ages();
  setInterval(ages, 10000);
  const source = new EventSource("/api/v1/stream?types=readings,alarm,excursion");
  source.addEventListener("ready", () => say("live"));
  source.addEventListener("readings", (e) => JSON.parse(e.data).readings.forEach((r) => {
    const kept = latest.get(r.sensor);
    if (!kept || new Date(kept.ts) <= new Date(r.ts)) latest.set(r.sensor, r);
    reading(r, false);
  }));
  source.addEventListener("alarm", later);
  source.addEventListener("excursion", later);
  source.addEventListener("reset", () => window.location.reload());
  for (const end of ["expired", "revoked", "lagged"]) {
    source.addEventListener(end, () => { source.close(); window.location.reload(); });
  }
  source.onerror = () => say("reconnecting");
})();
