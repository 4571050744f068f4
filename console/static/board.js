// The live board follows the API's push stream (Server-Sent Events; the session cookie
// signs it in): each reading updates its probe's row where it is shown, without a reload.
// New alarms and excursions reload the page, which the server draws as it is now.
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
  function reading(r) {
    const row = document.querySelector('tr[data-sensor="' + CSS.escape(r.sensor) + '"]');
    if (!row) return;
    const shown = row.querySelector(".ts").dataset.ts;
    if (shown && new Date(shown) > new Date(r.ts)) return;  // an older reading, late
    row.querySelector(".t").textContent = r.status === "ok" ? fmt(r.temperature_c, 1, "°C") : "—";
    row.querySelector(".rh").textContent = fmt(r.humidity_pct, 0, "%");
    const ts = row.querySelector(".ts");
    ts.dataset.ts = r.ts;
    ts.textContent = local(r.ts);
    ages();
    row.classList.add("fresh");
    setTimeout(() => row.classList.remove("fresh"), 1500);
  }
  ages();
  setInterval(ages, 10000);
  const source = new EventSource("/api/v1/stream?types=readings,alarm,excursion");
  source.addEventListener("ready", () => say("live"));
  source.addEventListener("readings", (e) => JSON.parse(e.data).readings.forEach(reading));
  source.addEventListener("alarm", () => window.location.reload());
  source.addEventListener("excursion", () => window.location.reload());
  source.addEventListener("reset", () => window.location.reload());
  for (const end of ["expired", "revoked", "lagged"]) {
    source.addEventListener(end, () => { source.close(); window.location.reload(); });
  }
  source.onerror = () => say("reconnecting");
})();
